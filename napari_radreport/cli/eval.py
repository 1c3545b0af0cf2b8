"""``radreport eval``: score predictions against a manifest's references, or a model on phantoms.

Presets ``rrg24``, ``m3d``, ``amos-mm``, ``diagnosis`` score a predictions file (``radreport predict``) with
the seed papers' exact computations (napari_radreport/evaluation/presets.py), with bootstrap intervals and
an optional paired comparison with a second predictions file. Preset ``phantom`` runs a model on synthetic
phantoms (``radreport phantoms``), reads back the findings it states and prints present and absent findings
apart, per finding sensitivity and specificity, each with its interval and a blind baseline beside it
(napari_radreport/evaluation/phantom_figures.py); the demo model's card quotes it. Preset ``grounding`` runs a
model's ``Engine.ground`` on each study and scores where each finding sentence points against the manifest's
masks (napari_radreport/evaluation/grounding.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

from napari_radreport.cli.model_flags import add_precision_flags

PRESETS = ("phantom", "grounding", "rrg24", "m3d", "amos-mm", "diagnosis")


def _load_engine(args: argparse.Namespace):
    """The engine with ``--model`` (default: the demo model) loaded, and its load info."""
    from napari_radreport.engine import Engine
    from napari_radreport.engine.engine import default_model

    model = args.model or default_model()
    if model is None:
        raise ValueError("no --model given and this install has no demo model")
    engine = Engine()
    engine.allow_out_of_scope = True  # scoring runs every study, also phantoms written before their mark
    return engine, model, engine.load(model, device=args.device, dtype=args.dtype,
                                      quantization=args.quantize)


def eval_grounding(args: argparse.Namespace) -> int:
    """``--preset grounding``: ground each study's report, score it against the manifest's truth."""
    from napari_radreport.cli.eval_predictions import manifest_records
    from napari_radreport.engine import Engine
    from napari_radreport.evaluation.grounding import aggregate, format_grounding, score_cases
    from napari_radreport.evaluation.presets import iter_grounding_cases, require_grounding

    if args.predictions:
        raise ValueError("the grounding preset runs a model (--model), it does not read --predictions")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    require_grounding(Engine)  # before the model loads
    records = manifest_records(args)
    engine, model, info = _load_engine(args)
    methods = args.method or [None]  # None: the engine's default method
    texts: dict[str, str] = {}
    scores, studies = [], []
    started = time.perf_counter()
    try:
        for case in iter_grounding_cases(engine, records, methods=methods, text=args.ground_text,
                                         on_text=texts.__setitem__):
            scores += score_cases([case], distance_mm=args.distance_mm, threshold=args.mask_threshold)
            studies.append(case.id)
            print(f"\rradreport: {len(set(studies))}/{len(records)} studies", end="", file=sys.stderr,
                  flush=True)
    finally:
        print(file=sys.stderr)
    result = aggregate(scores, studies, resamples=args.bootstrap, seed=args.seed, level=args.level)
    result.update({"preset": "grounding", "model": str(model), "weights_sha256": info.weights_sha256,
                   "manifest": str(args.manifest), "split": args.split, "methods_asked": args.method,
                   "text": args.ground_text, "device": info.device,
                   "seconds": round(time.perf_counter() - started, 1),
                   "settings": {"distance_mm": args.distance_mm, "threshold": args.mask_threshold}})
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.details:
        rows = defaultdict(list)
        for score in scores:
            rows[score.study].append(score.as_dict())
        Path(args.details).write_text("".join(json.dumps({"id": study, "text": texts.get(study, ""),
                                                          "sentences": rows[study]}) + "\n"
                                              for study in dict.fromkeys(studies)))
    print(format_grounding(result))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.preset == "grounding":
        return eval_grounding(args)
    if args.preset != "phantom":
        from napari_radreport.cli.eval_predictions import eval_predictions

        return eval_predictions(args)
    if args.predictions:
        raise ValueError("the phantom preset runs a model (--model), it does not read --predictions")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    from napari_radreport.cli.eval_predictions import manifest_records
    from napari_radreport.evaluation.phantom_figures import format_figures, phantom_figures
    from napari_radreport.evaluation.phantoms import evaluate_phantoms

    records = manifest_records(args)  # the split ("all": every record) and --limit, as elsewhere
    engine, model, info = _load_engine(args)
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
                                    "metrics (rrg24, m3d, amos-mm, diagnosis), run a model on phantoms "
                                    "(phantom), or score where a model's sentences point (grounding).")
    ev.add_argument("--preset", choices=PRESETS, default="phantom")
    ev.add_argument("--manifest", required=True, help="the references (training-manifest format)")
    ev.add_argument("--predictions", help="radreport predict output to score (all presets but phantom)")
    ev.add_argument("--compare", metavar="PREDICTIONS_B",
                    help="a second system's predictions: paired comparison A - B")
    ev.add_argument("--model", help="phantom and grounding presets: model folder (default: the demo model)")
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
    add_precision_flags(ev)
    ev.add_argument("--out", help="write the scores as JSON")
    ev.add_argument("--plot", help="write an SVG plot of the per-label scores (diagnosis)")
    ev.add_argument("--details",
                    help="phantom and grounding presets: write each study's outputs as JSON lines")
    ev.add_argument("--method", nargs="+", metavar="METHOD",
                    help="grounding preset: the Engine.ground method(s) to score (default: the engine's)")
    ev.add_argument("--ground-text", choices=["generated", "reference"], default="generated",
                    help="grounding preset: ground the model's own report (generated) or the record's text "
                         "(reference: its mask sentences, else its Findings and Impression)")
    ev.add_argument("--distance-mm", type=float, default=10.0,
                    help="grounding preset: a peak this close to a truth centre is a hit "
                         "(truth without a mask)")
    ev.add_argument("--mask-threshold", type=float, default=0.5,
                    help="grounding preset: a predicted probability mask is inside from this value (Dice)")
    ev.set_defaults(func=cmd_eval)
