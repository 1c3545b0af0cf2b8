"""Step 11: will it fit? ``engine/memory_plan.py``'s estimate of a report's peak memory against the peak
measured while a random-weight model of real size loads and writes a report, each model in a fresh process.

The measuring process imports what the engine imports and reads the study first (a synthetic CT volume at
the model's input shape, so its preprocessing is the model's input and no more), then measures the peak
resident set while the engine loads the model and writes a two-section report with its diagnosis check:
Linux's high-water mark (VmHWM, reset before loading) minus the resident set before loading
(``bench/measure.PeakMemory``; elsewhere RSS sampled every 2 ms, and the result names the method); on a GPU,
what PyTorch's allocator reserved at most. On the CPU the weights are memory-mapped and count once their pages
are read.
The estimate is given the report's own prompt, answer and diagnosis lengths.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from napari_radreport.bench import random_model
from napari_radreport.bench.random_model import ModelSize

# M3D-LaMed's vision tower and projector in front of a TinyLlama-1.1B-shaped language model (grouped-query
# attention: 4 key/value heads of 32): weights dominate, as in real models.
M3D_VISION_1B_GQA = ModelSize(
    vision=dict(random_model.M3D_VISION_SMALL_LLAMA.vision),
    text={"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
          "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 4096},
    perceiver=dict(random_model.M3D_VISION_SMALL_LLAMA.perceiver),
    preprocess=dict(random_model.M3D_VISION_SMALL_LLAMA.preprocess),
    vocab_size=32000,
)
SIZES = {"quick": random_model.QUICK, "m3d-vision-small-llama": random_model.M3D_VISION_SMALL_LLAMA,
         "m3d-vision-1b-gqa": M3D_VISION_1B_GQA}
QUICK_SIZES = ("quick",)
FULL_SIZES = ("quick", "m3d-vision-small-llama", "m3d-vision-1b-gqa")
CHECK = "memory estimate / measured peak"


def synthetic_study(shape: list[int]):
    """A CT study of ``shape`` (z, y, x) at 1 mm: a smooth HU pattern, so any intensity recipe has a range."""
    import numpy as np

    from napari_radreport.io.study import ImageData, Study

    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    volume = (-1000 + 1400 * np.exp(-(x**2 + y**2 + z**2) * 2)).astype(np.int16)
    image = ImageData(array=volume, spacing=(1.0, 1.0, 1.0), modality="CT")
    return Study(kind="ct", images=[image], source=("synthetic-memory-bench",))


def _lengths(engine, study, questions: dict[str, str]) -> dict[str, int]:
    """The report's text prompt tokens (longest section) and its diagnosis' shared and tail tokens."""
    from napari_radreport.engine.prompts import diagnosis_prompt
    from napari_radreport.engine.runner import common_prefix_length

    runner = engine.runner
    first = runner.prompt(study, next(iter(questions.values())))[0]
    image = sum(1 for t in first if t == runner.image_token_id)
    longest = max(len(runner.prompt(study, q)[0]) for q in questions.values()) - image
    asked = [runner.prompt(study, diagnosis_prompt(runner.family.prompt_spec.tasks, label))[0]
             for label in engine.info.labels]
    shared = min(common_prefix_length(asked[0], ids) for ids in asked)
    return {"image_tokens": image, "prompt_tokens": longest, "diagnosis_prompt_tokens": shared - image,
            "diagnosis_tail_tokens": max(len(ids) - shared for ids in asked)}


def measure(folder: Path, answer_tokens: int, dtype: str = "auto") -> dict[str, Any]:
    """In this (fresh) process: load ``folder`` as the engine does, write a report; estimate vs peak."""
    import gc

    from napari_radreport.bench.measure import PeakMemory
    from napari_radreport.engine import memory_plan
    from napari_radreport.engine.decoding import GenerationSettings
    from napari_radreport.engine.engine import Engine
    from napari_radreport.engine.runner import ModelRunner  # noqa: F401 (imported before the baseline)
    from napari_radreport.modeling.checkpoints import read_config
    from napari_radreport.modeling.loading import load_model  # noqa: F401

    study = synthetic_study(read_config(folder)["preprocess"]["target_shape"])
    gc.collect()
    engine = Engine()
    with PeakMemory() as peak:
        info = engine.load(folder, device="auto", dtype=dtype)
        result = engine.report(study, settings=GenerationSettings(max_new_tokens=answer_tokens))
    lengths = _lengths(engine, study, result.questions)
    estimate = memory_plan.report_estimate(
        folder, info.dtype, device=info.device, prompt_tokens=lengths["prompt_tokens"],
        answer_tokens=answer_tokens, diagnosis_prompt_tokens=lengths["diagnosis_prompt_tokens"],
        diagnosis_tail_tokens=lengths["diagnosis_tail_tokens"])
    measured, method = _device_peak(info.device, peak)
    engine.unload()
    return {"device": info.device, "dtype": info.dtype, "labels": len(info.labels), **lengths,
            "answer_tokens": answer_tokens, "words_written": len(result.text.split()),
            "estimate": {k: _mib(v) for k, v in _terms(estimate).items()},
            "estimate_peak": "diagnosis" if estimate.batch > 1 else "report section",
            "measured_peak_added_mib": _mib(measured), "rss_before_mib": round(peak.start_mib, 1),
            "method": method, "ratio": round(estimate.total / measured, 3)}


def _device_peak(device: str, peak) -> tuple[float, str]:
    """(bytes, how measured): on a GPU what PyTorch's allocator reserved at most (the process held nothing
    there before loading), elsewhere the resident set's peak above its level before loading."""
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_reserved(device)), "torch.cuda.max_memory_reserved"
    return peak.added_mib * 2**20, peak.method


def _terms(estimate) -> dict[str, int]:
    return {"total": estimate.total, "weights": estimate.weight_bytes, "kv_cache": estimate.kv_cache,
            "activations": estimate.activations, "encoder": estimate.encoder, "overhead": estimate.overhead}


def _mib(count: int) -> float:
    return round(count / 2**20, 1)


def _measure_in_child(folder: Path, answer_tokens: int, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "napari_radreport.bench.memory_bench", str(folder), "--tokens",
               str(answer_tokens), "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"measuring {folder.name} failed: {last}")
    return json.loads(out.read_text())


def run(work: Path, quick: bool) -> dict[str, Any]:
    """Write each model of the variant, measure each in its own process; the ratios."""
    answer_tokens = 32 if quick else 64
    models = {}
    for name in QUICK_SIZES if quick else FULL_SIZES:
        folder = random_model.write_random_radreport(work / f"memory-{name}", SIZES[name], only_words=True)
        models[name] = _measure_in_child(folder, answer_tokens, work / f"memory-{name}.json")
        models[name]["weights_file_mib"] = _mib(sum(f.stat().st_size for f in folder.glob("*.safetensors")))
    ratios = [m["ratio"] for m in models.values()]
    return {"models": models, "answer_tokens": answer_tokens, "ratios": ratios,
            "worst_ratio": max(ratios, key=lambda r: abs(r - 1.0))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="estimate vs measured peak memory of one model folder")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    args.json.write_text(json.dumps(measure(args.folder, args.tokens, args.dtype), indent=2))


if __name__ == "__main__":
    main()
