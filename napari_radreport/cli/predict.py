"""``radreport predict``: run a model over a manifest's studies and write predictions as JSON lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_radreport.cli.model_flags import add_precision_flags


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_radreport.batch_predict import RunPlace, run_meta, run_predictions
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.engine import Engine, GenerationSettings
    from napari_radreport.engine.engine import default_model

    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no such manifest")
    records = read_manifest(manifest, split=None if args.split == "all" else args.split)
    if not records:
        raise ValueError(f"{manifest}: no records in split {args.split!r}")
    records = records[: args.limit] if args.limit else records
    model = args.model or default_model()
    if model is None:
        raise ValueError("no --model given and this install has no demo model")
    place = RunPlace.from_environment()
    device = args.device
    if device == "auto" and place.world > 1:
        import torch

        device = f"cuda:{place.local_rank}" if torch.cuda.is_available() else "cpu"
    engine = Engine()
    engine.allow_out_of_scope = True  # scoring runs every study; each prediction records its scope verdict
    info = engine.load(model, device=device, dtype=args.dtype, quantization=args.quantize)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, seed=args.seed)
    meta = run_meta(info, args.tasks, settings, manifest, args.split)
    main = place.rank == 0

    def progress(prediction: dict, index: int, total: int) -> None:
        if main:
            print(f"\rradreport: predicted {index}/{total} studies on this process", end="", file=sys.stderr,
                  flush=True)

    if args.batch_size > 1:
        from napari_radreport.engine.batched import batch_refusal

        refusal = batch_refusal(engine, settings)
        if refusal and main:
            print(f"radreport: --batch-size {args.batch_size} ignored: {refusal}", file=sys.stderr)
    try:
        counts = run_predictions(engine, records, args.out, meta, args.tasks, settings,
                                 overwrite=args.overwrite, place=place, on_done=progress,
                                 batch_size=args.batch_size)
    finally:
        if main:
            print(file=sys.stderr)
        engine.shutdown()
    print(f"radreport: {counts['predicted']} predicted ({counts['failed']} failed, see their 'error'), "
          f"{counts['skipped']} already in {args.out}"
          + (f" [process {place.rank}/{place.world}]" if place.world > 1 else ""), file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_predict_commands(sub, common: argparse.ArgumentParser) -> None:
    from napari_radreport.batch_predict import TASKS

    pr = sub.add_parser("predict", parents=[common], help="run a model over a manifest; resumable JSON lines",
                        description="Run reports, answers and/or diagnoses over a manifest's studies. Rerun "
                                    "the same command to resume; run it under `accelerate launch` to spread "
                                    "it over processes or GPUs.")
    pr.add_argument("--manifest", required=True)
    pr.add_argument("--out", required=True,
                    help="predictions file (JSON lines; first line records model and settings)")
    pr.add_argument("--model", help="model folder (default: the demo model)")
    pr.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    pr.add_argument("--split", default="test", help="manifest split ('all' for every record)")
    pr.add_argument("--limit", type=int, help="only the first N studies of the split")
    pr.add_argument("--device", default="auto")
    add_precision_flags(pr)
    pr.add_argument("--max-new-tokens", type=int, default=256)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--batch-size", type=_positive, default=1,
                    help="studies whose answers decode together (same texts as 1; see docs/predict.md)")
    pr.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    pr.set_defaults(func=cmd_predict)
