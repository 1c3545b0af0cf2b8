"""CT-CHAT: tiny checkpoints in its released layout, converted, and checked against its code's equations
(tests/ct_chat_reference.py), and against its code itself where a copy is at hand (RADREPORT_CT_CHAT_CODE)."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")

import ct_chat_reference as ref  # noqa: E402

from napari_radreport.modeling.checkpoints import CheckpointError  # noqa: E402
from napari_radreport.modeling.ct_chat import (  # noqa: E402
    TASK_TOKENS,
    convert_ct_chat,
    find_parts,
    is_ct_chat_source,
)

QUESTION = "Write the findings of the radiology report for this chest CT volume."
SUFFIX = " <report_generation>"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CT-CHAT source folder and its conversion."""
    root = tmp_path_factory.mktemp("ct-chat")
    parts = ref.write_tiny_ct_chat(root / "src")
    with pytest.warns(UserWarning, match="pickle"):
        out = convert_ct_chat(root / "src", root / "out", allow_pickle=True, geometry=ref.TINY_GEOMETRY)
    return {**parts, "src": root / "src", "out": out, "root": root}


def _model(folder):
    from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

    return RadReportForConditionalGeneration.from_pretrained(str(folder)).eval()


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _our_ids(tokenizer, model, question: str, history=()) -> list[int]:
    from napari_radreport.modeling.processor import prompt_ids

    return prompt_ids(tokenizer, question, image_token=model.config.image_token,
                      num_image_tokens=model.num_image_tokens, chat_template=True,
                      history=history)[0].tolist()


def _expand(ids: list[int], image_id: int, n: int) -> list[int]:
    at = ids.index(ref.IMAGE_TOKEN_INDEX)
    return ids[:at] + [image_id] * n + ids[at + 1:]


def test_the_parts_are_found_by_what_they_hold(tiny, tmp_path):
    parts = find_parts(tiny["src"])
    assert parts.encoder.name == "clip_visual_encoder.pth" and parts.lora == tiny["lora"]
    assert parts.base == tiny["base"] and parts.conversation.name == "conversation.py"
    assert is_ct_chat_source(tiny["src"]) and not is_ct_chat_source(tiny["base"])
    # beside a whole CT-CLIP checkpoint, the encoder-only file is the one taken; two CT-CLIPs are ambiguous
    src = tmp_path / "src"
    shutil.copytree(tiny["src"], src, symlinks=True)
    (src / "encoder" / "CT-CLIP_v2.pt").write_bytes(b"")
    assert find_parts(src).encoder.name == "clip_visual_encoder.pth"
    (src / "encoder" / "clip_visual_encoder.pth").rename(src / "encoder" / "CT_CLIP_zeroshot.pt")
    with pytest.raises(CheckpointError, match="more than one encoder.*CT-CLIP_v2.pt"):
        find_parts(src)


def test_converted_ct_chat_equals_its_equations_encoder_projector_logits_and_greedy_ids(tiny):
    model, tokenizer = _model(tiny["out"]), _tokenizer(tiny["out"])
    assert model.num_image_tokens == ref.QUERIES and model.config.vision_config.grid == (3, 4, 4)
    torch.manual_seed(5)
    pixels = torch.rand(1, 1, 6, 16, 16) * 2 - 1
    with torch.no_grad():
        before = model.vision_tower.encode(pixels)
        torch.testing.assert_close(before, ref.reference_ctvit(tiny["vit"], pixels, quantize=False),
                                   atol=1e-5, rtol=1e-5)
        encoded = model.vision_tower(pixels)
        expected = ref.reference_ctvit(tiny["vit"], pixels)
        assert torch.equal(encoded, expected)  # the same codebook rows
        assert len(set(model.vision_tower.code_indices(before)[0].tolist())) > 5  # not one code for all
        features = ref.reference_projector(tiny["projector"], expected)
        torch.testing.assert_close(model.get_image_features(pixels), features, atol=1e-5, rtol=1e-5)
    base_tokenizer, lm = ref.ct_chat_load(tiny, fix_task_rows=True)
    theirs = ref.reference_prompt_ids(base_tokenizer, ref.reference_prompt(ref.STAND_IN_SYSTEM,
                                                                           [(QUESTION, None)], [SUFFIX]))
    ours = _our_ids(tokenizer, model, QUESTION + SUFFIX)
    assert ours == _expand(theirs, model.config.image_token_id, model.num_image_tokens)
    ref_logits, ref_ids = ref.reference_generate(lm, theirs, features, steps=8)
    ids = torch.tensor([ours])
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels).logits
        generated = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=8, do_sample=False,
                                   eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    vocab = ref_logits.shape[-1]  # ours has one more column: the <image> placeholder
    assert logits.shape[-1] == vocab + 1
    torch.testing.assert_close(logits[..., :vocab], ref_logits, atol=1e-4, rtol=1e-4)
    assert generated[0, ids.shape[1]:].tolist() == ref_ids


