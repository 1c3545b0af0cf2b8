"""One interface over our checkpoints, M3D-LaMed folders and LLaVA-family models from transformers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from m3d_reference import write_tiny_m3d_checkpoint, write_tiny_tokenizer  # noqa: E402

from napari_radreport import load_study  # noqa: E402
from napari_radreport.modeling.checkpoints import CheckpointError  # noqa: E402
from napari_radreport.modeling.loading import load_model  # noqa: E402

CHAT = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %} ASSISTANT:{% endfor %}")


def _tiny_llava(folder):
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    write_tiny_tokenizer(folder, 100)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8, "hidden_size": 32,
                       "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "projection_dim": 16},
        text_config={"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": len(tokenizer),
                     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=16)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=CHAT)
    processor.save_pretrained(folder)


def test_a_llava_model_gives_the_same_ids_through_our_interface_as_directly(tmp_path, shared_data):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from napari_radreport.modeling.processor import stitched_picture

    _tiny_llava(tmp_path / "llava")
    study = load_study([shared_data / "xray" / "nih_00000001_000_cardiomegaly.png",
                        shared_data / "xray" / "nih_00027426_000_no_finding.png"])
    loaded = load_model(tmp_path / "llava")
    assert loaded.kind == "image-text-to-text" and loaded.modality == "xray"
    ours = loaded.generate(study, "w5 w6", max_new_tokens=6, do_sample=False)

    model = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "llava")).eval()
    processor = AutoProcessor.from_pretrained(str(tmp_path / "llava"))
    inputs = processor(images=stitched_picture(study), text="USER: <image>\nw5 w6 ASSISTANT:", return_tensors="pt")
    direct = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert ours == direct.tolist() and len(ours) == 6


def test_an_m3d_folder_loads_directly_and_runs_a_real_ct(tmp_path, monkeypatch, abdomen_nifti):
    monkeypatch.setenv("RADREPORT_CACHE", str(tmp_path / "cache"))
    write_tiny_m3d_checkpoint(tmp_path / "m3d", "phi3")
    loaded = load_model(tmp_path / "m3d")
    assert loaded.kind == "radreport" and loaded.modality == "ct"
    assert len(list((tmp_path / "cache").iterdir())) == 1  # converted once, into the cache
    ids = loaded.generate(load_study(abdomen_nifti), "w5 w6", max_new_tokens=3, do_sample=False)
    assert len(ids) == 3
    with pytest.raises(Exception, match="reads CT volumes"):
        loaded.inputs(load_study(abdomen_nifti.parent.parent / "xray" / "nih_00000001_000_cardiomegaly.png"), "q")


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a model napari-radreport can load"):
        load_model(tmp_path)
