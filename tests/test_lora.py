"""Named LoRA adapters: switching changes the output, switching back restores it exactly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_modeling import IMAGE_TOKEN, prompt, tiny_model  # noqa: E402

from napari_radreport.modeling.lora import (  # noqa: E402
    add_adapter,
    load_adapter,
    lora_config,
    merged,
    use_adapter,
    without_adapters,
)


def _logits(model, ids, pixels):
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits


def test_switching_adapters_changes_output_and_switching_back_restores_it(tmp_path):
    base = tiny_model()
    ids, pixels = prompt(base), torch.randn(1, 1, 8, 64, 64)
    reference = _logits(base, ids, pixels)
    torch.manual_seed(1)
    model = add_adapter(base, "findings", lora_config(r=4, alpha=8, dropout=0.0, random_init=True))
    torch.manual_seed(2)
    model = add_adapter(model, "impression", lora_config(r=4, alpha=8, dropout=0.0, random_init=True))
    model.eval()

    use_adapter(model, "findings")
    findings = _logits(model, ids, pixels)
    use_adapter(model, "impression")
    impression = _logits(model, ids, pixels)
    use_adapter(model, "findings")
    again = _logits(model, ids, pixels)
    assert not torch.allclose(findings, reference, atol=1e-4)
    assert not torch.allclose(findings, impression, atol=1e-4)
    assert torch.equal(findings, again)
    with without_adapters(model):
        torch.testing.assert_close(_logits(model, ids, pixels), reference)

    # only the language model carries LoRA weights; nothing is trainable in inference mode
    lora_names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora_names and all(".language_model." in n for n in lora_names)
    assert not any(p.requires_grad for p in model.parameters())

    # saved adapters load onto a fresh base without reloading it twice, and give the same output
    model.save_pretrained(tmp_path / "adapters", selected_adapters=["findings", "impression"])
    fresh = load_adapter(tiny_model(), tmp_path / "adapters" / "impression", "impression")
    fresh = load_adapter(fresh, tmp_path / "adapters" / "findings", "findings")
    fresh.eval()
    use_adapter(fresh, "findings")
    torch.testing.assert_close(_logits(fresh, ids, pixels), findings)
    use_adapter(fresh, "impression")
    torch.testing.assert_close(_logits(fresh, ids, pixels), impression)

    # merging for export gives the adapter's output from plain weights
    plain = merged(model, "impression")
    torch.testing.assert_close(_logits(plain, ids, pixels), impression, atol=1e-5, rtol=1e-5)
    assert plain.config.image_token_id == IMAGE_TOKEN


def test_a_recipe_that_trains_the_perceiver_saves_it_with_the_adapter(tmp_path):
    model = add_adapter(tiny_model(), "vqa", lora_config(r=2, train_perceiver=True))
    model.save_pretrained(tmp_path / "vqa")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "vqa" / "vqa" / "adapter_model.safetensors"))  # peft: a folder per name
    assert any("perceiver" in k for k in saved) and any("lora_A" in k for k in saved)


def test_unknown_adapter_name_is_a_clear_error():
    model = add_adapter(tiny_model(), "findings", lora_config(r=2))
    with pytest.raises(KeyError, match="no adapter named 'impression'; loaded: findings"):
        use_adapter(model, "impression")
