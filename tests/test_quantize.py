"""8-bit and 4-bit weights (modeling/quantize.py): each layer computes what its stored integers stand for,
the model's memory is what the estimate says, adapters still work on top, and the engine, the command line
and provenance carry the choice."""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")

from test_modeling import IMAGE_TOKEN, TINY_TEXT, TINY_VISION, prompt, tiny_model  # noqa: E402

from napari_radreport.engine import memory_plan  # noqa: E402
from napari_radreport.modeling.quantize import (  # noqa: E402
    INT4_GROUP,
    KERNEL_MAX_ROWS,
    QuantizationError,
    quantize_model,
)

# every Linear layer with whole 4-bit groups (64 inputs) and row blocks (16 outputs)
WIDE = {"hidden_size": 64, "intermediate_size": 128}
WIDE_TEXT = {**TINY_TEXT, **WIDE, "vocab_size": 128}


def wide_model(seed: int = 0):
    """The tiny CT model, 64 wide in the vision tower and the language model."""
    from napari_radreport.modeling import RadReportConfig, RadReportForConditionalGeneration

    torch.manual_seed(seed)
    config = RadReportConfig(vision_config={**TINY_VISION, **WIDE}, text_config=WIDE_TEXT,
                             perceiver_config={"perceiver_type": "spp"}, image_token_id=IMAGE_TOKEN)
    return RadReportForConditionalGeneration(config).eval()