def test_the_position_bias_is_ct_vits_for_a_slab_larger_than_one_chunk(tiny):
    """Computed in chunks of positions (CT-CHAT's 24 x 24 slab is 576 of them): the same as in one piece."""
    model = _model(tiny["out"])
    with torch.no_grad():
        bias = model.vision_tower.position_bias(12, 13, torch.device("cpu"))
    assert bias.shape == (ref.TINY_VIT["heads"], 156, 156)
    torch.testing.assert_close(bias, ref._position_bias(tiny["vit"], 12, 13), atol=1e-5, rtol=1e-5)


def test_the_encoder_stays_in_float32_when_the_model_loads_in_bfloat16(tiny):
    """CT-CHAT encodes in float32; the nearest-codebook step is an argmax that bf16 would move."""
    from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

    model = RadReportForConditionalGeneration.from_pretrained(str(tiny["out"]), dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.vision_tower.parameters()} == {torch.float32}
    assert model.vision_tower.codebook.dtype == torch.float32
    assert model.language_model.dtype == model.perceiver.attn_pool.query.dtype == torch.bfloat16
    pixels = torch.rand(1, 1, 6, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.vision_tower(pixels), ref.reference_ctvit(tiny["vit"], pixels))
        assert model.get_image_features(pixels).dtype == torch.bfloat16


def test_the_prompt_is_ct_chats_two_bos_system_provided_and_follow_up_turns(tiny):
    model, tokenizer = _model(tiny["out"]), _tokenizer(tiny["out"])
    bos = tokenizer.bos_token_id
    ours = _our_ids(tokenizer, model, QUESTION + SUFFIX)
    assert ours[:2] == [bos, bos] and ours.count(bos) == 2
    image = model.config.image_token_id
    after = tokenizer.decode(ours[len(ours) - ours[::-1].index(image):])
    assert after.startswith("\n<provided>" + QUESTION + SUFFIX + "<|eot_id|>")
    assert after.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    # a follow-up: the first turn as before, the answer, then the new question without <provided>
    history = [(QUESTION + SUFFIX, "No nodule.")]
    follow = "Is there a pleural effusion?"
    ours = _our_ids(tokenizer, model, follow + " <short_answer>", history=history)
    prompt = ref.reference_prompt(ref.STAND_IN_SYSTEM, [(QUESTION, "No nodule."), (follow, None)],
                                  [SUFFIX, " <short_answer>"])
    base_tokenizer, _ = ref.ct_chat_load(tiny, fix_task_rows=True)
    assert ours == _expand(ref.reference_prompt_ids(base_tokenizer, prompt), image, model.num_image_tokens)
    assert tokenizer.decode(ours).count("<provided>") == ref.STAND_IN_SYSTEM.count("<provided>") + 1
    # the task tokens are single tokens, spelled as CT-CHAT's constants spell them
    assert [len(tokenizer(t, add_special_tokens=False).input_ids) for t in TASK_TOKENS] == [1, 1, 1, 1]


