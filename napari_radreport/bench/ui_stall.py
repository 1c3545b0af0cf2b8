"""The longest Qt event-loop stall while a report streams into the Report dock (a real napari viewer).

A 5 ms heartbeat QTimer records when it fires; the largest gap between ticks while the report streams is
the longest time the window could not repaint or take input. Needs a display (Xvfb will do); run by
``radreport bench`` in its own process:

    python -m napari_radreport.bench.ui_stall MODEL_DIR STUDY --tokens 200 --json OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def measure(model: Path, study_path: Path, tokens: int) -> dict:
    import napari
    from qtpy.QtCore import QElapsedTimer, QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_radreport import load_study
    from napari_radreport.bench.measure import PeakMemory
    from napari_radreport.viewer import add_docks, add_study
    from napari_radreport.widgets.session import session_for

    viewer = napari.Viewer(show=True)
    session = session_for(viewer)
    session.settings.model_folder, session.settings.max_new_tokens = str(model), tokens
    report = add_docks(viewer)["Report"]
    add_study(viewer, load_study(study_path))
    report.load_model()
    while session.busy:
        QApplication.processEvents()
        time.sleep(0.005)

    clock, ticks = QElapsedTimer(), []
    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(lambda: ticks.append(clock.nsecsElapsed() / 1e6))
    loop = QEventLoop()
    session.busy_changed.connect(lambda busy: None if busy else loop.quit())
    with PeakMemory() as memory:
        clock.start()
        heartbeat.start()
        started = time.perf_counter()
        report.generate()
        loop.exec()  # napari's own event loop would run here; nothing else drives it
        seconds = time.perf_counter() - started
        heartbeat.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    worst = sorted(zip(gaps, ticks), reverse=True)[:3]
    draft = report.draft_for(session.study)
    result = {
        "longest_stall_ms": round(max(gaps), 1),
        "median_tick_ms": round(statistics.median(gaps), 1),
        "ticks": len(ticks),
        "worst_gaps_ms_at_ms": [[round(g, 1), round(t, 1)] for g, t in worst],
        "stream_s": round(seconds, 2),
        "longest_stall_share_of_stream": round(max(gaps) / 1000 / seconds, 4),
        "words_streamed": len(draft.text.split()),
        "memory": memory.as_dict(),
    }
    viewer.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("study", type=Path)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    result = measure(args.model, args.study, args.tokens)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
