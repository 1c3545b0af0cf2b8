"""M3D-LaMed checkpoints: tiny folders in the released format, converted and checked against the equations."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from napari_radreport.modeling import RadReportForConditionalGeneration  # noqa: E402
from napari_radreport.modeling.checkpoints import CheckpointError  # noqa: E402
from napari_radreport.modeling.m3d import convert_m3d  # noqa: E402

from m3d_reference import (  # noqa: E402
    VIT,
    reference_generate,
    reference_spp,
    reference_vit3d,
    write_sentencepiece_tokenizer,
    write_tiny_m3d_checkpoint,
)


@pytest.mark.parametrize(("text_type", "image_token_id"), [("llama", 32000), ("phi3", 32011)])
def test_converted_m3d_model_equals_the_reference(tmp_path, text_type, image_token_id):
    state = write_tiny_m3d_checkpoint(tmp_path / "m3d", text_type)
    out = convert_m3d(tmp_path / "m3d", tmp_path / "converted")
    model = RadReportForConditionalGeneration.from_pretrained(out).eval()
    assert model.config.image_token_id == image_token_id
    assert model.config.text_config.model_type == text_type
    assert model.num_image_tokens == 4
    assert not any("seg" in k for k in model.state_dict())

    torch.manual_seed(3)
    pixels = torch.rand(1, 1, 8, 64, 64)
    n = model.num_image_tokens
    ids = torch.tensor([[1] + [image_token_id] * n + [17, 301, 4242, 9]])
    ref_features, ref_logits, ref_ids = reference_generate(state, text_type, ids, pixels, steps=8)
    with torch.no_grad():
        encoded = model.vision_tower(pixels)
        torch.testing.assert_close(encoded, reference_vit3d(state, pixels, (4, 16, 16), 12, prefix=VIT),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.perceiver(encoded), reference_spp(state, encoded, (2, 4, 4)),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.get_image_features(pixels), ref_features, atol=1e-5, rtol=1e-5)
        logits = model(input_ids=ids, pixel_values=pixels).logits
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
        generated = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=8, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)
    assert generated[:, ids.shape[1]:].tolist() == ref_ids.tolist()
    # the tokenizer travels with the converted model
    assert (out / "tokenizer.json").exists()


def test_an_m3d_folder_with_only_a_sentencepiece_tokenizer_loads_and_equals_the_reference(tmp_path):
    """The released Llama-2 M3D-LaMed folder ships tokenizer.model + tokenizer_config.json, no tokenizer.json:
    it loads (sentencepiece and protobuf are dependencies), encodes text as SentencePiece itself does, and the
    converted model's logits and greedy ids equal M3D's equations."""
    import sentencepiece as spm

    from napari_radreport.modeling.loading import load_model

    source = tmp_path / "m3d"
    state = write_tiny_m3d_checkpoint(source, "llama", base_vocab=400,
                                      tokenizer=write_sentencepiece_tokenizer)
    assert not (source / "tokenizer.json").exists() and (source / "tokenizer.model").exists()
    loaded = load_model(source)
    tokenizer, model = loaded.family.tokenizer, loaded.model
    assert loaded.family.image_token_id == 400 == tokenizer.convert_tokens_to_ids("<im_patch>")
    question = "Is there a small nodule in the right upper lobe?"
    text_ids = spm.SentencePieceProcessor(model_file=str(source / "tokenizer.model")).encode(question)
    assert tokenizer(question)["input_ids"] == [1, *text_ids]
    ids = torch.tensor([[1] + [400] * model.num_image_tokens + text_ids])
    torch.manual_seed(4)
    pixels = torch.rand(1, 1, 8, 64, 64)
    _features, ref_logits, ref_ids = reference_generate(state, "llama", ids, pixels, steps=6)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits, ref_logits,
                                   atol=1e-5, rtol=1e-5)
        generated = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=6, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)
    assert generated[:, ids.shape[1]:].tolist() == ref_ids.tolist()


def test_unknown_tensor_names_are_refused_with_their_names(tmp_path):
    from safetensors.torch import load_file, save_file

    write_tiny_m3d_checkpoint(tmp_path / "m3d", "llama")
    shard = tmp_path / "m3d" / "model-00001-of-00002.safetensors"
    original = load_file(str(shard))
    save_file({**original, "model.extra_head.weight": torch.zeros(2)}, str(shard))
    with pytest.raises(CheckpointError, match=r"unexpected: language_model\.model\.extra_head\.weight"):
        convert_m3d(tmp_path / "m3d", tmp_path / "out")
    save_file({**original, "text_proj.weight": torch.zeros(2)}, str(shard))
    with pytest.raises(CheckpointError, match=r"unknown tensor names \(not M3D-LaMed\): text_proj\.weight"):
        convert_m3d(tmp_path / "m3d", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_missing_tensors_are_refused_with_their_names(tmp_path):
    from safetensors.torch import load_file, save_file

    write_tiny_m3d_checkpoint(tmp_path / "m3d", "llama")
    shard = tmp_path / "m3d" / "model-00001-of-00002.safetensors"
    tensors = load_file(str(shard))
    dropped = sorted(k for k in tensors if k.startswith("model.layers.1."))[0]
    del tensors[dropped]
    save_file(tensors, str(shard))
    index = json.loads((tmp_path / "m3d" / "model.safetensors.index.json").read_text())
    del index["weight_map"][dropped]
    (tmp_path / "m3d" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"missing: language_model\.{dropped.replace('.', '[.]')}"):
        convert_m3d(tmp_path / "m3d", tmp_path / "out")


def test_pickle_weights_are_refused_unless_allowed(tmp_path):
    write_tiny_m3d_checkpoint(tmp_path / "m3d", "llama")
    for f in (tmp_path / "m3d").glob("model*"):
        f.unlink()
    torch.save({"x": torch.zeros(1)}, tmp_path / "m3d" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickle weights .*allow_pickle"):
        convert_m3d(tmp_path / "m3d", tmp_path / "out")


def test_a_hub_id_fails_at_once_saying_how_to_use_local_weights(tmp_path):
    with pytest.raises(CheckpointError, match="never downloads weights"):
        convert_m3d("GoodBaiBai88/M3D-LaMed-Phi-3-4B", tmp_path / "out")


def test_convert_command(tmp_path, capsys):
    from napari_radreport.cli import main

    write_tiny_m3d_checkpoint(tmp_path / "m3d", "phi3")
    assert main(["convert", "m3d", str(tmp_path / "m3d"), str(tmp_path / "out")]) == 0
    assert "converted" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "radreport"
    assert main(["convert", "m3d", str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 1
    assert "no such checkpoint folder" in capsys.readouterr().err