def test_task_token_rows_are_the_mean_of_the_rows_before_them_and_the_same_on_every_load(tiny):
    vocab = len(_tokenizer(tiny["base"]))
    first, second = _model(tiny["out"]), _model(tiny["out"])
    for model in (first, second):
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            rows = weight.detach().double()
            mean = rows[:vocab].mean(dim=0)
            torch.testing.assert_close(rows[vocab], mean)  # <pad>: CT-CHAT's own rule
            for row in range(vocab + 1, vocab + 1 + len(TASK_TOKENS)):  # the task tokens: the same rule
                torch.testing.assert_close(rows[row], rows[:vocab + 1].mean(dim=0))
    for a, b in ((first.get_input_embeddings(), second.get_input_embeddings()),
                 (first.get_output_embeddings(), second.get_output_embeddings())):
        assert torch.equal(a.weight, b.weight)
    # CT-CHAT's own loader: new random task rows on every load (why the rule is needed)
    _, one = ref.ct_chat_load(tiny, fix_task_rows=False)
    _, two = ref.ct_chat_load(tiny, fix_task_rows=False)
    task = slice(vocab + 1, vocab + 1 + len(TASK_TOKENS))
    assert not torch.equal(one.get_input_embeddings().weight[task], two.get_input_embeddings().weight[task])
    kept = slice(0, vocab + 1)
    assert torch.equal(one.get_input_embeddings().weight[kept], two.get_input_embeddings().weight[kept])


def test_the_lora_is_merged_and_the_projector_prefixes_are_stripped(tiny):
    from safetensors.torch import load_file

    base = load_file(str(tiny["base"] / "model.safetensors"))
    model = _model(tiny["out"])
    _, merged = ref.ct_chat_load(tiny, fix_task_rows=True)
    name = "model.layers.1.mlp.down_proj.weight"
    ours = model.language_model.state_dict()[name]
    assert not torch.allclose(ours, base[name])  # the LoRA changed it
    torch.testing.assert_close(ours, merged.state_dict()[name], atol=1e-6, rtol=1e-6)
    query = tiny["projector"]["base_model.model.model.mm_projector.attn_pool.query"]
    assert torch.equal(model.perceiver.attn_pool.query.detach(), query)


def test_ct_rate_preprocessing_equals_ct_chats_on_a_real_nifti(abdomen_nifti):
    import nibabel

    from napari_radreport import load_study
    from napari_radreport.modeling.ct_rate import ct_rate_pixels
    from napari_radreport.modeling.processor import Preprocess

    spec = Preprocess.from_recipe({"target_shape": [240, 480, 480], "spacing_mm": [1.5, 0.75, 0.75],
                                   "intensity": "ct_rate", "hu_window": [-1000, 1000],
                                   "resize": "crop_or_pad"})
    study = load_study(abdomen_nifti)
    zooms = [float(z) for z in nibabel.load(str(abdomen_nifti)).header.get_zooms()[:3]]
    assert zooms[0] == zooms[1]  # CT-CHAT takes one in-plane spacing
    theirs = ref.reference_nii_to_tensor(abdomen_nifti, 1.0, 0.0, zooms[0], zooms[2])
    ours = ct_rate_pixels(study, spec)
    assert ours.shape == (1, 1, 240, 480, 480) and ours.dtype == torch.float32
    assert torch.equal(ours[0], theirs)
    assert ours.min() == -1.0 and ours.max() <= 1.0


