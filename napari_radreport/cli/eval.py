"""``radreport eval``: score predictions against a manifest's references, or a model on phantoms.

Presets ``rrg24``, ``m3d``, ``amos-mm``, ``diagnosis`` score a predictions file (``radreport predict``) with
the seed papers' exact computations (napari_radreport/evaluation/presets.py), with bootstrap intervals and
an optional paired comparison with a second predictions file. Preset ``phantom`` runs a model on synthetic
phantoms (``radreport phantoms``), reads back the findings it states and prints present and absent findings
apart, per finding sensitivity and specificity, each with its interval and a blind baseline beside it
(napari_radreport/evaluation/phantom_figures.py); the demo model's card quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

PRESETS = ("phantom", "rrg24", "m3d", "amos-mm", "diagnosis")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.preset != "phantom":
        from napari_radreport.cli.eval_predictions import eval_predictions

        return eval_predictions(args)
    if args.predictions:
        raise ValueError("the phantom preset runs a model (--model), it does not read --predictions")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    from napari_radreport.cli.eval_predictions import manifest_records
    from napari_radreport.engine import Engine
    from napari_radreport.engine.engine import default_model
    from napari_radreport.evaluation.phantom_figures import format_figures, phantom_figures
    from napari_radreport.evaluation.phantoms import evaluate_phantoms

    model = args.model or default_model()
    if model is None:
        raise ValueError("no --model given and this install has no demo model")
    records = manifest_records(args)  # the split ("all": every record) and --limit, as elsewhere
    engine = Engine()
    engine.allow_out_of_scope = True  # scoring runs every phantom, also those written before they were marked
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
    seconds = round(time.perf_counter() - started, 1)
    figures = phantom_figures(scores, resamples=args.bootstrap, seed=args.seed, level=args.level)
    result = {"preset": args.preset, "model": str(model), "weights_sha256": info.weights_sha256,
              "manifest": str(args.manifest), "split": args.split, "n_studies": len(records),
              "device": info.device, "seconds": seconds, **scores.summary(), "figures": figures}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(format_figures(figures))
    conflicts = result["conflicts"]
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(conflicts["by_kind"].items())) or "none"
    print(f"conflicts (the report against itself and the model's diagnosis): {conflicts['total']} in "
          f"{conflicts['with_conflicts']} of {conflicts['reports']} reports ({kinds})")
    return 0


def add_eval_commands(sub, common: argparse.ArgumentParser) -> None:
    ev = sub.add_parser("eval", parents=[common],
                        help="score predictions against references (or a model on phantoms)",
                        description="Score a predictions file against a manifest with a seed paper's exact "
                                    "metrics (rrg24, m3d, amos-mm, diagnosis), or run a model on phantoms "
                                    "(phantom).")
    ev.add_argument("--preset", choices=PRESETS, default="phantom")
    ev.add_argument("--manifest", required=True, help="the references (training-manifest format)")
    ev.add_argument("--predictions", help="radreport predict output to score (all presets but phantom)")
    ev.add_argument("--compare", metavar="PREDICTIONS_B",
                    help="a second system's predictions: paired comparison A - B")
    ev.add_argument("--model", help="phantom preset: model folder (default: the demo model)")
    ev.add_argument("--split", default="test", help="manifest split to score ('all' for every record)")
    ev.add_argument("--sections", nargs="+", choices=["findings", "impression"],
                    help="report sections to score (rrg24: both; m3d: findings)")
    ev.add_argument("--partial", action="store_true",
                    help="score only the studies that have predictions "
                         "(default: refuse when some are missing)")
    ev.add_argument("--limit", type=int, help="only the first N studies of the split")
    ev.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                    help="bootstrap resamples (of the studies, for phantom; 0: no intervals)")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ev.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    ev.add_argument("--wordnet", help="WordNet 3.0 folder for METEOR (default: found automatically)")
    ev.add_argument("--green-model", help="local GREEN model folder (amos-mm)")
    ev.add_argument("--radgraph-model", help="local RadGraph model folder (rrg24)")
    ev.add_argument("--chexbert-model", help="local CheXbert chexbert.pth (rrg24)")
    ev.add_argument("--chexbert-bert",
                    help="local bert-base-uncased folder for CheXbert's tokenizer and config")
    ev.add_argument("--bertscore-model", help="local model folder for the preset's BERTScore")
    ev.add_argument("--minilm-bertscore", action="store_true",
                    help="also a BERTScore-style F1 with the offline all-MiniLM-L6-v2 "
                         "(its own name; not the papers')")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--out", help="write the scores as JSON")
    ev.add_argument("--plot", help="write an SVG plot of the per-label scores (diagnosis)")
    ev.add_argument("--details", help="phantom preset: write each study's outputs as JSON lines")
    ev.set_defaults(func=cmd_eval)
