"""Model families: each folder finds its family, facts are parsed once at load, one runner path for all."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.engine import Engine, GenerationSettings, Token  # noqa: E402
from napari_radreport.modeling import (  # noqa: E402
    families,
    prompt_spec,
)
from napari_radreport.modeling.families import (  # noqa: E402
    ImageTextToTextFamily,
    RadReportFamily,
    family_for,
)
from napari_radreport.modeling.loading import LoadedModel, load_model  # noqa: E402

from tiny_models import with_prompt, write_tiny_gemma3, write_tiny_llava  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return write_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    return write_tiny_gemma3(tmp_path_factory.mktemp("models") / "tiny-gemma3")


@pytest.fixture(scope="module")
def abdomen(abdomen_nifti):
    return load_study(abdomen_nifti)


@pytest.fixture(scope="module")
def radiographs(shared_data):
    return load_study([shared_data / "xray" / "nih_00000001_000_cardiomegaly.png",
                       shared_data / "xray" / "nih_00027426_000_no_finding.png"])


def test_each_config_finds_its_family_and_the_catch_all_is_last():
    assert family_for({"model_type": "radreport"}) is RadReportFamily
    assert family_for({"model_type": "llava"}) is ImageTextToTextFamily
    assert family_for({"model_type": "bert"}) is None
    assert families.FAMILIES[-1] is ImageTextToTextFamily


@pytest.mark.parametrize("which", ["ours", "llava"])
def test_our_model_and_a_llava_model_run_through_the_same_runner_path(which, request, abdomen, radiographs):
    folder = request.getfixturevalue("tiny_ct_model" if which == "ours" else "tiny_llava")
    study, question = (abdomen, "Is there a nodule?") if which == "ours" else (radiographs, "w5 w6")
    engine = Engine()
    try:
        info = engine.load(folder)
        runner = engine.runner
        assert info.kind == runner.family.name == ("radreport" if which == "ours" else "image-text-to-text")
        events, settings = [], GenerationSettings(max_new_tokens=5)
        first = engine.ask(study, question, settings=settings, on_event=events.append)
        inputs = runner.loaded.inputs(study, question)
        reference = runner.model.generate(**inputs, max_new_tokens=5, do_sample=False)
        assert [e.token_id for e in events if isinstance(e, Token)] == reference[0, -5:].tolist()
        assert first.n_tokens == 5
        history = [(question, first.text)]
        follow = engine.ask(study, question, history=history, settings=GenerationSettings(max_new_tokens=3))
        full = len(runner.prompt(study, question, history)[0])
        assert follow.timings["prefill_tokens"] < full  # the image and the first turn came from the cache
        # ours: the image encoded apart, once (the feature cache); LLaVA: the processor's inputs as built
        assert runner.encodings == (1 if which == "ours" else 0)
    finally:
        engine.shutdown()


def test_a_new_family_needs_one_class_and_one_registration(tiny_llava, radiographs, monkeypatch):
    class RenamedLlava(ImageTextToTextFamily):
        name = "renamed-llava"

        @classmethod
        def matches(cls, config: dict) -> bool:
            return config.get("model_type") == "llava"

    monkeypatch.setattr(families, "FAMILIES", (RadReportFamily, RenamedLlava, ImageTextToTextFamily))
    engine = Engine()
    try:
        info = engine.load(tiny_llava)
        assert info.kind == "renamed-llava" and isinstance(engine.runner.family, RenamedLlava)
        assert engine.ask(radiographs, "w5 w6", settings=GenerationSettings(max_new_tokens=2)).n_tokens == 2
    finally:
        engine.shutdown()


def test_facts_are_parsed_once_at_load_never_per_call(tiny_ct_model, abdomen, monkeypatch, tmp_path):
    from napari_radreport.modeling.processor import Preprocess

    engine = Engine()  # guided reports and answers in words: every field of the spec is read
    engine.load(with_prompt(tiny_ct_model, tmp_path / "m", report_guidance="diagnosis", choice_answer="text"))
    loaded = engine.runner.loaded
    assert loaded.preprocess is loaded.preprocess and loaded.family is engine.runner.family

    def reparsed(*_args, **_kwargs):
        raise AssertionError("a model's config was parsed again after load")

    for name in ("task_prompts", "model_labels", "report_guidance", "choice_answer"):
        monkeypatch.setattr(prompt_spec, name, reparsed)
    monkeypatch.setattr(prompt_spec.PromptSpec, "parse", reparsed)
    monkeypatch.setattr(Preprocess, "from_recipe", reparsed)
    try:
        settings = GenerationSettings(max_new_tokens=2)
        engine.report(abdomen, settings=settings)
        engine.ask(abdomen, "Is there a nodule?", settings=settings)
        engine.choose(abdomen, "Where?", ["left lung", "right lung"])
        engine.diagnose(abdomen, prompt_spec.CT_RATE_LABELS[:2])
        assert loaded.n_images(abdomen) == 1 and loaded.pixel_values(abdomen).shape[0] == 1
    finally:
        engine.shutdown()


def test_a_bad_prompt_section_is_refused_at_load_with_the_field_named(tiny_ct_model, tmp_path):
    bad = with_prompt(tiny_ct_model, tmp_path / "bad-choice", choice_answer="word")
    with pytest.raises(ValueError, match="prompt.choice_answer must be letter or text, got 'word'"):
        load_model(bad)
    engine = Engine()
    with pytest.raises(ValueError, match="prompt.report_guidance must be none or diagnosis"):
        engine.load(with_prompt(tiny_ct_model, tmp_path / "bad-guide", report_guidance="labels"))
    with pytest.raises(ValueError, match="prompt.tasks has unknown task"):
        engine.load(with_prompt(tiny_ct_model, tmp_path / "bad-task", tasks={"summary": "Sum up."}))
    assert not engine.loaded
    good = with_prompt(tiny_ct_model, tmp_path / "good", choice_answer="text", labels=["Lung nodule"])
    assert engine.load(good).labels == ("Lung nodule",)
    assert engine.runner.family.prompt_spec.choice_answer == "text"
    engine.shutdown()


def test_a_model_built_in_memory_parses_its_family_as_a_loaded_one(tiny_ct_model):
    loaded = load_model(tiny_ct_model)
    family = RadReportFamily.from_model(loaded.model, loaded.tokenizer)  # what training does
    again = LoadedModel(loaded.model, family=family)
    assert again.family.prompt_spec == loaded.family.prompt_spec and again.preprocess == loaded.preprocess
    assert again.modality == "ct" and again.family.num_image_tokens == loaded.model.num_image_tokens


def test_the_volume_towers_a_config_is_read_by_are_the_configurations():
    from napari_radreport.modeling.configuration import VOLUME_VISION_TYPES
    from napari_radreport.modeling.families import VOLUME_TOWERS

    assert set(VOLUME_TOWERS) == set(VOLUME_VISION_TYPES)


def test_the_catch_all_builds_a_gemma3s_token_type_ids_for_whichever_ids_run(tiny_gemma, radiographs,
                                                                             monkeypatch):
    """A Gemma 3 through the catch-all (not MedGemmaFamily): diagnosis runs the questions' shared prefix once
    (image included), then each question's tail after it; the prefix gets token_type_ids of its own length,
    not those the processor built for the first whole prompt, and a prefix plus any suffix gets them too."""
    from transformers import Gemma3ForConditionalGeneration

    from napari_radreport.engine.prompts import diagnosis_prompt
    from napari_radreport.modeling.checkpoints import CheckpointError

    monkeypatch.setattr(families, "FAMILIES", (RadReportFamily, ImageTextToTextFamily))
    reference = Gemma3ForConditionalGeneration.from_pretrained(str(tiny_gemma)).eval()
    engine = Engine()
    try:
        info = engine.load(tiny_gemma, device="cpu")
        runner, seen = engine.runner, []
        family = runner.family
        assert type(family) is ImageTextToTextFamily
        questions = [diagnosis_prompt(family.prompt_spec.tasks, label) for label in info.labels[:3]]

        def record(_module, _args, kwargs):
            if kwargs.get("token_type_ids") is not None:
                seen.append((kwargs["input_ids"].shape, kwargs["token_type_ids"].shape))

        hook = runner.model.register_forward_pre_hook(record, with_kwargs=True)
        try:
            rows = engine.call(lambda: runner.next_token_logprobs(radiographs, questions))
        finally:
            hook.remove()
        assert len(seen) == 1 and seen[0][0] == seen[0][1]  # the shared prefix, with its image
        for question, ours in zip(questions, rows):  # each question run whole by transformers
            with torch.no_grad():
                logits = reference(**family.model_inputs(radiographs, question)).logits[0, -1]
            torch.testing.assert_close(ours, torch.log_softmax(logits.float(), -1), atol=1e-6, rtol=0)

        ids, extra = runner.prompt(radiographs, questions[0])
        given = family.model_inputs(radiographs, questions[0])["token_type_ids"]  # the processor's
        assert "token_type_ids" not in extra and int(given.sum()) > 0  # 1 at the image's tokens
        assert torch.equal(family.token_inputs(ids)["token_type_ids"], given)
        end = ids.index(family.image_token_id) + 2  # a prefix ending inside the image, then a text suffix
        suffix = family.tokenizer("Yes", add_special_tokens=False)["input_ids"]
        assert family.token_inputs(ids[:end] + suffix)["token_type_ids"].tolist() == [
            given[0, :end].tolist() + [0] * len(suffix)]
        family.token_types = {"token_type_ids": False}  # a rule that is not this processor's: refused
        with pytest.raises(CheckpointError, match="per-token ids \\(token_type_ids\\)"):
            runner.prompt(radiographs, questions[0])
    finally:
        engine.shutdown()
