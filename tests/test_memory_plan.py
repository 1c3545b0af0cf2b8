"""Will it fit? The memory estimate of ``engine/memory_plan.py`` against numbers worked out by hand from a
model's safetensors headers and config.json, the line that offers what fits, ``radreport models``, and the
benchmark step that checks the estimate against measured peaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_radreport.cli import main
from napari_radreport.engine import device as dev
from napari_radreport.engine import memory_plan

MIB = 2**20
SLACK = memory_plan.ALLOCATOR_SLACK["cpu"]  # resident bytes per live activation byte on the CPU (measured)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny CT model: ViT3D 8x64x64 in 4x16x16 patches (33 tokens of width 32, MLP 64), spp pooling to 4
    image tokens, a Llama of 2 layers, width 32, 4 heads, 2 key/value heads (head dim 8)."""
    from tiny_models import write_tiny_radreport

    return write_tiny_radreport(tmp_path_factory.mktemp("memory") / "tiny-ct")


def _parts_by_hand(folder: Path) -> dict[str, int]:
    """Elements per part, as safetensors itself reads the tensors."""
    from safetensors.numpy import load_file

    counts = {"vision": 0, "perceiver": 0, "language": 0, "other": 0}
    for name, array in load_file(str(folder / "model.safetensors")).items():
        part = {"vision_tower": "vision", "perceiver": "perceiver", "language_model": "language"}
        counts[part.get(name.split(".")[0], "other")] += array.size
    return counts


def test_weights_come_from_the_headers_at_each_precision(tiny):
    counts = _parts_by_hand(tiny)
    full = memory_plan.estimate(tiny, "float32", prompt_tokens=10, answer_tokens=20)
    half = memory_plan.estimate(tiny, "bfloat16", prompt_tokens=10, answer_tokens=20)
    assert full.weights == {part: 4 * n for part, n in counts.items()} and counts["vision"] > 0
    assert half.weights == {part: 2 * n for part, n in counts.items()}
    import torch

    assert full.weight_bytes == dev.weights_bytes(tiny, torch.float32)


def test_quantised_weights_count_only_linear_layers(tmp_path, tiny):
    """int8: one byte per Linear weight (the output layer too) and a bfloat16 scale per output row; int4: half
    a byte and a bfloat16 scale and zero per 64 values; embeddings, norms and biases stay in the compute
    dtype (float32 on the CPU, bfloat16 on a GPU)."""
    from safetensors.numpy import save_file

    folder = tmp_path / "hand"
    folder.mkdir()
    shutil.copy(tiny / "config.json", folder / "config.json")
    save_file({"language_model.model.layers.0.mlp.up_proj.weight": np.zeros((128, 64), np.float32),
               "language_model.model.embed_tokens.weight": np.zeros((128, 64), np.float32),
               "language_model.lm_head.weight": np.zeros((128, 64), np.float32),
               "language_model.model.norm.weight": np.zeros(64, np.float32),
               "vision_tower.blocks.0.attn.qkv.weight": np.zeros((192, 64), np.float32),
               "vision_tower.blocks.0.attn.qkv.bias": np.zeros(192, np.float32),
               "perceiver.projector.0.weight": np.zeros((64, 64), np.float32)},
              str(folder / "model.safetensors"))
    rows = 128 + 128 + 192 + 64
    linear, rest = rows * 64, 128 * 64 + 64 + 192
    for device, s in (("cpu", 4), ("cuda", 2)):
        eight = memory_plan.estimate(folder, "int8", prompt_tokens=1, answer_tokens=1, device=device)
        four = memory_plan.estimate(folder, "int4", prompt_tokens=1, answer_tokens=1, device=device)
        assert eight.weight_bytes == linear + 2 * rows + s * rest  # bfloat16 scales
        assert four.weight_bytes == linear // 2 + 2 * 2 * rows + s * rest  # one group of 64 per row
    assert eight.at_precision["float32"] == 4 * (linear + rest)


def test_key_value_cache_activations_and_encoder_follow_the_config(tiny):
    config = json.loads((tiny / "config.json").read_text())
    vocab = config["text_config"]["vocab_size"]
    one = memory_plan.estimate(tiny, "float32", prompt_tokens=10, answer_tokens=20)
    assert one.image_tokens == 4  # a (2, 4, 4) grid pooled by 2 where an axis is longer than 1
    per_token = 2 * 2 * 8 * 4  # keys and values x 2 kv heads x head dim 8 x float32, per layer
    assert one.kv_cache == per_token * (2 + 2) * (4 + 10 + 20)  # 2 layers + 2 for a step's concatenation
    assert one.activations == int(14 * (4 * 32 + 3 * 64) * 4 * SLACK) + vocab * 12
    pixels, tokens = 8 * 64 * 64, 2 * 4 * 4 + 1
    embed, block = pixels * 4 + tokens * 32 * 4, tokens * max(7 * 32, 2 * 32 + 2 * 64) * 4
    assert one.encoder == int((pixels * 4 + max(embed, block)) * SLACK)
    assert one.overhead == memory_plan.OVERHEAD_BYTES["cpu"]
    assert one.total == one.weight_bytes + one.kv_cache + one.activations + one.encoder + one.overhead
    batch = memory_plan.estimate(tiny, "float32", prompt_tokens=10, answer_tokens=5, batch=3)
    assert batch.kv_cache == per_token * 4 * ((1 + 3) * 14 + 3 * 5)  # the cached prompt + 3 continued copies
    report = memory_plan.report_estimate(tiny, "float32", prompt_tokens=10, answer_tokens=20)
    assert report.total >= one.total and report.batch in (1, 18)