def _linear(rows: int = 48, columns: int = 128, bias: bool = True, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(columns, rows, bias=bias)


@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_layer_computes_with_the_weight_its_integers_stand_for(kind, dtype):
    """The CPU kernel's product equals the product with the dequantized weight, and that weight is within
    half a quantization step of the float one."""
    linear = _linear().to(dtype)
    holder = torch.nn.Sequential(copy.deepcopy(linear))
    quantize_model(holder, kind, "cpu")
    nibbles = torch.nn.Sequential(copy.deepcopy(linear))
    quantize_model(nibbles, kind, "cuda")  # the portable layout, computed here on the CPU
    layer, portable = holder[0], nibbles[0]
    x = torch.randn(3, 5, 128).to(dtype)
    dequantized = portable.dequantized(torch.float32)
    # the CPU kernels compute in bfloat16; the 4-bit portable layout in the input's dtype
    expected = x.bfloat16().float() @ dequantized.T + linear.bias.float()
    torch.testing.assert_close(layer(x).float(), expected, atol=0.02, rtol=0.02)
    if kind == "int4" and dtype == torch.float32:
        torch.testing.assert_close(portable(x), x @ dequantized.T + linear.bias, atol=1e-4, rtol=1e-4)
    else:
        torch.testing.assert_close(portable(x).float(), expected, atol=0.02, rtol=0.02)
    assert layer(x).dtype == dtype and layer(x).shape == (3, 5, 48)
    # a prompt longer than KERNEL_MAX_ROWS (8 bits: the dense product with the made weight) agrees too
    long = torch.randn(KERNEL_MAX_ROWS + 36, 128).to(dtype)
    expected_long = long.bfloat16().float() @ dequantized.T + linear.bias.float()
    torch.testing.assert_close(layer(long).float(), expected_long, atol=0.02, rtol=0.02)
    weight = linear.weight.float()
    if kind == "int8":
        step = portable.scales.float()[:, None]
    else:
        step = portable.scales_and_zeros[:, :, 0].float().T.repeat_interleave(INT4_GROUP, dim=1)
        grouped = weight.reshape(48, -1, INT4_GROUP)
        assert torch.all(step >= ((grouped.amax(2) - grouped.amin(2)) / 15).repeat_interleave(INT4_GROUP, 1))
    # within half a step of the weight, plus the rounding of a bfloat16 zero
    slack = 1e-6 if kind == "int8" else weight.abs().max() / 256
    assert ((dequantized - weight).abs() <= step / 2 + slack).all()


def test_a_four_bit_layer_packed_for_the_cpu_refuses_another_device_in_one_line():
    holder = torch.nn.Sequential(_linear())
    quantize_model(holder, "int4", "cpu")
    with pytest.raises(QuantizationError, match="quantized for the CPU; load it again for meta"):
        holder(torch.empty(2, 128, device="meta"))
    with pytest.raises(QuantizationError, match="packed for the CPU kernel keeps no unpacked levels"):
        holder[0].dequantized(torch.float32)
    with pytest.raises(QuantizationError, match="unknown quantization 'int3'; use one of none, int8, int4"):
        quantize_model(holder, "int3")


def test_what_stays_in_floating_point():
    """Embeddings, a tied output layer, narrow layers and, in 4 bits, layers without whole groups."""
    model = tiny_model(text=WIDE_TEXT)
    model.config.text_config.tie_word_embeddings = True
    model.language_model.lm_head.weight = model.language_model.get_input_embeddings().weight
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    eight = copy.deepcopy(model)
    summary = quantize_model(eight, "int8")
    assert summary.layers + summary.kept == len(linears) and summary.kept >= 1
    assert type(eight.language_model.lm_head) is torch.nn.Linear  # tied to the embeddings
    four = copy.deepcopy(model)
    summary4 = quantize_model(four, "int4")
    assert 0 < summary4.layers < summary.layers  # the 32-wide vision tower has no whole group of 64
    assert all(type(m) is torch.nn.Linear for m in four.vision_tower.modules() if hasattr(m, "weight")
               and getattr(m, "in_features", 0) == 32)
    # the 8-bit CPU kernel's products are wrong (or crash) for inputs not a multiple of 16
    odd = torch.nn.Sequential(torch.nn.Linear(129, 64), torch.nn.Linear(64, 48), torch.nn.Linear(8, 16))
    assert quantize_model(odd, "int8").layers == 1 and type(odd[1]).__name__ == "Int8Linear"
    assert type(odd[0]) is torch.nn.Linear and type(odd[2]) is torch.nn.Linear


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_quantized_model_still_writes_what_the_float_model_writes(kind):
    """The tiny model's next-token distribution stays close to full precision's."""
    model = wide_model()
    ids, pixels = prompt(model), torch.randn(1, 1, 8, 64, 64)
    quantized = copy.deepcopy(model)
    quantize_model(quantized, kind)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=pixels).logits[0, -1].softmax(-1)
        small = quantized(input_ids=ids, pixel_values=pixels).logits[0, -1].softmax(-1)
    assert (full - small).abs().sum() < (0.05 if kind == "int8" else 0.3)  # total variation x 2
    assert (full - small).abs().sum() > 0  # the weights did change


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_the_estimate_counts_the_bytes_a_quantized_model_holds(tmp_path, kind):
    """memory_plan's weights at int8 / int4 are the bytes of the model quantized for real."""
    from napari_radreport.modeling import RadReportForConditionalGeneration

    folder = tmp_path / "wide"
    wide_model().save_pretrained(folder)
    loaded = RadReportForConditionalGeneration.from_pretrained(folder)
    summary = quantize_model(loaded, kind)
    assert summary.layers > 0 and summary.kept == 0
    held = sum(t.numel() * t.element_size() for name, t in [*loaded.named_parameters(),
                                                           *loaded.named_buffers()]
               if "inv_freq" not in name)  # rotary frequencies: computed, not in the checkpoint
    estimate = memory_plan.estimate(folder, kind, prompt_tokens=1, answer_tokens=1, device="cpu")
    assert held == estimate.weight_bytes


