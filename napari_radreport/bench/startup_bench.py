"""Step 9: start-up without torch: ``radreport --help`` and importing the Report dock, each in a fresh
interpreter, beside importing torch and transformers (what each would cost if it loaded them)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HEAVY = ("torch", "transformers", "peft", "accelerate")
_PROBE = ("import sys\nimport napari_radreport.widgets.report_dock\n"
          "from napari_radreport.cli import build_parser\nbuild_parser()\n"
          "print(__import__('json').dumps([m for m in {heavy!r} if m in sys.modules]))")


def _wall(command: list[str], env: dict[str, str], repeats: int) -> float:
    """Median wall time (s) of ``command`` run ``repeats`` times, each a fresh process."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(repeats: int) -> dict[str, Any]:
    python, env = sys.executable, {**os.environ, "QT_API": os.environ.get("QT_API", "pyqt6")}
    walls = {
        "interpreter_s": [python, "-c", "pass"],
        "help_s": [python, "-m", "napari_radreport.cli", "--help"],
        "dock_import_s": [python, "-c", "import napari_radreport.widgets.report_dock"],
        "torch_import_s": [python, "-c", "import torch, transformers"],
    }
    result: dict[str, Any] = {name: round(_wall(cmd, env, repeats), 3) for name, cmd in walls.items()}
    probe = subprocess.run([python, "-c", _PROBE.format(heavy=HEAVY)], env=env, capture_output=True,
                           text=True, check=True)
    result["heavy_modules_loaded"] = json.loads(probe.stdout.strip().splitlines()[-1])
    result["torch_import_over_help"] = round(result["torch_import_s"] / result["help_s"], 2)
    result["torch_import_over_dock_import"] = round(result["torch_import_s"] / result["dock_import_s"], 2)
    return result