def test_a_wide_encoder_peaks_in_its_mlp(tmp_path, tiny):
    """Width 256, MLP 1024 on 33 tokens: residual + norm + two MLP-wide tensors outgrow the pixels."""
    folder = tmp_path / "wide"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"].update(hidden_size=256, intermediate_size=1024)
    (folder / "config.json").write_text(json.dumps(config))
    wide = memory_plan.estimate(folder, "float32", prompt_tokens=1, answer_tokens=1)
    half = memory_plan.estimate(folder, "bfloat16", prompt_tokens=1, answer_tokens=1)
    pixels, tokens = 8 * 64 * 64, 33
    assert wide.encoder == int((pixels * 4 + tokens * (2 * 256 + 2 * 1024) * 4) * SLACK)
    # bfloat16: the float32 pixels, their bfloat16 copy, then the blocks at 2 bytes a value
    expected = pixels * 4 + pixels * 2 + tokens * (2 * 256 + 2 * 1024) * 2
    assert half.encoder == int(expected * SLACK)


def test_sliding_window_layers_hold_at_most_their_window(tmp_path):
    from tiny_models import write_tiny_gemma3

    folder = write_tiny_gemma3(tmp_path / "gemma", sliding_window=16)
    text = json.loads((folder / "config.json").read_text())["text_config"]
    sliding = sum(t == "sliding_attention" for t in text["layer_types"])
    estimate = memory_plan.estimate(folder, "float32", prompt_tokens=10, answer_tokens=20)
    tokens = 4 * 85 + 10 + 20  # 4 tokens per image x MedGemma's 85 CT slices
    assert estimate.image_tokens == 4 * 85 and sliding >= 1
    held = (2 - sliding) * tokens + sliding * 16 + 2 * tokens
    assert estimate.kv_cache == 2 * 2 * 8 * 4 * held


def _wide(tmp_path: Path) -> Path:
    """A CT model 64 wide, vocabulary 128: every Linear layer has whole 4-bit groups and row blocks."""
    import dataclasses

    from napari_radreport.bench.random_model import TINY_CT, write_random_radreport

    wide = {"hidden_size": 64, "intermediate_size": 128}
    size = dataclasses.replace(TINY_CT, vision={**TINY_CT.vision, **wide},
                               text={**TINY_CT.text, **wide, "vocab_size": 128})
    return write_random_radreport(tmp_path / "wide", size)


def test_a_model_that_does_not_fit_is_offered_what_does(tiny, monkeypatch, tmp_path):
    need = memory_plan.report_estimate(tiny, "float32").total
    assert memory_plan.fits(memory_plan.report_estimate(tiny, "float32"), int(need * 1.2))
    monkeypatch.setattr(dev, "free_bytes", lambda _device: int(need * memory_plan.MARGIN) + 1)
    assert dev.memory_warning(tiny, "cpu", "float32") is None
    half = memory_plan.report_estimate(tiny, "bfloat16").total
    free = int(half * memory_plan.MARGIN) + 1
    monkeypatch.setattr(dev, "free_bytes", lambda _device: free)
    line = dev.memory_warning(tiny, "cpu", "float32")
    size = memory_plan.size_text
    assert line.startswith(f"tiny-ct on cpu needs about {size(need)} in float32, {size(free)} free: "
                           f"bfloat16 needs {size(half)} (fits); loading may fail")
    monkeypatch.setattr(dev, "free_bytes", lambda _device: MIB)
    assert "none fits; accelerate's offload" in dev.memory_warning(tiny, "cpu", "float32")
    wide = _wide(tmp_path)  # every Linear of whole 4-bit groups, so that 4 bits are smaller than 8
    gpu = {p: memory_plan.report_estimate(wide, p, device="cuda").total for p in ("int8", "int4")}
    free = int(gpu['int4'] * memory_plan.MARGIN) + 1
    assert gpu["int8"] * memory_plan.MARGIN > free
    line = memory_plan.offer(wide, "float32", free, "cuda")
    assert ", 8-bit weights " in line and line.endswith(f"4-bit weights {size(gpu['int4'])} (fits)")


def test_radreport_models_shows_what_a_report_needs(tiny, capsys):
    device = dev.resolve_device("auto")
    dtype = str(dev.resolve_dtype(device)).removeprefix("torch.")
    expected = memory_plan.report_estimate(tiny, dtype, device=device)
    assert main(["models", str(tiny)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("tiny-ct: radreport, ")
    assert f"; a report needs about {memory_plan.size_text(expected.total)} in {dtype} on {device}" in line
    assert main(["models", str(tiny), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)[0]["memory_estimate"]
    assert listed["total_bytes"] == expected.total and listed["device"] == device
    assert listed["kv_cache_bytes"] == expected.kv_cache and set(listed["weights_at_precision"]) == set(
        memory_plan.PRECISIONS)


@pytest.mark.slow
def test_memory_bench_quick_variant_checks_the_estimate_against_the_measured_peak(tmp_path):
    from napari_radreport.bench import steps
    from napari_radreport.bench.suite import within_checks

    out = tmp_path / "memory.json"
    steps.main(["memory", "--quick", "--json", str(out)])
    result = json.loads(out.read_text())
    model = result["models"]["quick"]
    assert model["measured_peak_added_mib"] > model["weights_file_mib"] and model["labels"] == 18
    assert model["estimate_peak"] == "diagnosis" and model["words_written"] > 0
    (row,) = within_checks({"memory": result}, quick=True)
    assert row["check"] == "memory estimate / measured peak" and row["ok"], row
    assert 0.6 <= model["ratio"] <= 1.6
