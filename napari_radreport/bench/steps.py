"""One benchmark step in this process: ``python -m napari_radreport.bench.steps STEP --json OUT [--quick]``.

``radreport bench`` runs every step in a fresh process, so that each step's peak memory is its own and no
step inherits another's threads, caches or allocator state.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

SHARED_DATA = Path(os.environ.get("RADREPORT_SHARED_DATA",
                                  Path(__file__).resolve().parents[2].parent / "shared" / "data"))
CHEST_SERIES = SHARED_DATA / "ct" / "lung_dx_a0001_chest_kernelB"


def _study(series: Path):
    from napari_radreport import load_study

    return load_study(series)


def step_dicom(args) -> dict[str, Any]:
    from napari_radreport.bench import loading_bench

    return loading_bench.run(args.series, args.repeats)


def step_preprocess(args) -> dict[str, Any]:
    from napari_radreport.bench import preprocess_bench

    return preprocess_bench.run(_study(args.series), args.repeats)


def step_encoder(args) -> dict[str, Any]:
    from napari_radreport.bench import encoder_bench

    return encoder_bench.run(args.size, args.repeats, layers=args.layers)


def step_write_model(args) -> dict[str, Any]:
    from napari_radreport.bench import random_model

    size = random_model.QUICK if args.quick else random_model.M3D_VISION_SMALL_LLAMA
    random_model.write_random_radreport(args.model, size, only_words=True)
    return {"folder": str(args.model)}


def step_llm(args) -> dict[str, Any]:
    """Generation, follow-up and diagnosis on one loaded model; the main thread never runs torch itself."""
    from napari_radreport.bench.llm_bench import LlmBench

    bench = LlmBench(args.model, _study(args.series), args.repeats)
    tokens, answer = (32, 8) if args.quick else (64, 16)
    result = {"model": bench.describe(), "first_token": bench.first_token(tokens),
              "streaming": bench.streaming(tokens), "follow_up": bench.follow_up(answer),
              "diagnosis": bench.diagnosis()}
    result["streaming"]["with_a_second_thread_team"] = bench.streaming_with_second_team(tokens)
    bench.close()
    return result


def step_train(args) -> dict[str, Any]:
    from napari_radreport.bench import train_bench

    return train_bench.run(args.repeats)


def step_startup(args) -> dict[str, Any]:
    from napari_radreport.bench import startup_bench

    return startup_bench.run(args.repeats)


def step_memory(args) -> dict[str, Any]:
    """The memory estimate against measured peaks, each model loaded in a fresh process of its own."""
    import tempfile

    from napari_radreport.bench import memory_bench

    with tempfile.TemporaryDirectory(prefix="radreport-memory-") as work:
        return memory_bench.run(Path(work), args.quick)


def step_threads(args) -> dict[str, Any]:
    """The engine's decoding idle and beside a busy torch job, with its thread policy and torch's defaults."""
    from napari_radreport.bench import thread_bench

    return thread_bench.run(args.model, args.quick)


def step_batch(args) -> dict[str, Any]:
    """``radreport predict --batch-size N`` against one study at a time on the demo model."""
    from napari_radreport.bench import batch_bench

    return batch_bench.run(args.quick)


def step_cpu_decode(args) -> dict[str, Any]:
    """Decoding a Llama-2-7B-shaped model on the CPU, ours against llama.cpp (skipped without it)."""
    from napari_radreport.bench import cpu_decode_bench

    keep = os.environ.get(cpu_decode_bench.WORK_ENV)
    return cpu_decode_bench.run(args.quick, keep=Path(keep) if keep else None)


STEPS = {"dicom": step_dicom, "preprocess": step_preprocess, "encoder": step_encoder,
         "write-model": step_write_model, "llm": step_llm, "train": step_train, "startup": step_startup,
         "memory": step_memory, "threads": step_threads, "batch": step_batch, "cpu-decode": step_cpu_decode}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run one benchmark step")
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--series", type=Path, default=CHEST_SERIES)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--size", choices=["m3d", "e3d-gpt"], default="m3d")
    parser.add_argument("--layers", type=int)
    args = parser.parse_args(argv)
    args.json.write_text(json.dumps(STEPS[args.step](args), indent=2))


if __name__ == "__main__":
    main()