@pytest.mark.parametrize("affine", [
    [[-0.77, 0, 0, 10], [0, -0.77, 0, 5], [0, 0, 1.3, -40]],  # LPS storage
    [[0, 0.77, 0, 10], [0, 0, -1.3, 5], [-0.77, 0, 0, -40]],  # axes permuted and flipped
])
def test_ct_rate_preprocessing_keeps_the_stored_voxel_order_and_rounds_sizes_down(tmp_path, affine):
    """A NIfTI stored in another orientation, at spacings whose resampled sizes are not whole numbers."""
    import nibabel
    import numpy as np

    from napari_radreport import load_study
    from napari_radreport.modeling.ct_rate import ct_rate_pixels
    from napari_radreport.modeling.processor import Preprocess

    rng = np.random.default_rng(0)
    data = rng.integers(-1200, 1600, size=(41, 37, 23)).astype(np.int16)
    data[:, :, 0] = -1000  # air somewhere, so the reader calls it CT
    path = tmp_path / "volume.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, np.vstack([affine, [0, 0, 0, 1]])), str(path))
    study = load_study(path)
    assert study.extra["reorientation"] != {"perm": [0, 1, 2], "flip": [False, False, False]}
    spec = Preprocess.from_recipe({"target_shape": [24, 48, 48], "spacing_mm": [1.5, 0.75, 0.75],
                                   "intensity": "ct_rate", "hu_window": [-1000, 1000]})
    ours = ct_rate_pixels(study, spec)[0, 0]
    full = ref.reference_nii_to_tensor(path, 1.0, 0.0, 0.77, 1.3)[0]  # pads or crops to (240, 480, 480)
    sizes = [int(23 * 1.3 / 1.5), int(41 * 0.77 / 0.75), int(37 * 0.77 / 0.75)]
    assert sizes == [19, 42, 37] and [round(23 * 1.3 / 1.5), round(41 * 0.77 / 0.75)] == [20, 42]
    starts = [(240 - sizes[0]) // 2, (480 - sizes[1]) // 2, (480 - sizes[2]) // 2]
    volume = full[tuple(slice(start, start + size) for start, size in zip(starts, sizes))]
    expected = torch.full((24, 48, 48), -1.0)
    at = [(24 - sizes[0]) // 2, (48 - sizes[1]) // 2, (48 - sizes[2]) // 2]
    expected[at[0]:at[0] + sizes[0], at[1]:at[1] + sizes[1], at[2]:at[2] + sizes[2]] = volume
    assert torch.equal(ours, expected)


def test_a_dicom_series_is_read_in_itk_index_order(chest_series, tmp_path):
    """A DICOM series has no stored NIfTI order; it is given the one ITK keeps (i toward the patient's left,
    j toward posterior, k toward superior): CT-CHAT's function on SimpleITK's NIfTI of the series equals
    it."""
    sitk = pytest.importorskip("SimpleITK")

    from napari_radreport import load_study
    from napari_radreport.modeling.ct_rate import ct_rate_pixels
    from napari_radreport.modeling.processor import Preprocess

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(chest_series)))
    image = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    nifti = tmp_path / "series.nii.gz"
    sitk.WriteImage(image, str(nifti))
    spacing = image.GetSpacing()
    spec = Preprocess.from_recipe({"target_shape": [240, 480, 480], "spacing_mm": [1.5, 0.75, 0.75],
                                   "intensity": "ct_rate", "hu_window": [-1000, 1000]})
    study = load_study(chest_series)
    assert "reorientation" not in study.extra
    theirs = ref.reference_nii_to_tensor(nifti, 1.0, 0.0, spacing[0], spacing[2])
    torch.testing.assert_close(ct_rate_pixels(study, spec)[0], theirs, atol=1e-5, rtol=0)


def test_ct_rate_index_follows_a_point_through_the_preprocessing(abdomen_nifti):
    import numpy as np

    from napari_radreport import load_study
    from napari_radreport.modeling.ct_rate import ct_rate_index, ct_rate_pixels
    from napari_radreport.modeling.processor import Preprocess

    spec = Preprocess.from_recipe({"target_shape": [240, 480, 480], "spacing_mm": [1.5, 0.75, 0.75],
                                   "intensity": "ct_rate", "hu_window": [-1000, 1000]})
    study = load_study(abdomen_nifti)
    marked = np.array(study.array, dtype=np.float32)
    voxel = (40, 55, 70)
    marked[:] = -1000
    marked[voxel] = 1000
    import dataclasses

    image = dataclasses.replace(study.image, array=marked)
    copy = dataclasses.replace(study, images=[image])
    pixels = ct_rate_pixels(copy, spec)[0, 0]
    peak = np.unravel_index(int(pixels.argmax()), pixels.shape)
    where = ct_rate_index(copy, spec, study.image.index_to_patient(voxel))
    assert np.abs(np.asarray(peak) - where).max() <= 0.5


