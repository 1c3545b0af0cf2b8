"""The benchmark suite: its quick variant end to end (ratios within generous bounds, outputs equal to the
baselines'), and the measuring tools it rests on. Never absolute times."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_radreport.bench.measure import PeakMemory, ratio, timed, timed_interleaved

pytestmark = pytest.mark.slow


def test_peak_memory_sees_a_short_lived_allocation_and_timed_takes_the_median():
    with PeakMemory() as peak:
        block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
        del block
    assert 60 <= peak.added_mib <= 80, peak
    calls = iter([0.0, 0.0, 0.0, 0.0])
    result = timed(lambda: next(calls), repeats=3, warmup=1)
    assert len(result.runs) == 3 and result.seconds == sorted(result.runs)[1]
    assert ratio(2.0, 0.5) == 4.0


def test_interleaved_timing_runs_the_calls_round_by_round():
    order: list[str] = []
    results = timed_interleaved({"a": lambda: order.append("a") or 1, "b": lambda: order.append("b") or 2},
                                repeats=3, warmup=1)
    assert order == ["a", "b"] * 4  # one warm-up round, then three timed rounds, never a-a-a then b-b-b
    assert ([len(results[k].runs) for k in "ab"] == [3, 3]
            and (results["a"].result, results["b"].result) == (1, 2))


def test_explicit_attention_baseline_computes_the_same_encoder():
    import torch

    from napari_radreport.bench.encoder_bench import explicit_forward
    from napari_radreport.modeling.configuration import ViT3DConfig
    from napari_radreport.modeling.vit3d import ViT3DEncoder

    config = ViT3DConfig(image_size=[8, 32, 32], patch_size=[4, 8, 8], hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    encoder = ViT3DEncoder(config).eval()
    pixels = torch.rand(1, 1, 8, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(explicit_forward(encoder, pixels), encoder(pixels), atol=1e-5, rtol=1e-5)


def test_quick_benchmark_meets_every_bound_and_writes_its_tables(chest_series, tmp_path, capsys):
    from napari_radreport.cli import main

    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    assert main(["bench", "--quick", "--series", str(chest_series), "--json", str(out), "--markdown", str(md),
                 "--strict"]) == 0, capsys.readouterr().out
    results = json.loads(out.read_text())
    failed = [c for c in results["checks"] if not c["ok"]]
    assert not failed, failed
    names = {c["check"] for c in results["checks"]}
    assert {"streaming decode: engine / generate", "follow-up first token: recompute / cached",
            "ui: longest stall / stream time", "start-up: no torch in radreport --help or a dock"} <= names
    assert results["startup"]["heavy_modules_loaded"] == [] and "### 9. Start-up" in md.read_text()
    assert "memory estimate / measured peak" in names and "### 11. Will it fit?" in md.read_text()
    assert results["llm"]["model"]["image_tokens"] == 64 and results["dicom"]["shape"] == [64, 512, 512]
    text = md.read_text()
    assert str(results["llm"]["streaming"]["decode_rate_ratio"]) in text and "### Checks" in text
