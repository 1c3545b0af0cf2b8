"""``radreport info | view | demo``: what a study reads as, and napari with the docks."""

from __future__ import annotations

import argparse
import json


def cmd_info(args: argparse.Namespace) -> int:
    from napari_radreport.io import load_study

    study = load_study(args.paths if len(args.paths) > 1 else args.paths[0], series=args.series)
    summary = study.summary()
    if args.json:  # strict JSON: the summary holds null, never NaN or Infinity
        print(json.dumps(summary, indent=2, allow_nan=False))
        return 0
    print(f"kind: {summary['kind']}  modality: {summary['modality'] or '?'}")
    for image in summary["images"]:
        lo, hi = ("?" if v is None else f"{v:g}" for v in image["value_range"])
        print(
            f"  {image['label']}: shape {tuple(image['shape'])} spacing {image['spacing_mm']} mm "
            f"orientation {image['orientation']} values {lo}..{hi} {image['value_unit']}"
        )
    for s in summary["series"]:
        mark = "*" if s["chosen"] else " "
        print(f" {mark} series {s['index']}: {s['modality']} {s['description']!r} {s['n_images']} images "
              f"({s['role']})")
    for w in summary["warnings"]:
        print(f"warning: {w}")
    for n in summary["notes"]:
        print(f"note: {n}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from napari_radreport.viewer import open_viewer

    open_viewer(args.paths, series=args.series)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_radreport.viewer import open_viewer

    open_viewer(None, sample=args.sample)
    return 0


def add_study_commands(sub, common: argparse.ArgumentParser) -> None:
    info = sub.add_parser("info", parents=[common],
                          help="describe what a file, folder or set of files reads as")
    info.add_argument("paths", nargs="+", help="NIfTI file, DICOM folder/files, or radiographs")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--series", help="series index or SeriesInstanceUID (default: the main CT series)")
    info.set_defaults(func=cmd_info)

    view = sub.add_parser("view", parents=[common], help="open a study in napari with the plugin's docks")
    view.add_argument("paths", nargs="+")
    view.add_argument("--series")
    view.set_defaults(func=cmd_view)

    demo = sub.add_parser("demo", parents=[common],
                          help="open napari with the plugin's docks and a sample study")
    demo.add_argument("--sample", default="phantom", choices=["phantom", "ct", "xray"],
                      help="phantom: a synthetic chest CT (what the demo model reads; default); ct, xray: "
                           "the real abdominal CT or chest radiograph (which the demo model refuses)")
    demo.set_defaults(func=cmd_demo)
