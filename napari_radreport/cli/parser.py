"""The ``radreport`` parser and entry point: one subcommand group per module of this package, imported
without torch (each command imports what it runs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radreport", description="Draft radiology reports in napari.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    # --debug is accepted after the subcommand too (SUPPRESS keeps a value given before it).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    from napari_radreport.cli.bench import add_bench_commands
    from napari_radreport.cli.datasets import add_dataset_commands
    from napari_radreport.cli.eval import add_eval_commands
    from napari_radreport.cli.models import add_model_commands
    from napari_radreport.cli.predict import add_predict_commands
    from napari_radreport.cli.study import add_study_commands
    from napari_radreport.cli.tasks import add_task_commands
    from napari_radreport.cli.train import add_training_commands

    for add_commands in (add_study_commands, add_model_commands, add_task_commands, add_dataset_commands,
                         add_training_commands, add_eval_commands, add_predict_commands, add_bench_commands):
        add_commands(sub, common)
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

