"""The ``radreport`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    from napari_radreport.io import load_study

    study = load_study(args.paths if len(args.paths) > 1 else args.paths[0], series=args.series)
    summary = study.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"kind: {summary['kind']}  modality: {summary['modality'] or '?'}")
    for image in summary["images"]:
        lo, hi = image["value_range"]
        print(
            f"  {image['label']}: shape {tuple(image['shape'])} spacing {image['spacing_mm']} mm "
            f"orientation {image['orientation']} values {lo:g}..{hi:g} {image['value_unit']}"
        )
    for s in summary["series"]:
        mark = "*" if s["chosen"] else " "
        print(f" {mark} series {s['index']}: {s['modality']} {s['description']!r} {s['n_images']} images ({s['role']})")
    for w in summary["warnings"]:
        print(f"warning: {w}")
    for n in summary["notes"]:
        print(f"note: {n}")
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from napari_radreport.viewer import open_viewer

    open_viewer(args.paths, series=args.series)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from napari_radreport.viewer import open_viewer

    open_viewer(None, sample=args.sample)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from napari_radreport.modeling.m3d import convert_m3d

    out = convert_m3d(args.src, args.dst, allow_pickle=args.allow_pickle)
    print(f"converted {args.src} -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radreport", description="Draft radiology reports in napari.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    # --debug is accepted after the subcommand too (SUPPRESS keeps a value given before it).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", parents=[common], help="describe what a file, folder or set of files reads as")
    info.add_argument("paths", nargs="+", help="NIfTI file, DICOM folder/files, or radiographs")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--series", help="series index or SeriesInstanceUID (default: the main CT series)")
    info.set_defaults(func=_cmd_info)

    view = sub.add_parser("view", parents=[common], help="open a study in napari with the plugin's docks")
    view.add_argument("paths", nargs="+")
    view.add_argument("--series")
    view.set_defaults(func=_cmd_view)

    convert = sub.add_parser("convert", parents=[common], help="convert a public checkpoint to this project's format")
    convert.add_argument("format", choices=["m3d"], help="m3d: an M3D-LaMed folder (Llama-2 or Phi-3)")
    convert.add_argument("src", help="local checkpoint folder (config.json, *.safetensors, tokenizer)")
    convert.add_argument("dst", help="output folder")
    convert.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pt weights (runs pickle code)")
    convert.set_defaults(func=_cmd_convert)

    from napari_radreport.cli_tasks import add_task_commands

    add_task_commands(sub, common)
    from napari_radreport.cli_datasets import add_dataset_commands

    add_dataset_commands(sub, common)
    from napari_radreport.cli_train import add_training_commands

    add_training_commands(sub, common)
    from napari_radreport.cli_eval import add_eval_commands

    add_eval_commands(sub, common)
    from napari_radreport.cli_predict import add_predict_commands

    add_predict_commands(sub, common)
    from napari_radreport.cli_bench import add_bench_commands

    add_bench_commands(sub, common)

    demo = sub.add_parser("demo", parents=[common], help="open napari with the plugin's docks and a sample study")
    demo.add_argument("--sample", default="ct", choices=["ct", "xray"], help="which sample to open")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("radreport: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line by default; the traceback only with --debug
        if args.debug:
            raise
        from napari_radreport.common import one_line
        from napari_radreport.io import StudyReadError

        prefix = "" if isinstance(exc, StudyReadError) else f"{type(exc).__name__}: "
        print(f"radreport: error: {prefix}{one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
