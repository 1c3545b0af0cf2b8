"""``radreport train`` and ``radreport phantoms``: training runs and the synthetic dataset they learn from.

Several processes or GPUs: start the same command with accelerate's launcher, e.g.
``accelerate launch --num_processes 2 -m napari_radreport.cli train ...`` (see docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_radreport.training.config import STAGES
from napari_radreport.training.examples import TASKS


def cmd_train(args: argparse.Namespace) -> int:
    from napari_radreport.modeling.recipes import load_recipe
    from napari_radreport.training.config import resolve
    from napari_radreport.training.run import run_training

    if args.recipe is None and args.init is None:
        raise ValueError("give --recipe (start from a recipe) or --init (start from a model folder)")
    recipe = load_recipe(args.recipe) if args.recipe else None
    overrides = {"tasks": args.tasks, "adapter": args.adapter, "lr": args.lr, "epochs": args.epochs,
                 "max_steps": args.max_steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
                 "texts_per_image": args.texts_per_image, "save_every": args.save_every,
                 "eval_every": args.eval_every, "seed": args.seed, "mixed_precision": args.mixed_precision,
                 "train_encoder": True if args.train_encoder else None}
    config = resolve(args.stage, recipe, overrides)
    summary = run_training(config, Path(args.manifest), Path(args.out),
                           init=Path(args.init) if args.init else None, recipe=recipe, tiny=args.tiny,
                           tokenizer=Path(args.tokenizer) if args.tokenizer else None,
                           encoder=Path(args.encoder) if args.encoder else None, resume=args.resume,
                           quiet=args.quiet, log=lambda m: print(f"radreport: {m}", file=sys.stderr))
    if summary["saved"]:
        eval_text = f", eval loss {summary['eval_loss']:.4f}" if summary.get("eval_loss") is not None else ""
        print(f"trained {summary['steps']} steps: loss {summary['loss']:.4f}{eval_text}; saved "
              f"{', '.join(summary['saved'])}")
    return 0


def cmd_phantoms(args: argparse.Namespace) -> int:
    from napari_radreport.data.phantoms.generate import write_phantoms

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % 50 == 0):
            print(f"\rradreport: {done}/{total} phantoms", end="\n" if done == total else "", file=sys.stderr,
                  flush=True)

    manifest = write_phantoms(args.out, args.count, seed=args.seed, val=args.val, test=args.test,
                              only=args.only, progress=progress)
    print(f"wrote {'the ' + args.only + ' split of ' if args.only else ''}{args.count} phantoms "
          f"and {manifest}")
    return 0


def add_training_commands(sub, common: argparse.ArgumentParser) -> None:
    train = sub.add_parser("train", parents=[common],
                           help="train a model (stage 1, stage 2 LoRA, MAE, label or candidate pretraining, "
                                "a grounding head)",
                           description="Train on a JSONL manifest's train split, evaluating on its val "
                                       "split. Run under `accelerate launch` for several processes or GPUs.")
    train.add_argument("--stage", choices=STAGES, default="stage1",
                       help="stage1: perceiver; stage2: perceiver + LoRA adapter; mae: 3-D encoder "
                            "pretraining; labels: 3-D encoder and perceiver learn the abnormality labels; "
                            "candidates: the encoder's conv stem learns small findings from patches at the "
                            "manifest's positions; grounding: a head on an --init model learns where each "
                            "finding sentence is from the manifest's masks")
    train.add_argument("--manifest", required=True, help="JSONL manifest (docs/datasets.md)")
    train.add_argument("--out", required=True,
                       help="output folder: model, adapters/, checkpoints/, loss plot")
    start = train.add_argument_group("what to start from")
    start.add_argument("--recipe", help="a recipe name (models/) or recipe.json: build the model fresh")
    start.add_argument("--init", help="a model folder to continue from (stage 1 output for stage 2)")
    start.add_argument("--tiny", action="store_true", help="the recipe's tiny sizes (tests, smoke runs)")
    start.add_argument("--tokenizer", help="tokenizer folder of the recipe's language model")
    start.add_argument("--encoder", help="folder with encoder.safetensors (--stage mae or labels) or "
                                          "stem.safetensors (--stage candidates) to start from")
    what = train.add_argument_group("what to train "
                                    "(defaults: stage defaults < recipe 'train' section < these)")
    what.add_argument("--tasks", nargs="+", choices=TASKS, help="which question/answer pairs to train on")
    what.add_argument("--adapter", help="stage 2: the LoRA adapter's name (findings, impression, vqa, ...)")
    what.add_argument("--train-encoder", action="store_true", help="stage 2: train the vision encoder too")
    how = train.add_argument_group("how")
    how.add_argument("--epochs", type=int)
    how.add_argument("--max-steps", type=int,
                     help="stop after this many optimizer steps (overrides --epochs)")
    how.add_argument("--batch-size", type=int, help="studies per process per micro-batch")
    how.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    how.add_argument("--lr", type=float)
    how.add_argument("--texts-per-image", type=int, help="question/answer pairs per study per step")
    how.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"])
    how.add_argument("--seed", type=int)
    how.add_argument("--save-every", type=int, help="optimizer steps between checkpoints")
    how.add_argument("--eval-every", type=int, help="optimizer steps between evaluations on the val split")
    how.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    how.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    phantoms = sub.add_parser("phantoms", parents=[common],
                              help="write synthetic chest CT phantoms + manifest")
    phantoms.add_argument("out", help="output folder (volumes/ and manifest.jsonl)")
    phantoms.add_argument("--count", type=int, default=100)
    phantoms.add_argument("--seed", type=int, default=0)
    phantoms.add_argument("--val", type=float, default=0.05, help="fraction for the val split")
    phantoms.add_argument("--test", type=float, default=0.1, help="fraction for the test split (held out)")
    phantoms.add_argument("--only", choices=["train", "val", "test"], help="write only this split's phantoms")
    phantoms.add_argument("--quiet", action="store_true")
    phantoms.set_defaults(func=cmd_phantoms)
