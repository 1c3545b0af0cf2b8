"""Batched prediction: studies per hour of ``radreport predict --batch-size N`` against one study at a time,
on the demo model over synthetic chest CT phantoms, and whether both write the same predictions.

Both runs go through ``batch_predict.run_predictions`` with the command line's default settings (greedy,
256 new tokens) into files of their own, from empty caches, after one warm-up study; the outputs are compared
line by line (the ``_meta`` line aside: it holds the creation time). Measured for the default tasks (report,
answers, diagnosis) and for the report alone.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

QUICK = {"studies": 6, "batch_size": 3}
FULL = {"studies": 16, "batch_size": 8}
TASKS = ("report", "answers", "diagnosis")


def _timed_run(engine, manifest: Path, out: Path, tasks: tuple[str, ...], batch_size: int) -> float:
    """Seconds ``run_predictions`` takes over every study of ``manifest``, from empty caches."""
    from napari_radreport.batch_predict import RunPlace, run_meta, run_predictions
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.engine.decoding import GenerationSettings

    settings = GenerationSettings()
    records = read_manifest(manifest)
    meta = run_meta(engine.info, list(tasks), settings, manifest, "all")
    engine.runner.clear()
    t0 = time.perf_counter()
    run_predictions(engine, records, out, meta, list(tasks), settings, place=RunPlace(0, 1, 0),
                    batch_size=batch_size)
    return time.perf_counter() - t0


def compare(engine, manifest: Path, folder: Path, tasks: tuple[str, ...], batch_size: int) -> dict[str, Any]:
    """Studies per hour one at a time and ``batch_size`` at a time, their ratio, whether the outputs agree."""
    from napari_radreport.data.manifest import read_manifest

    count = len(read_manifest(manifest))
    one_s = _timed_run(engine, manifest, folder / "one.jsonl", tasks, 1)
    batched_s = _timed_run(engine, manifest, folder / "batched.jsonl", tasks, batch_size)
    one = (folder / "one.jsonl").read_text().splitlines()[1:]
    batched = (folder / "batched.jsonl").read_text().splitlines()[1:]
    return {"tasks": list(tasks), "studies": count, "batch_size": batch_size,
            "one_at_a_time_studies_per_hour": round(3600 * count / one_s, 1),
            "batched_studies_per_hour": round(3600 * count / batched_s, 1),
            "ratio": round(one_s / batched_s, 2), "same_outputs": one == batched and len(one) == count}


def run(quick: bool) -> dict[str, Any]:
    """The figures for the default tasks (top-level keys) and for the report alone (``report_only``)."""
    import torch

    from napari_radreport.batch_predict import predict_study
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.data.phantoms.generate import write_phantoms
    from napari_radreport.engine.decoding import GenerationSettings
    from napari_radreport.engine.engine import Engine

    size = QUICK if quick else FULL
    engine = Engine()
    engine.allow_out_of_scope = True
    try:
        engine.load(None, device="cpu")
        with tempfile.TemporaryDirectory(prefix="radreport-batch-bench-") as tmp:
            folder = Path(tmp)
            manifest = write_phantoms(folder / "phantoms", size["studies"], seed=7, val=0.0, test=0.0)
            predict_study(engine, read_manifest(manifest)[0], TASKS, GenerationSettings())  # warm-up
            result = compare(engine, manifest, folder, TASKS, size["batch_size"])
            (folder / "one.jsonl").unlink()
            (folder / "batched.jsonl").unlink()
            result["report_only"] = compare(engine, manifest, folder, ("report",), size["batch_size"])
    finally:
        engine.shutdown()
    result.update(model="demo", device="cpu", torch_threads=torch.get_num_threads())
    return result


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))
