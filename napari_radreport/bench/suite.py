"""The whole benchmark: every step in its own process, the figures gathered, the
ratios checked and printed."""

from __future__ import annotations

import datetime
import functools
import json
import operator
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from napari_radreport.bench.steps import CHEST_SERIES, SHARED_DATA

UI_STUDY = SHARED_DATA / "ct" / "totalseg_abdomen_pelvis.nii.gz"


class BenchError(RuntimeError):
    """A step failed or its input is missing; the message names the step and the reason."""


def _run(step: str, command: list[str], out: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one step's process; its JSON output, or a BenchError with the last line it printed."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchError(f"step {step} failed: {last}")
    return json.loads(out.read_text())


def _run_step(step: str, work: Path, *extra: str, quick: bool, progress) -> dict[str, Any]:
    from napari_radreport.engine.threads import without_wait_default

    out = work / f"{step}-{len(list(work.glob('*.json')))}.json"
    command = [sys.executable, "-m", "napari_radreport.bench.steps", step, "--json", str(out), *extra]
    if quick:
        command.append("--quick")
    progress(f"[bench] {step} {' '.join(extra)}".rstrip())
    # the training step waits as `radreport train` does (it spins); the others as the engine does
    return _run(step, command, out, env=without_wait_default() if step == "train" else None)


def _ui_step(model: Path, work: Path, tokens: int, progress) -> dict[str, Any]:
    command = [sys.executable, "-m", "napari_radreport.bench.ui_stall", str(model), str(UI_STUDY),
               "--tokens", str(tokens), "--json", str(work / "ui.json")]
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        if shutil.which("xvfb-run") is None:
            return {"skipped": "no display and no xvfb-run: the UI step needs an X server"}
        command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *command]
    progress("[bench] ui (a real napari viewer)")
    return _run("ui", command, work / "ui.json", env={**os.environ, "QT_API": "pyqt6"})


def run_suite(*, quick: bool, series: Path = CHEST_SERIES, ui: bool = True, progress=print) -> dict[str, Any]:
    """All figures as one dict (``quick``: small models and fewer repeats, for CI)."""
    from napari_radreport.bench.measure import machine_description

    if not series.is_dir():
        raise BenchError(
            f"{series}: no such DICOM series folder (the benchmarks read the 64-slice chest CT of "
            "../shared/data; give another with --series)"
        )
    repeats = "3" if quick else "5"
    results: dict[str, Any] = {
        "variant": "quick" if quick else "full",
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": machine_description(),
        "command": "radreport bench" + (" --quick" if quick else ""),
    }
    with tempfile.TemporaryDirectory(prefix="radreport-bench-") as tmp:
        work = Path(tmp)
        model = work / "model"
        series_arg = ("--series", str(series))
        results["dicom"] = _run_step(
            "dicom", work, *series_arg, "--repeats", repeats, quick=quick, progress=progress
        )
        results["preprocess"] = _run_step("preprocess", work, *series_arg, "--repeats", repeats, quick=quick,
                                          progress=progress)
        encoders = [("m3d", "2", "3")] if quick else [("m3d", None, "3"), ("e3d-gpt", None, "1")]
        results["encoder"] = {}
        for size, layers, count in encoders:
            extra = ("--size", size, "--repeats", count) + (("--layers", layers) if layers else ())
            results["encoder"][size] = _run_step("encoder", work, *extra, quick=quick, progress=progress)
        _run_step("write-model", work, "--model", str(model), quick=quick, progress=progress)
        results["llm"] = _run_step("llm", work, "--model", str(model), *series_arg, "--repeats", "3",
                                   quick=quick, progress=progress)
        results["threads"] = _run_step("threads", work, "--model", str(model), quick=quick, progress=progress)
        results["train"] = _run_step("train", work, "--repeats", "3" if quick else "5", quick=quick,
                                     progress=progress)
        results["startup"] = _run_step("startup", work, "--repeats", repeats, quick=quick, progress=progress)
        results["memory"] = _run_step("memory", work, quick=quick, progress=progress)
        results["batch"] = _run_step("batch", work, quick=quick, progress=progress)
        results["cpu_decode"] = _run_step("cpu-decode", work, quick=quick, progress=progress)
        if ui:
            results["ui"] = _ui_step(model, work, 48 if quick else 200, progress)
    results["checks"] = check(results, quick)
    return results


def _at(*keys: str):
    """The figure at ``results[keys[0]][keys[1]]...``."""
    return lambda results: functools.reduce(operator.getitem, keys, results)


