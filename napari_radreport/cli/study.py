"""``radreport info | view | demo``: what a study reads as, and napari with the docks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

MIXED_PATIENTS_FLAG = "--allow-mixed-patients"


def add_mixed_patients_flag(parser: argparse.ArgumentParser) -> None:
    """``--allow-mixed-patients``: open files of more than one patient as one study (refused without it)."""
    parser.add_argument(MIXED_PATIENTS_FLAG, action="store_true",
                        help="open files of more than one patient (their PatientID, PatientName or "
                             "PatientBirthDate differ) as one study instead of refusing; reports about it "
                             "say MIXED PATIENTS")


def load_paths(paths: Sequence[str], *, series: str | None = None, allow_mixed_patients: bool = False):
    """``load_study`` of the command's paths; a refusal of mixed patients names the flag that allows them."""
    from napari_radreport.io import load_study
    from napari_radreport.io.study import MixedPatients

    try:
        return load_study(list(paths) if len(paths) > 1 else paths[0], series=series,
                          allow_mixed_patients=allow_mixed_patients)
    except MixedPatients as exc:
        raise exc.with_hint(f"{MIXED_PATIENTS_FLAG} opens them as one study anyway") from exc


def cmd_info(args: argparse.Namespace) -> int:
    study = load_paths(args.paths, series=args.series, allow_mixed_patients=args.allow_mixed_patients)
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
    from napari_radreport.io.study import MixedPatients
    from napari_radreport.viewer import open_viewer

    try:
        open_viewer(args.paths, series=args.series, allow_mixed_patients=args.allow_mixed_patients)
    except MixedPatients as exc:
        raise exc.with_hint(f"{MIXED_PATIENTS_FLAG} opens them as one study anyway") from exc
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
    add_mixed_patients_flag(info)
    info.set_defaults(func=cmd_info)

    view = sub.add_parser("view", parents=[common], help="open a study in napari with the plugin's docks")
    view.add_argument("paths", nargs="+")
    view.add_argument("--series")
    add_mixed_patients_flag(view)
    view.set_defaults(func=cmd_view)

    demo = sub.add_parser("demo", parents=[common],
                          help="open napari with the plugin's docks and a sample study")
    demo.add_argument("--sample", default="phantom", choices=["phantom", "ct", "xray"],
                      help="phantom: a synthetic chest CT (what the demo model reads; default); ct, xray: "
                           "the real abdominal CT or chest radiograph (which the demo model refuses)")
    demo.set_defaults(func=cmd_demo)
