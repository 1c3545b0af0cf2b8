"""``radreport eval --preset rrg24|m3d|amos-mm|diagnosis``: score a predictions file against a manifest."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def manifest_records(args: argparse.Namespace):
    from napari_radreport.data.manifest import read_manifest

    records = read_manifest(args.manifest, split=None if args.split == "all" else args.split)
    if not records:
        raise ValueError(f"{args.manifest}: no records in split {args.split!r}")
    return records[: args.limit] if args.limit else records


def _predictions(path: str, records, partial: bool) -> tuple[dict, dict[str, dict], list]:
    """(meta, predictions by id, the records to score); refuses missing predictions unless ``partial``."""
    from napari_radreport.batch_predict import read_predictions

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such predictions file (write one with radreport predict)")
    meta, predictions = read_predictions(path)
    missing = [r.id for r in records if r.id not in predictions]
    if missing and not partial:
        raise ValueError(f"{path}: {len(missing)} of {len(records)} studies have no prediction "
                         f"(first: {missing[0]}); finish the run (radreport predict resumes) "
                         "or pass --partial")
    return meta, predictions, [r for r in records if r.id in predictions]


def eval_predictions(args: argparse.Namespace) -> int:
    from napari_radreport.evaluation.presets import ModelPaths, build_blocks
    from napari_radreport.evaluation.results_output import format_table, plot_svg
    from napari_radreport.evaluation.scoring import BootstrapSettings, score_blocks

    if not args.predictions:
        raise ValueError(f"the {args.preset} preset scores a predictions file: "
                         "give --predictions (radreport predict)")
    if args.sections and args.preset not in ("rrg24", "m3d"):
        raise ValueError(f"--sections applies to the rrg24 and m3d presets, not {args.preset}")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    records = manifest_records(args)
    meta, predictions, records = _predictions(args.predictions, records, args.partial)
    meta_b, predictions_b = None, None
    if args.compare:
        meta_b, predictions_b, records = _predictions(args.compare, records, args.partial)
    paths = ModelPaths(wordnet=args.wordnet, green=args.green_model, radgraph=args.radgraph_model,
                       chexbert=args.chexbert_model, chexbert_bert=args.chexbert_bert,
                       bertscore=args.bertscore_model, minilm=args.minilm_bertscore, device=args.device)
    blocks = build_blocks(args.preset, records, predictions, paths, args.sections, predictions_b)
    settings = BootstrapSettings(args.bootstrap, args.seed, args.level)

    def progress(what: str) -> None:
        print(f"radreport: scoring {what}", file=sys.stderr, flush=True)

    result = {"preset": args.preset, "manifest": str(args.manifest), "split": args.split,
              "predictions": str(args.predictions), "predictions_meta": meta,
              "compare": str(args.compare) if args.compare else None, "compare_meta": meta_b,
              "bootstrap": {"resamples": settings.resamples, "seed": settings.seed, "level": settings.level},
              "blocks": score_blocks(blocks, settings, progress)}
    print(format_table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.plot:
        Path(args.plot).write_text(plot_svg(result, f"{args.preset}: per-label scores ({args.predictions})"),
                                   encoding="utf-8")
    return 0