def test_an_adapter_keeps_working_on_quantized_weights():
    from napari_radreport.modeling.lora import add_adapter, lora_config, use_adapter, without_adapters

    base = wide_model()
    ids, pixels = prompt(base), torch.randn(1, 1, 8, 64, 64)
    torch.manual_seed(1)
    model = add_adapter(base, "findings", lora_config(r=4, alpha=8, dropout=0.0, random_init=True)).eval()
    use_adapter(model, "findings")
    with torch.no_grad():
        adapted = model(input_ids=ids, pixel_values=pixels).logits
        with without_adapters(model):
            plain = model(input_ids=ids, pixel_values=pixels).logits
    summary = quantize_model(model, "int8")
    assert summary.layers > 0
    lora = [m for name, m in model.named_modules() if name.endswith("lora_A.findings")]
    assert lora and all(type(m) is torch.nn.Linear for m in lora)  # LoRA's own matrices stay float
    with torch.no_grad():
        quantized_adapted = model(input_ids=ids, pixel_values=pixels).logits
        with without_adapters(model):
            quantized_plain = model(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(quantized_adapted, adapted, atol=0.05, rtol=0.05)
    shift, quantized_shift = adapted - plain, quantized_adapted - quantized_plain
    assert shift.abs().max() > 0.1
    torch.testing.assert_close(quantized_shift, shift, atol=0.02, rtol=0.05)


def test_the_engine_loads_8_bit_weights_and_provenance_says_so(tiny_ct_model, abdomen_nifti):
    from napari_radreport import load_study
    from napari_radreport.engine import Engine, GenerationSettings, Progress
    from napari_radreport.engine.provenance import report_provenance

    events = []
    engine = Engine()
    engine.allow_out_of_scope = True
    info = engine.load(tiny_ct_model, quantization="int8", on_event=events.append)
    assert info.quantization == "int8" and info.precision == "float32, 8-bit weights"
    lines = [e.message for e in events if isinstance(e, Progress)]
    assert any(line.startswith("Quantized ") and "Linear layers to 8-bit weights" in line for line in lines)
    assert "Weights to 8-bit weights as they load" in lines
    model = engine.runner.loaded.model
    assert any(type(m).__name__ == "Int8Linear" for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    study = load_study(abdomen_nifti)
    result = engine.report(study, settings=GenerationSettings(max_new_tokens=4))
    assert result.text
    provenance = report_provenance(info, "report:findings", GenerationSettings())
    assert provenance.as_dict()["quantization"] == "int8"
    with pytest.raises(QuantizationError, match="unknown quantization"):
        engine.load(tiny_ct_model, quantization="fp4")
    engine.shutdown()


def test_report_command_takes_quantize_and_the_json_records_it(tiny_ct_model, abdomen_nifti, tmp_path):
    from napari_radreport.cli import main

    out = tmp_path / "report.json"
    code = main(["report", str(abdomen_nifti), "--model", str(tiny_ct_model), "--quantize", "int4",
                 "--allow-out-of-scope", "--max-new-tokens", "3", "--out", str(out)])
    assert code == 0
    assert json.loads(out.read_text())["provenance"]["quantization"] == "int4"


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantizing_as_the_weights_load_holds_one_float_weight_at_a_time(tmp_path, kind, monkeypatch):
    """From the checkpoint straight to 8 or 4 bits: the same layers and outputs as quantizing the loaded
    model, and while loading no quantizable layer but the one being quantized holds a float weight."""
    from napari_radreport.modeling import RadReportForConditionalGeneration
    from napari_radreport.modeling import quantize_on_load as on_load

    folder = tmp_path / "wide"
    wide_model().save_pretrained(folder)
    config_class, quantizer_class = on_load._registered()
    pending_weights_seen = []
    convert = quantizer_class.get_quantize_ops(quantizer_class(config_class(kind)))
    original = type(convert).convert

    def watched(self, input_dict, model=None, **kwargs):
        pending = [m for m in model.modules() if type(m).__name__ == "PendingLinear"
                   and m.weight.device.type != "meta"]
        pending_weights_seen.append(len(pending))
        return original(self, input_dict, model=model, **kwargs)

    monkeypatch.setattr(type(convert), "convert", watched)
    loaded = RadReportForConditionalGeneration.from_pretrained(
        folder, quantization_config=on_load.on_load_config(kind)).eval()
    assert pending_weights_seen and max(pending_weights_seen) == 0  # only the weight in hand is float
    names = {type(m).__name__ for m in loaded.modules()}
    assert "PendingLinear" not in names and ("Int8Linear" if kind == "int8" else "Int4Linear") in names
    after = RadReportForConditionalGeneration.from_pretrained(folder).eval()
    quantize_model(after, kind)
    ids, pixels = prompt(after), torch.randn(1, 1, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, pixel_values=pixels).logits,
                                   after(input_ids=ids, pixel_values=pixels).logits, atol=0, rtol=0)


def test_a_layer_the_checkpoint_lacks_is_quantized_after_loading(tmp_path):
    """allow_partial: a Linear weight missing from the file is initialised, then quantized like the rest."""
    from safetensors.torch import load_file, save_file

    from napari_radreport.modeling.loading import load_model

    from tiny_models import write_tiny_radreport

    folder = write_tiny_radreport(tmp_path / "tiny")
    weights = load_file(str(folder / "model.safetensors"))
    missing = "language_model.model.layers.0.mlp.up_proj.weight"
    del weights[missing]
    save_file(weights, str(folder / "model.safetensors"))
    loaded = load_model(folder, allow_partial=True, quantization="int8")
    assert any("missing" in note for note in loaded.incomplete)
    layer = loaded.model.get_submodule(missing.removesuffix(".weight"))
    assert type(layer).__name__ == "Int8Linear"
    assert not [m for m in loaded.model.modules() if type(m).__name__ == "PendingLinear"]


def test_a_model_with_adapters_is_quantized_after_them(tiny_ct_model, tmp_path):
    """LoRA wraps float Linear layers: the engine loads such a model at full precision, adds its adapters,
    then quantizes the base layers under them."""
    import shutil

    from napari_radreport.engine import Engine, Progress
    from napari_radreport.modeling import RadReportForConditionalGeneration
    from napari_radreport.modeling.lora import add_adapter, lora_config

    folder = tmp_path / "with-adapter"
    shutil.copytree(tiny_ct_model, folder)
    torch.manual_seed(3)
    peft = add_adapter(RadReportForConditionalGeneration.from_pretrained(folder), "findings",
                       lora_config(r=4, alpha=8, dropout=0.0, random_init=True))
    peft.save_pretrained(folder / "adapters")
    events = []
    engine = Engine()
    info = engine.load(folder, quantization="int8", on_event=events.append)
    assert info.adapters == ["findings"] and info.quantization == "int8"
    assert any(isinstance(e, Progress) and e.message == "Weights to 8-bit weights after the adapters"
               for e in events)
    model = engine.runner.loaded.model
    wrapped = [m for name, m in model.named_modules() if name.endswith("q_proj.base_layer")]
    assert wrapped and all(type(m).__name__ == "Int8Linear" for m in wrapped)
    engine.shutdown()


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="madvise on /proc maps: Linux")
def test_a_quantized_weights_file_pages_go_back_to_the_kernel(tmp_path):
    """The pages of a weight read through the safetensors memory map leave the process's resident memory
    once released, and reading the tensor again reads the file again; the process's own memory is never
    touched."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_radreport.modeling.quantize_on_load import release_file_pages

    values = torch.randn(1024, 1024)
    save_file({"w": values}, str(tmp_path / "w.safetensors"))

    def resident_file_kib() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssFile"))

    with safe_open(str(tmp_path / "w.safetensors"), "pt") as handle:
        mapped = handle.get_tensor("w")
        assert torch.equal(mapped, values)  # every page read: resident
        before = resident_file_kib()
        assert release_file_pages(mapped)
        assert before - resident_file_kib() >= 3 * 1024  # about 4 MiB of float32 went back
        assert torch.equal(mapped, values)  # read from the file again
    own = values.clone()
    assert not release_file_pages(own) and torch.equal(own, values)
