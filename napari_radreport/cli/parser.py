"""The ``radreport`` parser and entry point: one subcommand group per module of this package, imported
without torch (each command imports what it runs)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
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
    """Run one command: 0, or 1 after a one-line error (the traceback with ``--debug``), or 130 after
    Ctrl-C (one line) whenever it comes once this function runs: building the parser (its imports), reading,
    loading, generating or writing."""
    from napari_radreport.engine.threads import prefer_passive_waiting

    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    if words[:1] != ["train"]:  # before any command imports torch; training spins (engine/threads.py)
        prefer_passive_waiting()
    args = None
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except BrokenPipeError:  # the reader went away (``radreport models | head``): nothing more to say
        with contextlib.suppress(OSError):  # Python would complain again when it flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # one line by default; the traceback only with --debug
        if args is None or args.debug:
            raise
        from napari_radreport.common import one_line
        from napari_radreport.export.content import ExportError
        from napari_radreport.io import StudyReadError

        prefix = "" if isinstance(exc, StudyReadError | ExportError) else f"{type(exc).__name__}: "
        print(f"radreport: error: {prefix}{one_line(exc)}", file=sys.stderr)
        return 1


def _interrupted(exc: KeyboardInterrupt) -> int:
    """Say so in one line, a second Ctrl-C meanwhile ignored. Work that cannot stop (a model load,
    ``tasks.LoadAbandoned``) is not waited for: the process ends here, without Python's shutdown, which
    would wait for it or trip over its thread."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    print("radreport: interrupted", file=sys.stderr, flush=True)
    if getattr(exc, "exit_now", False):
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(130)
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
    return 130