@pytest.mark.filterwarnings("ignore:.*loading pickle weights:UserWarning")
def test_refusals_name_what_is_wrong(tiny, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny["src"], src)
    with pytest.raises(CheckpointError, match="clip_visual_encoder.pth.*a pickle"):
        convert_ct_chat(src, tmp_path / "out", geometry=ref.TINY_GEOMETRY)
    assert not (tmp_path / "out").exists()
    # an encoder tensor CT-ViT does not have
    state = dict(tiny["vit"], **{"enc_spatial_transformer.layers.0.9.weight": torch.zeros(2)})
    torch.save(state, src / "encoder" / "clip_visual_encoder.pth")
    with pytest.raises(CheckpointError, match=r"unknown tensor names: enc_spatial_transformer\.layers\.0\.9"):
        convert_ct_chat(src, tmp_path / "out", allow_pickle=True, geometry=ref.TINY_GEOMETRY)
    # a whole CT-CLIP checkpoint: its image encoder is taken, its text tower dropped by name
    clip = {**{f"visual_transformer.{k}": v for k, v in tiny["vit"].items()},
            "text_transformer.embeddings.weight": torch.zeros(3, 2),
            "to_visual_latent.weight": torch.zeros(2, 2),
            "temperature": torch.tensor(1.0)}
    (src / "encoder" / "clip_visual_encoder.pth").unlink()
    torch.save(clip, src / "encoder" / "CT-CLIP_v2.pt")
    out = convert_ct_chat(src, tmp_path / "from-clip", allow_pickle=True, geometry=ref.TINY_GEOMETRY)
    from safetensors.torch import load_file

    converted = load_file(str(tiny["out"] / "model-00002-of-00002.safetensors"))
    again = load_file(str(out / "model-00002-of-00002.safetensors"))
    assert converted.keys() == again.keys() and all(torch.equal(converted[k], again[k]) for k in converted)
    # the LoRA of another base (its config.json counts another vocabulary)
    config = json.loads((src / "llama_3.1_8b" / "config.json").read_text())
    (src / "llama_3.1_8b" / "config.json").write_text(json.dumps({**config, "vocab_size": 128261}))
    with pytest.raises(CheckpointError, match="128261 = base \\+ <pad> \\+ 4 task tokens: another base"):
        convert_ct_chat(src, tmp_path / "out2", allow_pickle=True, geometry=ref.TINY_GEOMETRY)
    # a part missing
    shutil.rmtree(src / "CT-CHAT")
    with pytest.raises(CheckpointError, match="missing: CT-CHAT's llava/conversation.py"):
        find_parts(src)
    # the encoder's patches do not fit CT-CHAT's geometry
    shutil.copytree(tiny["src"] / "CT-CHAT", src / "CT-CHAT")
    (src / "llama_3.1_8b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="takes 32 values per patch; CT-CHAT's geometry"):
        convert_ct_chat(src, tmp_path / "out3", allow_pickle=True)


def test_convert_command(tiny, tmp_path, capsys):
    """``radreport convert ct-chat`` reaches the converter (these tiny weights are not CT-CHAT's full-size
    geometry, which the command converts to, so it stops there, naming why)."""
    from napari_radreport.cli import main

    assert main(["convert", "ct-chat", str(tiny["base"]), str(tmp_path / "out")]) == 1
    assert "not a CT-CHAT source folder" in capsys.readouterr().err
    assert main(["convert", "ct-chat", str(tiny["src"]), str(tmp_path / "out")]) == 1
    assert "clip_visual_encoder.pth: a pickle" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="pickle"):
        assert main(["convert", "ct-chat", str(tiny["src"]), str(tmp_path / "out"), "--allow-pickle"]) == 1
    assert "takes 32 values per patch; CT-CHAT's geometry [10, 20, 20]" in capsys.readouterr().err


