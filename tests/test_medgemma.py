"""MedGemma (Gemma 3): a tiny random Gemma 3 with an offline tokenizer, checked against transformers driving
the same model on Google's recipes (the CT notebook's slices, windows and inline images; a radiograph's own
pixels)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.engine import Engine, GenerationSettings, SectionStarted, Token  # noqa: E402
from napari_radreport.engine.engine import cannot_read  # noqa: E402
from napari_radreport.engine.prompts import choice_prompt, diagnosis_prompt  # noqa: E402
from napari_radreport.io.study import ImageData, Study  # noqa: E402
from napari_radreport.modeling import families  # noqa: E402
from napari_radreport.modeling.families import (  # noqa: E402
    ImageTextToTextFamily,
    RadReportFamily,
    declared_scope,
    family_for,
)
from napari_radreport.modeling.medgemma import (  # noqa: E402
    MedGemmaFamily,
    MedGemmaPreprocess,
    ct_slice_images,
    sample_slices,
    window_slices,
    with_prior,
)
from napari_radreport.modeling.processor import own_pixels  # noqa: E402
from napari_radreport.modeling.scope import modality_mismatch  # noqa: E402

from tiny_models import write_tiny_gemma3  # noqa: E402

WINDOWS = [(-1024, 1024), (-135, 215), (0, 80)]  # the notebook's window_clips
INSTRUCTION = MedGemmaPreprocess().ct_instruction


def _copy(folder, target, **sections):
    """A copy of a model folder whose config.json has ``sections`` (preprocess, prompt, scope)."""
    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **sections}))
    return target


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return write_tiny_gemma3(tmp_path_factory.mktemp("models") / "tiny-gemma3")


@pytest.fixture(scope="module")
def capped(gemma, tmp_path_factory):
    """The same model reading at most 5 CT slices (a recipe's ``preprocess.max_slices``)."""
    return _copy(gemma, tmp_path_factory.mktemp("models") / "capped", preprocess={"max_slices": 5})


@pytest.fixture(scope="module")
def reference(gemma):
    """transformers' own model and processor on the folder, driven as Google's notebooks drive MedGemma."""
    from transformers import AutoProcessor, Gemma3ForConditionalGeneration

    model = Gemma3ForConditionalGeneration.from_pretrained(str(gemma)).eval()
    return model, AutoProcessor.from_pretrained(str(gemma))


@pytest.fixture(scope="module")
def chest(chest_study):
    return chest_study


@pytest.fixture(scope="module")
def abdomen(abdomen_nifti):
    return load_study(abdomen_nifti)


@pytest.fixture(scope="module")
def png(shared_data):
    return shared_data / "xray" / "nih_00000001_000_cardiomegaly.png"


def _engine(folder):
    engine = Engine()
    engine.load(folder, device="cpu")
    return engine


def notebook_ct_content(volume: np.ndarray, question: str, max_slice: int = 85) -> list[dict]:
    """The user turn of Google's high_dimensional_ct_hugging_face notebook, written out here from its cells:
    at most ``max_slice`` slices (instances[round(i / MAX_SLICE * (n - 1))], i = 1..MAX_SLICE), each windowed
    three ways into float32 0..255, rounded to uint8, saved as JPEG and sent inline as a data URL, followed by
    "SLICE n"; the instruction first, the question last."""
    from PIL import Image

    slices = list(volume)
    if len(slices) > max_slice:
        slices = [slices[int(round(i / max_slice * (len(slices) - 1)))] for i in range(1, max_slice + 1)]
    content = [{"type": "text", "text": INSTRUCTION}]
    for number, hu in enumerate(slices, 1):
        channels = []
        for low, high in WINDOWS:
            value = np.clip(hu, low, high).astype(np.float32)
            value -= low
            value /= high - low
            value *= 255.0
            channels.append(value)
        picture = np.round(np.stack(channels, axis=-1), 0).astype(np.uint8)
        with io.BytesIO() as buffer:
            Image.fromarray(picture).save(buffer, format="jpeg")
            data = base64.b64encode(buffer.getbuffer()).decode("utf-8")
        content += [{"type": "image", "image": f"data:image/jpeg;base64,{data}"},
                    {"type": "text", "text": f"SLICE {number}"}]
    return content + [{"type": "text", "text": question}]


def _reference_inputs(processor, content: list[dict]) -> dict:
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True, return_tensors="pt")