# Targets of the issue (full run) and the generous bounds CI checks on the quick run.
TARGETS = {
    "dicom: pydicom loop / ours": (_at("dicom", "ratios", "pydicom_loop_over_ours"), 1.0, 0.5),
    "preprocess e3d-gpt: MONAI / ours": (_at("preprocess", "e3d-gpt", "monai_over_ours"), 1.0, 0.5),
    "preprocess m3d: MONAI / ours": (_at("preprocess", "m3d", "monai_over_ours"), 1.0, 0.5),
    "encoder m3d: explicit / SDPA": (_at("encoder", "m3d", "explicit_over_ours"), 1.0, 1.05),
    "streaming decode: engine / generate": (_at("llm", "streaming", "decode_rate_ratio"), 0.95, 0.7),
    "follow-up first token: recompute / cached": (_at("llm", "follow_up", "first_token_ratio"), 5.0, 3.0),
    "follow-up first token: image cached only / cached":
        (_at("llm", "follow_up", "first_token_ratio_vs_image_cached"), 1.0, 1.1),
    "diagnosis: 18 passes (encode each) / shared":
        (_at("llm", "diagnosis", "ratio_vs_encode_each"), 1.0, 1.5),
    "diagnosis: 18 passes (encode once) / shared":
        (_at("llm", "diagnosis", "ratio_vs_encode_once"), 1.0, 1.2),
    "training step: one padded pass / grouped by length": (_at("train", "one_pass_over_grouped"), 1.2, 1.05),
    "start-up: import torch + transformers / radreport --help":
        (_at("startup", "torch_import_over_help"), 3.0, 2.0),
    "predict batched / one at a time": (_at("batch", "ratio"), 3.0, 1.0),
    "decode speed under load / idle": (_at("threads", "ratio"), 0.5, 0.2),
    "decode under load: engine's threads / torch's defaults":
        (_at("threads", "under_load_ours_over_default"), 2.0, 1.3),
}
# Checks of a step that runs only where its reference is installed (llama.cpp): (step, figure, target, CI
# bound, "at_least" or "at_most"); a skipped step's row says why and does not fail.
OPTIONAL = {
    "cpu decode 7b int8: ours / llama.cpp": ("cpu_decode", "int8_tokens_per_s_ratio", 0.7, 0.5, "at_least"),
    "cpu decode 7b int8 peak memory: ours / llama.cpp":
        ("cpu_decode", "int8_peak_memory_ratio", 1.2, 1.5, "at_most"),
}
# Ratios that must stay within (low, high): the target (full run), the CI's generous bounds (quick).
WITHIN = {
    "memory estimate / measured peak": (_at("memory", "ratios"), (0.85, 1.15), (0.6, 1.6)),
}
SAME_RESULTS = {
    "dicom: same voxels as pydicom and SimpleITK": lambda r: all(r["dicom"]["same_voxels"].values()),
    "preprocess m3d: equals MONAI":
        lambda r: r["preprocess"]["m3d"].get("vs_monai_chain", {}).get("max_abs", 1) < 1e-4,
    "encoder: SDPA equals explicit attention":
        lambda r: all(e["max_abs_difference"] < 1e-3 for e in r["encoder"].values()),
    "streaming: same text as generate": _at("llm", "streaming", "same_text"),
    "follow-up: same answer cached or not": _at("llm", "follow_up", "same_answer"),
    "diagnosis: same probabilities": lambda r: r["llm"]["diagnosis"]["max_probability_difference"] < 1e-4,
    "training step: same loss grouped or not":
        lambda r: r["train"]["loss_difference_grouped_vs_one_pass"] < 1e-5,
    "start-up: no torch in radreport --help or a dock": lambda r: not r["startup"]["heavy_modules_loaded"],
    "predict batched: same predictions as one at a time":
        lambda r: r["batch"]["same_outputs"] and r["batch"]["report_only"]["same_outputs"],
}


def within_checks(results: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Each WITHIN row: every value (one per model) between the target's (full) or CI's (quick) bounds; the
    row's value is the one farthest from 1."""
    rows = []
    for name, (get, target, bound) in WITHIN.items():
        values = get(results)
        low, high = bound if quick else target
        rows.append({"check": name, "value": max(values, key=lambda v: abs(v - 1.0)), "values": values,
                     "between": [low, high], "ok": all(low <= v <= high for v in values)})
    return rows


def optional_checks(results: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Each OPTIONAL row: its figure against the target (full) or CI bound (quick), or why it was skipped."""
    rows = []
    for name, (step, figure, target, bound, side) in OPTIONAL.items():
        section = results.get(step, {"skipped": f"step {step} did not run"})
        if "skipped" in section:
            rows.append({"check": name, "value": None, "skipped": section["skipped"], "ok": True})
            continue
        value, limit = section[figure], bound if quick else target
        ok = value >= limit if side == "at_least" else value <= limit
        rows.append({"check": name, "value": value, side: limit, "ok": bool(ok)})
    return rows


def check(results: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Each ratio against its target (full) or CI bound (quick), and each output comparison."""
    rows = []
    for name, (get, target, bound) in TARGETS.items():
        value = get(results)
        limit = bound if quick else target
        rows.append({"check": name, "value": value, "at_least": limit, "ok": bool(value >= limit)})
    rows += within_checks(results, quick)
    rows += optional_checks(results, quick)
    for name, get in SAME_RESULTS.items():
        rows.append({"check": name, "value": bool(get(results)), "ok": bool(get(results))})
    ui = results.get("ui", {})
    if "longest_stall_share_of_stream" in ui:
        share = ui["longest_stall_share_of_stream"]
        rows.append(
            {"check": "ui: longest stall / stream time", "value": share, "at_most": 0.25, "ok": share <= 0.25}
        )
    return rows
