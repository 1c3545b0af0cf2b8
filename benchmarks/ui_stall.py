"""The longest Qt event-loop stall while a report streams into the Report dock (CPU, real napari viewer).

A 5 ms heartbeat QTimer records when it fires; the largest gap between ticks while the report streams is
the longest time the window could not repaint or take input. Run under Xvfb:

    xvfb-run -a .venv/bin/python benchmarks/ui_stall.py [--tokens 200] [--json OUT]

The model is random-weight and small enough for this machine (hidden 256, 4 layers), so decoding is fast
and events are frequent: the worst case for the GUI thread, which must take every token.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--study", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
                                                / "totalseg_abdomen_pelvis.nii.gz"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QElapsedTimer, QTimer
    from qtpy.QtWidgets import QApplication
    from tiny_models import write_tiny_radreport

    from napari_radreport import load_study
    from napari_radreport.viewer import add_docks, add_study
    from napari_radreport.widgets.session import session_for

    folder = write_tiny_radreport(Path(tempfile.mkdtemp()) / "bench-ct", "ct", layers=4)
    viewer = napari.Viewer(show=True)
    session = session_for(viewer)
    session.settings.model_folder, session.settings.max_new_tokens = str(folder), args.tokens
    report = add_docks(viewer)["Report"]
    add_study(viewer, load_study(args.study))
    report.load_model()
    while session.busy:
        QApplication.processEvents()

    clock, ticks = QElapsedTimer(), []
    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(lambda: ticks.append(clock.nsecsElapsed() / 1e6))
    clock.start()
    heartbeat.start()
    from qtpy.QtCore import QEventLoop

    loop = QEventLoop()
    session.busy_changed.connect(lambda busy: None if busy else loop.quit())
    started = time.perf_counter()
    report.generate()
    loop.exec()  # napari's own event loop would run here; nothing else drives it
    heartbeat.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    worst = sorted(zip(gaps, ticks), reverse=True)[:3]
    draft = report.draft_for(session.study)
    result = {
        "longest_stall_ms": round(max(gaps), 1),
        "median_tick_ms": round(statistics.median(gaps), 1),
        "ticks": len(ticks),
        "worst_gaps_ms_at_ms": [[round(g, 1), round(t, 1)] for g, t in worst],
        "stream_seconds": round(time.perf_counter() - started, 2),
        "words_streamed": len(draft.text.split()),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}, Python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    viewer.close()


if __name__ == "__main__":
    main()
