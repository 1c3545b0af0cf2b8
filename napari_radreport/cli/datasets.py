"""``radreport dataset convert FORMAT SRC --out MANIFEST`` and ``radreport dataset check MANIFEST``.

``convert`` turns a public dataset's files into a training manifest (docs/datasets.md lists the layouts) and
prints what it wrote and skipped; ``check`` prints a manifest's counts and fails, naming the first one, when
an image file is missing. Errors are one line and exit with 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
from collections import Counter

# Format -> the converter keyword arguments its subcommand adds (besides src, out, missing and overwrite).
_OPTIONS = {
    "ct-rate": ("split", "reports", "labels", "metadata", "volumes", "raw_volumes"),
    "amos-mm": ("vqa", "split", "image_root"),
    "rrg24": ("split", "image_root"),
    "bimcv-r": ("reports", "split", "val_fraction"),
    "rexgroundingct": ("volumes", "split", "metadata", "reports", "mask_flip_axes"),
}


def cmd_convert(args: argparse.Namespace) -> int:
    from napari_radreport.data.adapters import CONVERTERS

    options = {name: getattr(args, name) for name in _OPTIONS[args.format]}
    summary = CONVERTERS[args.format](args.src, args.out, missing=args.missing, overwrite=args.overwrite,
                                      **options)
    print(summary.describe())
    return 0


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counter.items())) or "-"


def cmd_check_masks(args: argparse.Namespace) -> int:
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.data.mask_check import AERATED_HU, check_mask_orientation

    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    result = check_mask_orientation(read_manifest(args.manifest), limit=args.limit)
    print(f"records read: {result.records}, dense-finding masks: {result.masks}")
    if result.records:
        print(f"{'flip_axes':<10}  {'voxels':>10}  {'median HU':>9}  below {AERATED_HU:g} HU")
        for f in result.figures:
            flips = str(list(f.flip_axes))
            print(f"{flips:<10}  {f.voxels:>10}  {f.median_hu:>9.0f}  {f.aerated_fraction:.1%}")
    print(result.verdict())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from napari_radreport.data.manifest import read_manifest

    records = read_manifest(args.manifest)
    regions = Counter(region for r in records for region in r.regions)
    positives, labelled = Counter(), Counter()
    for record in records:
        for label, value in record.labels.items():
            labelled[label] += 1
            positives[label] += value
    print(f"records: {len(records)}")
    print(f"split: {_counts(Counter(r.split for r in records))}")
    print(f"modality: {_counts(Counter(r.modality for r in records))}")
    print(f"source: {_counts(Counter(r.source or '(none)' for r in records))}")
    print(f"with findings: {sum(bool(r.findings) for r in records)}, impression: "
          f"{sum(bool(r.impression) for r in records)}, regions: {sum(bool(r.regions) for r in records)} "
          f"({_counts(regions)}), hu_rescale: {sum(r.hu_rescale is not None for r in records)}")
    print(f"questions: {sum(len(r.qa) for r in records)} in {sum(bool(r.qa) for r in records)} record(s), "
          f"multiple choice: {sum(bool(q.choices) for r in records for q in r.qa)}")
    if labelled:
        width = max(map(len, labelled))
        print("labels (positive / labelled records):")
        for label in labelled:
            print(f"  {label:<{width}}  {positives[label]} / {labelled[label]}")
    images = [(record.id, path) for record in records for path in record.image_paths()]
    missing = [(record_id, path) for record_id, path in images if not path.exists()]
    if missing:
        record_id, path = missing[0]
        raise FileNotFoundError(f"{path}: image of record {record_id} does not exist "
                                f"({len(missing)} of {len(images)} image files missing)")
    print(f"images: all {len(images)} file(s) exist")
    return 0


def add_dataset_commands(sub, common: argparse.ArgumentParser) -> None:
    dataset = sub.add_parser("dataset", parents=[common],
                             help="convert public datasets to training manifests")
    actions = dataset.add_subparsers(dest="dataset_command", required=True)

    convert = actions.add_parser("convert", parents=[common],
                                 help="write a manifest from a public dataset's files")
    formats = convert.add_subparsers(dest="format", required=True,
                                     metavar="{ct-rate,amos-mm,rrg24,bimcv-r,rexgroundingct}")
    shared = argparse.ArgumentParser(add_help=False, parents=[common])
    shared.add_argument("--out", required=True, help="the manifest to write (.jsonl)")
    shared.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    shared.add_argument("--missing", choices=["error", "skip"], default="error",
                        help="a study whose image file is absent: stop naming it (default) or leave it out")

    ct = formats.add_parser("ct-rate", parents=[shared], help="CT-RATE chest CT, reports and 18 labels")
    ct.add_argument("src", help="the CT-RATE folder (holding dataset/ or its contents)")
    ct.add_argument("--split", choices=["train", "val"], default="train")
    ct.add_argument("--reports", help="reports CSV (default: radiology_text_reports/<split> file)")
    ct.add_argument("--labels", help="labels CSV (default: multi_abnormality_labels/<split> file)")
    ct.add_argument("--volumes", help="volume folder (default: train_fixed or train, valid_fixed or valid)")
    ct.add_argument("--raw-volumes", action="store_true",
                    help="the volumes are the first release's raw values: take hu_rescale from the "
                         "metadata CSV (never for the *_fixed volumes, which are HU already)")
    ct.add_argument("--metadata", help="metadata CSV with RescaleSlope/RescaleIntercept (with --raw-volumes)")

    amos = formats.add_parser("amos-mm", parents=[shared],
                              help="AMOS-MM CT: per-region findings, impression, VQA")
    amos.add_argument("src", help="dataset.json or the folder holding it")
    amos.add_argument("--vqa", help="a second JSON file with the multiple-choice questions")
    amos.add_argument("--split", choices=["train", "val", "test"], help="keep one split (default: all)")
    amos.add_argument("--image-root",
                      help="folder the image paths are relative to (default: the JSON's folder)")

    rrg = formats.add_parser("rrg24", parents=[shared], help="RRG24 / MIMIC-CXR style radiograph studies")
    rrg.add_argument("src", nargs="+", help="JSON/JSONL files, or folders of them")
    rrg.add_argument("--split", choices=["train", "val", "test"], help="default: from the file name")
    rrg.add_argument("--image-root",
                     help="folder the image paths are relative to (default: the JSON's folder)")

    bimcv = formats.add_parser("bimcv-r", parents=[shared], help="BIMCV-R chest CT with English reports")
    bimcv.add_argument("src", help="the BIMCV-R folder (CT*/ct/*.nii.gz and meta/)")
    bimcv.add_argument("--reports", help="reports CSV (default: meta/curated_ct_report_path_En.csv)")
    bimcv.add_argument("--split", choices=["train", "val", "test"], default="train")
    bimcv.add_argument("--val-fraction", type=float, default=0.0,
                       help="share of patients put in val instead (deterministic; default 0)")
    rex = formats.add_parser("rexgroundingct", parents=[shared],
                             help="ReXGroundingCT: CT-RATE chest CT with a 3-D mask per report sentence")
    rex.add_argument("src", help="the ReXGroundingCT folder (dataset.json and segmentations/)")
    rex.add_argument("--volumes", required=True, help="CT-RATE's folder of train_fixed/ and valid_fixed/")
    rex.add_argument("--split", choices=["train", "val", "test"], help="keep one split (default: all)")
    rex.add_argument("--metadata", help="a JSON file to read instead of src/dataset.json")
    rex.add_argument("--reports", nargs="*", default=(),
                     help="CT-RATE report CSVs (for the Findings and Impression text)")
    rex.add_argument("--mask-flip-axes", type=int, nargs="*", default=(), metavar="AXIS",
                     help="flip these mask axes before use (docs/datasets.md: check against a few studies)")
    for parser in (ct, amos, rrg, bimcv, rex):
        parser.set_defaults(func=cmd_convert)

    masks = actions.add_parser("check-masks", parents=[common],
                               help="which way a channels-layout manifest's masks lie on their volumes "
                                    "(ReXGroundingCT's axis flip)",
                               description="Reads the masks of dense findings (atelectasis, consolidation, "
                                           "nodule, pleural effusion) under each way the stored mask axes "
                                           "could be flipped and reports the HU under them; the flip with "
                                           "the least aerated lung or air under them is the likely one.")
    masks.add_argument("manifest", help="a .jsonl manifest with channels-layout masks")
    masks.add_argument("--limit", type=int, default=20, help="records to read (default 20)")
    masks.set_defaults(func=cmd_check_masks)

    check = actions.add_parser("check", parents=[common],
                               help="count a manifest's records, check its image files")
    check.add_argument("manifest", help="a .jsonl manifest")
    check.set_defaults(func=cmd_check)
