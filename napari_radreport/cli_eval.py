"""``radreport eval``: score a model on a manifest's held-out split.

Preset ``phantom``: findings stated in the reports, answers to questions and diagnosis on synthetic phantoms
(``radreport phantoms``); the demo model's card quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

PRESETS = ("phantom",)


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _cmd_eval(args: argparse.Namespace) -> int:
    from napari_radreport.engine import Engine
    from napari_radreport.engine.engine import default_model
    from napari_radreport.evaluation.phantoms import evaluate_phantoms
    from napari_radreport.training.manifest import read_manifest

    model = args.model or default_model()
    if model is None:
        raise ValueError("no --model given and this install has no demo model")
    records = read_manifest(args.manifest, split=args.split)
    if not records:
        raise ValueError(f"{args.manifest}: no records in split {args.split!r}")
    records = records[: args.limit] if args.limit else records
    engine = Engine()
    info = engine.load(model, device=args.device)
    started, done = time.perf_counter(), []
    with (Path(args.details).open("w", encoding="utf-8") if args.details else nullcontext()) as details:

        def on_record(detail: dict) -> None:
            done.append(detail["id"])
            if details is not None:
                details.write(json.dumps(detail) + "\n")
            print(f"\rradreport: {len(done)}/{len(records)} studies", end="", file=sys.stderr, flush=True)

        try:
            scores = evaluate_phantoms(engine, records, on_record=on_record)
        finally:
            print(file=sys.stderr)
    result = {"preset": args.preset, "model": str(model), "weights_sha256": info.weights_sha256,
              "manifest": str(args.manifest), "split": args.split, "n_studies": len(records),
              "device": info.device, "seconds": round(time.perf_counter() - started, 1), **scores.summary()}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    for part in ("findings", "impression", "questions", "diagnosis"):
        row = result[part]
        kinds = ", ".join(f"{k} {_percent(v['accuracy'])}" for k, v in row["by_kind"].items())
        print(f"{part}: {_percent(row['accuracy'])} of {row['n']} ({kinds})")
    return 0


def add_eval_commands(sub, common: argparse.ArgumentParser) -> None:
    ev = sub.add_parser("eval", parents=[common], help="score a model on a manifest's held-out split")
    ev.add_argument("--preset", choices=PRESETS, default="phantom")
    ev.add_argument("--manifest", required=True)
    ev.add_argument("--model", help="model folder (default: the demo model)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--limit", type=int, help="only the first N studies of the split")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--out", help="write the scores as JSON")
    ev.add_argument("--details", help="write each study's report, answers and diagnosis as JSON lines")
    ev.set_defaults(func=_cmd_eval)