def _ours_against_transformers(engine, reference, study, question, reference_content, n=6):
    """Our prompt, first-step logits and greedy ids against transformers' processor + model on one chat."""
    model, processor = reference
    runner = engine.runner
    expected = _reference_inputs(processor, reference_content)
    ids, extra = runner.prompt(study, question)
    assert ids == expected["input_ids"][0].tolist()
    assert torch.equal(runner.family.pixel_values(study), expected["pixel_values"])
    ours = engine.call(lambda: runner.prefill(study, ids, extra)[0][0])
    with torch.no_grad():
        theirs = model(**expected).logits[0, -1]
    # measured within 1e-7 on these prompts; dropping the image tokens' two-way attention (token_type_ids)
    # moves the 64-slice chest prompt's last logits by 2e-6
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    events = []
    engine.ask(study, question, settings=GenerationSettings(max_new_tokens=n), on_event=events.append)
    suppressed = list(runner._suppressed(runner._eos_ids()))
    with torch.no_grad():
        out = model.generate(**expected, max_new_tokens=n, do_sample=False, suppress_tokens=suppressed)
    assert [e.token_id for e in events if isinstance(e, Token)] == out[0, len(ids):].tolist()


# -- which family, what it reads -----------------------------------------------------------------------------
def test_a_gemma3_folder_is_medgemma_and_its_scope_is_read_from_config_alone(gemma, tmp_path, chest, png):
    assert family_for({"model_type": "gemma3"}) is MedGemmaFamily
    order = (RadReportFamily, MedGemmaFamily, ImageTextToTextFamily)
    assert order == families.FAMILIES
    bare = tmp_path / "bare"  # config.json only: no weights, no tokenizer
    bare.mkdir()
    shutil.copy(gemma / "config.json", bare / "config.json")
    scope = declared_scope(bare)
    assert scope.modalities == ("ct", "xray") and not scope.declared
    assert modality_mismatch(scope, chest) == "" and modality_mismatch(scope, load_study(png)) == ""
    assert cannot_read(bare, chest) == "" and cannot_read(bare, load_study(png)) == ""
    config = json.loads((bare / "config.json").read_text())
    (bare / "config.json").write_text(json.dumps({**config, "scope": {"modalities": ["xray"]}}))
    assert declared_scope(bare).modalities == ("xray",)
    assert "reads chest radiographs" in cannot_read(bare, chest) and cannot_read(bare, load_study(png)) == ""
    probe = ("import json, sys\nfrom pathlib import Path\nfrom napari_radreport.modeling.families import "
             f"declared_scope\nprint(declared_scope(Path({str(bare)!r})).modalities, "
             "[m for m in ('torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "('xray',) []", out.stderr


def test_the_loaded_family_reads_both_kinds_and_a_scope_section_narrows_it(gemma, tmp_path, chest, abdomen,
                                                                            png):
    from napari_radreport.modeling.loading import load_model

    loaded = load_model(gemma)
    family = loaded.family
    assert loaded.kind == "medgemma" and loaded.modality == "ct+xray"
    assert family.scope.modalities == ("ct", "xray")
    labels = family.prompt_spec.labels  # CT-RATE's 18, then CheXpert's not already among them
    assert labels[:3] == ("Medical material", "Arterial wall calcification", "Cardiomegaly")
    assert len(labels) == 27 and labels[18] == "No Finding" and "Pleural Effusion" not in labels
    assert family.n_images(chest) == 64 and family.n_images(load_study(png)) == 1
    assert family.n_images(abdomen) == 85  # 112 slices: the recipe's 85
    narrowed = load_model(_copy(gemma, tmp_path / "ct-only", scope={"modalities": ["ct"]}))
    assert narrowed.modality == "ct" and len(narrowed.family.prompt_spec.labels) == 18
    with pytest.raises(ValueError, match="reads CT volumes; the study is a xray_set"):
        narrowed.family.build_prompt(load_study(png), "q")
    with pytest.raises(ValueError, match="preprocess has unknown field"):
        load_model(_copy(gemma, tmp_path / "bad", preprocess={"slices": 3}))


def test_the_recipe_holds_the_familys_defaults_and_a_valid_scope():
    from napari_radreport.modeling.recipes import MODELS_DIR
    from napari_radreport.modeling.scope import ModelScope

    recipe = json.loads((MODELS_DIR / "medgemma-1.5-4b" / "recipe.json").read_text())
    assert recipe["family"] == MedGemmaFamily.name
    # the card's values are the code's defaults: a folder as downloaded reads studies as the card says
    assert MedGemmaPreprocess.parse(recipe["preprocess"]) == MedGemmaPreprocess()
    assert MedGemmaPreprocess().max_slices == 85
    scope = ModelScope.parse(recipe["scope"], "ct")
    assert scope.modalities == ("ct", "xray") and scope.training_data and scope.intended_use


# -- Google's CT recipe --------------------------------------------------------------------------------------
def test_the_slice_rule_is_the_notebooks():
    assert sample_slices(10, 4) == [2, 4, 7, 9]  # round(4.5) == 4: Python's round, as the notebook's
    assert sample_slices(64) == list(range(64)) and sample_slices(85) == list(range(85))
    picked = sample_slices(200)
    assert len(picked) == 85 and picked[0] == 2 and picked[-1] == 199 and picked == sorted(set(picked))


def test_three_windows_on_known_hounsfield_units():
    hu = np.array([[[-2000, -1024, -135, 0, 40, 80, 215, 1024, 3000]]], dtype=np.int16)
    rgb = window_slices(hu)[0, 0]
    assert rgb[:, 0].tolist() == [0, 0, 111, 128, 132, 137, 154, 255, 255]  # -1024..1024 (127.5 -> 128)
    assert rgb[:, 1].tolist() == [0, 0, 0, 98, 128, 157, 255, 255, 255]  # -135..215
    assert rgb[:, 2].tolist() == [0, 0, 0, 0, 128, 255, 255, 255, 255]  # 0..80


def test_a_synthetic_volume_gives_the_sampled_slices_superior_first():
    depth = 100
    volume = np.repeat(np.linspace(-1000, 1000, depth, dtype=np.float32)[:, None, None], 4, axis=1)
    volume = np.repeat(volume, 6, axis=2)  # slice k holds one HU value, rising from the first slice
    study = Study(kind="ct", images=[ImageData(array=volume, spacing=(1.0, 1.0, 1.0), modality="CT")])
    prep = MedGemmaPreprocess(slice_format="png")  # lossless, so each picture can be compared exactly
    pictures = [np.asarray(p) for p in ct_slice_images(study, prep)]
    assert len(pictures) == 85 and pictures[0].shape == (4, 6, 3)
    for i, picture in enumerate(pictures, 1):  # SLICE i is slice round(i / 85 * 99) of the study
        assert (picture == window_slices(volume[None, int(round(i / 85 * (depth - 1)))])[0]).all()
    assert pictures[0][0, 0, 0] < pictures[-1][0, 0, 0]  # SLICE 1 is the study's first (most superior) slice
    jpeg = np.asarray(ct_slice_images(study, MedGemmaPreprocess())[40], dtype=int)  # the notebook's default
    assert np.abs(jpeg - pictures[40]).max() <= 8


@pytest.mark.parametrize("which", ["chest", "abdomen"])
def test_a_ct_prompt_gives_what_transformers_gives_on_the_notebooks_chat(which, gemma, capped, reference,
                                                                         request):
    study = request.getfixturevalue(which)
    folder, cap = (gemma, 85) if which == "chest" else (capped, 5)  # 64 slices, all kept; 112, five of them
    question = "Write the findings section of a radiology report for this image."
    engine = _engine(folder)
    try:
        assert engine.runner.family.n_images(study) == min(cap, study.array.shape[0])
        _ours_against_transformers(engine, reference, study, question,
                                   notebook_ct_content(study.array, question, cap))
    finally:
        engine.shutdown()


# -- radiographs ---------------------------------------------------------------------------------------------
def test_a_radiograph_prompt_gives_what_transformers_gives_on_the_model_cards_chat(gemma, reference, png):
    from PIL import Image

    question = "Describe this X-ray"
    engine = _engine(gemma)
    try:
        content = [{"type": "image", "image": Image.open(png)}, {"type": "text", "text": question}]
        _ours_against_transformers(engine, reference, load_study(png), question, content)
    finally:
        engine.shutdown()


def test_a_prompt_starts_with_exactly_one_bos(gemma, png, chest):
    from napari_radreport.modeling.loading import load_model

    loaded = load_model(gemma)
    bos = loaded.tokenizer.bos_token_id
    for study in (load_study(png), chest):
        ids = loaded.prompt_ids(study, "Describe")[0].tolist()
        assert ids[0] == bos and ids.count(bos) == 1
        assert loaded.tokenizer.convert_ids_to_tokens(ids[:2]) == ["<bos>", "<start_of_turn>"]
    generic, _ = ImageTextToTextFamily.load(gemma, {"local_files_only": True})[1:]  # the catch-all's own path
    generic_ids = generic.model_inputs(load_study(png), "Describe")["input_ids"][0].tolist()
    assert generic_ids[0] == bos and generic_ids.count(bos) == 1


def test_a_radiograph_goes_to_the_processor_as_its_files_own_pixels(gemma, reference, png):
    from PIL import Image

    from napari_radreport.modeling.loading import load_model
    from napari_radreport.modeling.processor import _unit_range, stitched_picture

    _, processor = reference
    study = load_study(png)
    own = processor(images=[[Image.open(png).convert("RGB")]], text=["<start_of_image>"],
                    return_tensors="pt")["pixel_values"]
    assert torch.equal(load_model(gemma).family.pixel_values(study), own)
    assert (np.asarray(stitched_picture(study))[..., 0] == np.asarray(Image.open(png).convert("L"))).all()
    rewindowed = (_unit_range(study.image) * 255).round().to(torch.uint8).numpy()
    rewindowed = Image.fromarray(rewindowed).convert("RGB")
    old = processor(images=[[rewindowed]], text=["<start_of_image>"], return_tensors="pt")["pixel_values"]
    assert (old - own).abs().max() > 0.05  # what re-windowing the radiograph used to do to its pixel values


def test_a_radiograph_may_be_padded_to_a_square_centred(cr_monochrome1):
    from napari_radreport.modeling.medgemma import pad_to_square, radiograph_image

    padded = pad_to_square(np.ones((2, 5), dtype=np.uint8))
    assert padded.shape == (5, 5) and padded[:, 0].tolist() == [0, 1, 1, 0, 0]
    image = load_study(cr_monochrome1).image  # 1955 x 1841
    picture = np.asarray(radiograph_image(image, MedGemmaPreprocess(pad_to_square=True)))
    assert picture.shape == (1955, 1955, 3) and (picture[:, 57:1898, 0] == own_pixels(image)).all()
    assert not picture[:, :57].any() and not picture[:, 1898:].any()


def test_a_dicom_radiograph_is_its_files_own_window_as_googles_dicom_reader_applies_it(cr_monochrome1):
    import pydicom

    ds = pydicom.dcmread(cr_monochrome1)
    raw = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    low, high = centre - width // 2, centre + width // 2
    google = np.round(np.interp(raw.clip(low, high), (low, high), (0, 255)), 0).astype(np.uint8)
    google = 255 - google  # MONOCHROME1: inverted after windowing
    ours = own_pixels(load_study(cr_monochrome1).image)
    assert ours.shape == google.shape and np.abs(ours.astype(int) - google).max() <= 1  # rounding ties apart
    assert (ours == google).mean() > 0.99


def test_a_prior_radiograph_comes_first_for_a_longitudinal_comparison(gemma, reference, shared_data):
    from PIL import Image

    model, processor = reference
    prior_file = shared_data / "xray" / "nih_00027426_000_no_finding.png"
    current_file = shared_data / "xray" / "nih_00000001_000_cardiomegaly.png"
    current = load_study(current_file)
    paired = with_prior(current, load_study(prior_file))
    assert paired.key != current.key and paired.images == current.images
    prep, question = MedGemmaPreprocess(), "Compare the current radiograph with the prior one."
    content = [{"type": "text", "text": prep.prior_label}, {"type": "image", "image": Image.open(prior_file)},
               {"type": "text", "text": prep.current_label},
               {"type": "image", "image": Image.open(current_file)}, {"type": "text", "text": question}]
    engine = _engine(gemma)
    try:
        assert engine.runner.family.n_images(paired) == 2
        _ours_against_transformers(engine, reference, paired, question, content, n=3)
    finally:
        engine.shutdown()
    with pytest.raises(ValueError, match="the prior study is a ct"):
        with_prior(current, load_study(shared_data / "ct" / "totalseg_abdomen_pelvis.nii.gz"))


# -- the engine's tasks --------------------------------------------------------------------------------------
def test_diagnosis_encodes_the_images_once_for_all_labels_and_matches_separate_passes(capped, reference,
                                                                                      abdomen):
    model, processor = reference
    engine = _engine(capped)
    calls = []
    hook = engine.runner.model.model.vision_tower.register_forward_pre_hook(lambda *a: calls.append(1))
    labels = list(engine.info.labels[:4])
    try:
        found = engine.diagnose(abdomen, labels)
        assert len(calls) == 1 and engine.runner.encodings == 1  # one image encoding for four labels
        engine.diagnose(abdomen, labels[:2])
        assert len(calls) == 1  # and none for the next request on the same study
        yes, no = engine._variants("Yes"), engine._variants("No")
        questions = [diagnosis_prompt(engine.runner.family.prompt_spec.tasks, label) for label in labels]
        rows = engine.call(lambda: engine.runner.next_token_logprobs(abdomen, questions))
        for label, question, ours in zip(labels, questions, rows):  # each question run whole by transformers
            inputs = _reference_inputs(processor, notebook_ct_content(abdomen.array, question, 5))
            with torch.no_grad():
                row = torch.log_softmax(model(**inputs).logits[0, -1].float(), dim=-1)
            torch.testing.assert_close(ours, row, atol=1e-6, rtol=0)
            p_yes, p_no = row[yes].logsumexp(0).exp(), row[no].logsumexp(0).exp()
            assert found[label] == pytest.approx(float(p_yes / (p_yes + p_no)), abs=1e-6)
    finally:
        hook.remove()
        engine.shutdown()


def test_multiple_choice_reads_the_letters_after_the_shared_prompt(capped, reference, abdomen):
    engine = _engine(capped)
    try:
        question, options = "Where is the largest organ?", ["liver", "spleen", "kidney"]
        choice = engine.choose(abdomen, question, options)
        text = choice_prompt(engine.runner.family.prompt_spec.tasks, question, options)
        inputs = _reference_inputs(reference[1], notebook_ct_content(abdomen.array, text, 5))
        with torch.no_grad():
            row = torch.log_softmax(reference[0](**inputs).logits[0, -1], -1)
        ours = engine.call(lambda: engine.runner.next_token_logprobs(abdomen, [text])[0])
        torch.testing.assert_close(ours, row, atol=1e-6, rtol=0)
        mass = {letter: float(row[engine._variants(letter)].logsumexp(0).exp()) for letter in "ABC"}
        for letter, p in choice.probabilities.items():
            assert p == pytest.approx(mass[letter] / sum(mass.values()), abs=1e-6)
    finally:
        engine.shutdown()


def test_stop_ends_the_answer_before_the_next_token(gemma, png):
    engine = _engine(gemma)
    stop = threading.Event()

    def on_event(event):
        if isinstance(event, Token) and event.count == 2:
            stop.set()

    try:
        done = engine.ask(load_study(png), "Describe this X-ray",
                          settings=GenerationSettings(max_new_tokens=50), on_event=on_event, stop=stop)
        assert done.stop_reason == "stopped" and done.n_tokens == 2
    finally:
        engine.shutdown()


def test_a_ct_report_streams_per_region_section(capped, abdomen):
    engine = _engine(capped)
    events = []
    try:
        report = engine.report(abdomen, regions=["chest", "abdomen"],
                               settings=GenerationSettings(max_new_tokens=3), on_event=events.append)
    finally:
        engine.shutdown()
    titles = [e.title for e in events if isinstance(e, SectionStarted)]
    assert titles == ["Findings (chest)", "Findings (abdomen)", "Impression"]
    assert [title for title, _ in report.sections] == titles
    assert sum(isinstance(e, Token) for e in events) >= 3  # streamed, section by section
    streamed = "".join(e.heading if isinstance(e, SectionStarted) else e.text for e in events
                       if isinstance(e, (SectionStarted, Token)))
    # random weights write stray byte tokens: a section cut inside a multi-byte character drops it, as the
    # stream held it back (engine/decoding.py TextStream), so the report is exactly what streamed
    assert report.text == streamed


def test_a_follow_up_past_the_sliding_window_starts_again_and_answers_as_from_scratch(tmp_path, png):
    folder = write_tiny_gemma3(tmp_path / "short-window", sliding_window=16)
    study, settings = load_study(png), GenerationSettings(max_new_tokens=4)
    engine = _engine(folder)
    try:
        engine.ask(study, "Describe this X-ray", settings=settings)  # its cache has run past the window
        again = engine.ask(study, "Is the heart enlarged?", settings=settings)
        full = len(engine.runner.prompt(study, "Is the heart enlarged?")[0])
        assert again.timings["prefill_tokens"] == full
        assert engine.runner.encodings == 1  # started again from the cached image features
    finally:
        engine.shutdown()
    fresh = _engine(folder)
    try:
        assert fresh.ask(study, "Is the heart enlarged?", settings=settings).token_ids == again.token_ids
    finally:
        fresh.shutdown()


def test_a_model_of_ct_and_radiographs_asks_about_the_kind_of_study_on_screen(capped, abdomen, png,
                                                                              monkeypatch):
    """Its report request names a CT scan for a CT and a chest radiograph for radiographs ("this image"
    before)."""
    from napari_radreport.engine import prompts

    asked = []
    original = prompts.section_prompt
    def spy(*args, **kwargs):  # the real function, its answers kept
        asked.append(original(*args, **kwargs))
        return asked[-1]

    monkeypatch.setattr(prompts, "section_prompt", spy)
    engine = _engine(capped)
    try:
        for study in (abdomen, load_study(png)):
            engine.report(study, sections=("impression",), settings=GenerationSettings(max_new_tokens=1))
    finally:
        engine.shutdown()
    assert len(asked) == 2 and "CT scan" in asked[0] and "chest radiograph" in asked[1]


def _radiograph_of(source, target, patient_id: str):
    """A copy of a DICOM radiograph whose PatientID is ``patient_id``."""
    import pydicom

    ds = pydicom.dcmread(source)
    ds.PatientID = patient_id
    ds.save_as(target)
    return target


def test_a_prior_must_be_the_same_patients_and_a_model_without_priors_refuses_it(cr_monochrome1, tmp_path,
                                                                                 tiny_xray_model, capsys):
    from napari_radreport.cli import main
    from napari_radreport.engine import EngineError
    from napari_radreport.io.study import MixedPatients

    current = load_study(_radiograph_of(cr_monochrome1, tmp_path / "now.dcm", "P1"))
    same = load_study(_radiograph_of(cr_monochrome1, tmp_path / "before.dcm", "P1"))
    other = load_study(_radiograph_of(cr_monochrome1, tmp_path / "other.dcm", "P2"))
    with pytest.raises(MixedPatients, match="the study and its prior: the files come from 2 patients"):
        with_prior(current, other)
    paired = with_prior(current, same)
    engine = _engine(tiny_xray_model)  # our own family: it reads no prior
    try:
        with pytest.raises(EngineError, match="does not compare a study with a prior one"):
            engine.ask(paired, "Has the effusion changed?", settings=GenerationSettings(max_new_tokens=2))
    finally:
        engine.shutdown()
    question = ["ask", str(tmp_path / "now.dcm"), "Has it changed?", "--model", str(tiny_xray_model)]
    assert main([*question, "--prior", str(tmp_path / "other.dcm")]) == 1
    assert "the study and its prior: the files come from 2 patients" in capsys.readouterr().err
    assert main([*question, "--prior", str(tmp_path / "before.dcm")]) == 1
    assert "does not compare a study with a prior one" in capsys.readouterr().err


def test_radreport_ask_takes_a_prior_for_medgemma(gemma, cr_monochrome1, tmp_path, capsys):
    from napari_radreport.cli import main

    now = _radiograph_of(cr_monochrome1, tmp_path / "now.dcm", "P1")
    before = _radiograph_of(cr_monochrome1, tmp_path / "before.dcm", "P1")
    assert main(["ask", str(now), "Has it changed?", "--model", str(gemma), "--prior", str(before),
                 "--max-new-tokens", "2", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["token_ids"]) <= 2 and answer["scope"]["in_scope"] is not None