def test_the_converted_folder_runs_through_the_model_family(tiny, abdomen_nifti):
    """load_model -> RadReportFamily -> the study's inputs: CT-RATE pixels and CT-CHAT's prompt; a folder of
    the raw parts is refused saying how to convert it."""
    from napari_radreport import load_study
    from napari_radreport.modeling import processor
    from napari_radreport.modeling.ct_rate import ct_rate_pixels
    from napari_radreport.modeling.families import RadReportFamily
    from napari_radreport.modeling.loading import load_model

    config = json.loads((tiny["out"] / "config.json").read_text())
    assert RadReportFamily.config_modality(config) == "ct"
    study = load_study(abdomen_nifti)
    spec = processor.Preprocess.from_recipe(config["preprocess"])
    pixels = processor.volume_to_pixels(study, spec)
    assert torch.equal(pixels, ct_rate_pixels(study, spec))
    with pytest.raises(CheckpointError, match="holds CT-CHAT's parts; convert them into one model folder"):
        load_model(tiny["src"])
    loaded = load_model(tiny["out"])
    assert loaded.family.modality == "ct" and loaded.family.image_token_id == config["image_token_id"]
    inputs = loaded.family.model_inputs(study, QUESTION + SUFFIX)
    expected = _our_ids(loaded.family.tokenizer, loaded.model, QUESTION + SUFFIX)
    assert inputs["input_ids"][0].tolist() == expected
    assert torch.equal(inputs["pixel_values"], pixels)
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_the_recipe_builds_tiny_and_at_full_size():
    from napari_radreport.modeling.ct_chat import CT_CHAT_GEOMETRY, CT_RATE_SPACING, SCOPE, TASKS
    from napari_radreport.modeling.recipes import load_recipe

    recipe = load_recipe("ct-chat")
    assert recipe.prompt == {"chat_template": True, "tasks": TASKS} and recipe.scope == SCOPE  # as converted
    assert recipe.preprocess["spacing_mm"] == CT_RATE_SPACING
    assert recipe.preprocess["target_shape"] == recipe.vision["image_size"] == CT_CHAT_GEOMETRY["image_size"]
    model = recipe.build(tiny=True).eval()
    vision = model.config.vision_config
    ids = torch.tensor([[1] + [model.config.image_token_id] * model.num_image_tokens + [5, 6]])
    out = model.generate(input_ids=ids, pixel_values=torch.rand(1, 1, *vision.image_size), max_new_tokens=2,
                         do_sample=False)
    assert out.shape == (1, ids.shape[1] + 2)
    full = recipe.build(device="meta")
    assert full.num_image_tokens == 256 and full.config.vision_config.grid == (24, 24, 24)
    billions = sum(p.numel() for p in full.parameters()) / 1e9
    assert 8.05 <= billions <= 8.1, billions


# -- against CT-CHAT's and CT-CLIP's own code (RADREPORT_CT_CHAT_CODE) -----------------------------------
@pytest.fixture(scope="module")
def code():
    found = ref.real_code()
    if found is None:
        pytest.skip("CT-CHAT's and CT-CLIP's code not at hand: set RADREPORT_CT_CHAT_CODE to a folder "
                    "holding CT-CHAT/ and CT-CLIP/ checkouts, with einops, einops-exts, beartype and "
                    "vector-quantize-pytorch==1.1.2 importable")
    return found


