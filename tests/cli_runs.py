"""Running ``radreport`` in a fresh process, alone or as two data-parallel CPU processes under accelerate."""

from __future__ import annotations

import os
import subprocess
import sys

# accelerate launch (its torchrun launcher) with two CPU processes over gloo on this machine
TWO_PROCESSES = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu"]


def run_cli(args: list[str], *, processes: int = 1) -> subprocess.CompletedProcess:
    """``python -m napari_radreport.cli ARGS``, one thread per process, alone or under accelerate with two."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launcher = {1: [sys.executable], 2: TWO_PROCESSES}[processes]
    return subprocess.run([*launcher, "-m", "napari_radreport.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)
