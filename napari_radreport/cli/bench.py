"""``radreport bench``: the performance figures, each beside its baseline, as JSON and Markdown."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_bench(args: argparse.Namespace) -> int:
    from napari_radreport.bench.suite import run_suite
    from napari_radreport.bench.tables import markdown, summary

    results = run_suite(quick=args.quick, series=args.series, ui=not args.no_ui)
    print(summary(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(results) + "\n")
        print(f"wrote {args.markdown}")
    failed = [c["check"] for c in results["checks"] if not c["ok"]]
    if failed and args.strict:
        print(f"radreport: error: below the bound: {'; '.join(failed)}")
        return 1
    return 0


def add_bench_commands(sub, common) -> None:
    from napari_radreport.bench.steps import CHEST_SERIES

    bench = sub.add_parser("bench", parents=[common], help="measure speed and memory against the baselines")
    bench.add_argument("--quick", action="store_true",
                       help="small models, fewer repeats (the CI variant, ~1 min)")
    bench.add_argument("--series", type=Path, default=CHEST_SERIES,
                       help="DICOM series folder to load and preprocess")
    bench.add_argument("--json", type=Path, help="write every figure here")
    bench.add_argument("--markdown", type=Path, help="write the tables here (docs/benchmarks-results.md)")
    bench.add_argument("--no-ui", action="store_true",
                       help="skip the napari step (it needs a display or xvfb-run)")
    bench.add_argument("--strict", action="store_true",
                       help="exit 1 when a ratio is below its target or bound")
    bench.set_defaults(func=cmd_bench)
