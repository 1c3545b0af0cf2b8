"""One interface over our checkpoints, M3D-LaMed folders and LLaVA-family models from transformers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.modeling.checkpoints import CheckpointError  # noqa: E402
from napari_radreport.modeling.loading import load_model  # noqa: E402

from m3d_reference import write_tiny_m3d_checkpoint  # noqa: E402
from tiny_models import write_tiny_llava  # noqa: E402


def test_a_llava_model_gives_the_same_ids_through_our_interface_as_directly(tmp_path, shared_data):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from napari_radreport.modeling.processor import stitched_picture

    write_tiny_llava(tmp_path / "llava")
    study = load_study([shared_data / "xray" / "nih_00000001_000_cardiomegaly.png",
                        shared_data / "xray" / "nih_00027426_000_no_finding.png"])
    loaded = load_model(tmp_path / "llava")
    assert loaded.kind == "image-text-to-text" and loaded.modality == "xray" and loaded.preprocess is None
    assert loaded.family.image_token_id == loaded.model.config.image_token_index
    ours = loaded.generate(study, "w5 w6", max_new_tokens=6, do_sample=False)

    model = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "llava")).eval()
    processor = AutoProcessor.from_pretrained(str(tmp_path / "llava"))
    inputs = processor(images=stitched_picture(study), text="USER: <image>\nw5 w6 ASSISTANT:",
                       return_tensors="pt")
    direct = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert ours == direct.tolist() and len(ours) == 6


def test_an_m3d_folder_loads_directly_and_runs_a_real_ct(tmp_path, monkeypatch, abdomen_nifti):
    monkeypatch.setenv("RADREPORT_CACHE", str(tmp_path / "cache"))
    write_tiny_m3d_checkpoint(tmp_path / "m3d", "phi3")
    loaded = load_model(tmp_path / "m3d")
    assert loaded.kind == "radreport" and loaded.modality == "ct"
    assert loaded.family.image_token_id == loaded.model.config.image_token_id
    assert loaded.family.prompt_spec.chat_template is False  # M3D: no chat template
    assert len(list((tmp_path / "cache").iterdir())) == 1  # converted once, into the cache
    ids = loaded.generate(load_study(abdomen_nifti), "w5 w6", max_new_tokens=3, do_sample=False)
    assert len(ids) == 3
    with pytest.raises(Exception, match="reads CT volumes"):
        xray = abdomen_nifti.parent.parent / "xray" / "nih_00000001_000_cardiomegaly.png"
        loaded.inputs(load_study(xray), "q")


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a model napari-radreport can load"):
        load_model(tmp_path)


def test_a_newer_converter_converts_a_cached_m3d_folder_again(tmp_path, monkeypatch):
    from napari_radreport.modeling import m3d

    monkeypatch.setenv("RADREPORT_CACHE", str(tmp_path / "cache"))
    write_tiny_m3d_checkpoint(tmp_path / "m3d", "phi3")
    load_model(tmp_path / "m3d")
    load_model(tmp_path / "m3d")
    assert len(list((tmp_path / "cache" / "converted").iterdir())) == 1  # the same converter: reused
    monkeypatch.setattr(m3d, "CONVERTER_VERSION", m3d.CONVERTER_VERSION + 1)
    load_model(tmp_path / "m3d")
    assert len(list((tmp_path / "cache" / "converted").iterdir())) == 2  # a newer one: converted again