def test_their_ct_vit_and_projector_equal_the_reference_and_the_converted_model(code, tiny, tmp_path):
    torch.manual_seed(0)
    vit = code.CTViT(dim=32, codebook_size=64, image_size=16, patch_size=4, temporal_patch_size=2,
                     spatial_depth=2, temporal_depth=1, dim_head=8, heads=4).eval()
    assert {k: tuple(v.shape) for k, v in vit.state_dict().items()} == ref._vit_shapes()
    vit.load_state_dict(tiny["vit"])
    pixels = torch.rand(1, 1, 6, 16, 16) * 2 - 1
    model = _model(tiny["out"])
    with torch.no_grad():
        theirs = vit(pixels, return_encoded_tokens=True).flatten(1, 3)  # CT-CHAT's encode_images flatten
        assert torch.equal(theirs, ref.reference_ctvit(tiny["vit"], pixels))
        assert torch.equal(model.vision_tower(pixels), theirs)
    from types import SimpleNamespace

    config = SimpleNamespace(mm_projector_type="attn_pool+mlp2x_gelu", mm_hidden_size=32, mm_context_size=32,
                             hidden_size=ref.TINY_TEXT["hidden_size"])
    projector = code.build_vision_projector(config).eval()
    prefix = "base_model.model.model.mm_projector."
    projector.load_state_dict({k[len(prefix):]: v for k, v in tiny["projector"].items()})
    with torch.no_grad():
        torch.testing.assert_close(model.perceiver(theirs), projector(theirs), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*loading pickle weights:UserWarning")
def test_their_conversation_and_tokenizer_image_token_give_our_prompt_ids(code, tiny, tmp_path):
    """With CT-CHAT's real conversation.py: its system text, template and splitting, through our converter."""
    src = tmp_path / "src"
    shutil.copytree(tiny["src"], src)
    shutil.copy2(code.root / "CT-CHAT" / "llava" / "conversation.py",
                 src / "CT-CHAT" / "llava" / "conversation.py")
    out = convert_ct_chat(src, tmp_path / "out", allow_pickle=True, geometry=ref.TINY_GEOMETRY)
    model, tokenizer = _model(out), _tokenizer(out)
    base_tokenizer, _ = ref.ct_chat_load(tiny, fix_task_rows=True)
    conv = code.conversation.conv_templates["llama3"].copy()
    text = "<image>\n <provided>" + QUESTION + SUFFIX  # gradio_web_server.add_text, first question
    conv.append_message(conv.roles[0], (text, None, "Default"))
    conv.append_message(conv.roles[1], None)
    theirs = code.mm_utils.tokenizer_image_token(conv.get_prompt(), base_tokenizer,
                                                 code.constants.IMAGE_TOKEN_INDEX)
    ours = _our_ids(tokenizer, model, QUESTION + SUFFIX)
    assert ours == _expand(theirs, model.config.image_token_id, model.num_image_tokens)
    assert ours[:2] == [tokenizer.bos_token_id] * 2


def test_their_nii_img_to_tensor_equals_ours(code, abdomen_nifti, monkeypatch):
    import nibabel

    from napari_radreport import load_study
    from napari_radreport.modeling.ct_rate import ct_rate_pixels
    from napari_radreport.modeling.processor import Preprocess

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # its last line moves to the GPU
    zooms = [float(z) for z in nibabel.load(str(abdomen_nifti)).header.get_zooms()[:3]]
    theirs = code.encode_script.nii_img_to_tensor(str(abdomen_nifti), 1.0, 0.0, zooms[0], zooms[2])
    spec = Preprocess.from_recipe({"target_shape": [240, 480, 480], "spacing_mm": [1.5, 0.75, 0.75],
                                   "intensity": "ct_rate", "hu_window": [-1000, 1000]})
    assert torch.equal(ct_rate_pixels(load_study(abdomen_nifti), spec)[0], theirs)
    assert torch.equal(ref.reference_nii_to_tensor(abdomen_nifti, 1.0, 0.0, zooms[0], zooms[2]), theirs)


def test_their_llava_model_gives_our_logits_and_greedy_ids(code, tiny):
    """CT-CHAT's own LlavaLlamaForCausalLM (its encode_images, prepare_inputs_labels_for_multimodal and
    forward) on the merged tiny weights and its projector, fed CT-ViT's tokens as CT-CHAT's images: the same
    logits and greedy ids as the converted model. The merge itself is builder.py's LoRA branch as
    ``ref.ct_chat_load`` replays it (builder.py imports its training code, which needs libraries we lack)."""
    model, tokenizer = _model(tiny["out"]), _tokenizer(tiny["out"])
    base_tokenizer, lm = ref.ct_chat_load(tiny, fix_task_rows=True)
    config = code.LlavaConfig.from_pretrained(str(tiny["lora"]))
    config.vocab_size = lm.config.vocab_size
    theirs_model = code.LlavaLlamaForCausalLM(config).eval()
    projector = {k.replace("base_model.model.", ""): v for k, v in tiny["projector"].items()}
    weights = {**lm.state_dict(), **projector}
    missing, unexpected = theirs_model.load_state_dict(weights, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    torch.manual_seed(5)
    pixels = torch.rand(1, 1, 6, 16, 16) * 2 - 1
    ids = ref.reference_prompt_ids(base_tokenizer, ref.reference_prompt(ref.STAND_IN_SYSTEM,
                                                                        [(QUESTION, None)], [SUFFIX]))
    ours = torch.tensor([_our_ids(tokenizer, model, QUESTION + SUFFIX)])
    with torch.no_grad():
        images = model.vision_tower(pixels).reshape(1, *model.config.vision_config.grid, -1)  # b, t, h, w, d
        theirs = theirs_model(input_ids=torch.tensor([ids]), images=images, use_cache=False).logits
        logits = model(input_ids=ours, pixel_values=pixels).logits
        vocab = theirs.shape[-1]
        torch.testing.assert_close(logits[..., :vocab], theirs, atol=1e-4, rtol=1e-4)
        their_ids, step_ids = [], list(ids)
        for _ in range(8):  # greedy through its own forward, the whole prompt each step (no cache)
            token = int(theirs_model(input_ids=torch.tensor([step_ids]), images=images,
                                     use_cache=False).logits[0, -1].argmax())
            their_ids.append(token)
            step_ids.append(token)
        generated = model.generate(input_ids=ours, pixel_values=pixels, max_new_tokens=8, do_sample=False,
                                   eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    assert generated[0, ours.shape[1]:].tolist() == their_ids
