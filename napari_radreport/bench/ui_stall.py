"""The longest Qt event-loop stall while a report streams into the Report dock (a real napari viewer).

A 5 ms heartbeat QTimer records when it fires; the largest gap between ticks while the report streams is
the longest time the window could not repaint or take input. Needs a display (Xvfb will do); run by
``radreport bench`` in its own process:

    python -m napari_radreport.bench.ui_stall MODEL_DIR STUDY --tokens 200 --json OUT

``--trace`` adds where the GUI thread's time went (it perturbs the timing a little, so the suite runs without
it): the time in the plugin's handlers (the job poll and, inside it, the editor's appends, the conflict check
and the draft's saves), in napari's canvas draws and canvas resizes, what of each overlapped the five longest
gaps, how often a layout was requested, and how late a Python thread that sleeps 2 ms wakes (its lateness is
time spent waiting for the GIL or a core, which the GUI thread pays for every Python call it makes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

TRACED = (  # (module, class, method, label): what --trace times on the GUI thread
    ("napari_radreport.widgets.session", "JobWatcher", "_poll", "plugin: job poll (all handlers)"),
    ("napari_radreport.engine.jobs", "Job", "drain", "plugin: job drain (the queue)"),
    ("napari_radreport.widgets.report_dock", "ReportDock", "_on_events", "plugin: Report dock's handler"),
    ("napari_radreport.widgets.status_line", "StatusLine", "setText", "plugin: status/speed line text"),
    ("napari_radreport.widgets.draft_editor", "DraftEditor", "append", "plugin: editor append"),
    ("napari_radreport.widgets.chat_dock", "ChatDock", "_on_events", "plugin: Chat dock's handler"),
    ("napari_radreport.widgets.draft_editor", "DraftEditor", "check", "plugin: conflict check"),
    ("napari_radreport.drafts", "DraftStore", "save", "plugin: draft save"),
    ("vispy.scene.canvas", "SceneCanvas", "_draw_scene", "napari: canvas draw"),
    ("vispy.scene.canvas", "SceneCanvas", "on_resize", "napari: canvas resize"),
)


class _Trace:
    """Spans (start ms, end ms, label) of the TRACED methods on the heartbeat's clock, layout requests
    counted, and a probe thread's lateness after 2 ms sleeps."""

    def __init__(self, clock) -> None:
        import importlib

        self.clock, self.spans, self.layout_requests, self.late_ms = clock, [], 0, []
        self._undo, self._running = [], False
        for module, cls, name, label in TRACED:
            owner = getattr(importlib.import_module(module), cls)
            original = owner.__dict__[name]
            self._undo.append((owner, name, original))
            setattr(owner, name, self._timed(original, label))

    def _timed(self, original, label):
        def timed(*args, **kwargs):
            start = self.clock.nsecsElapsed() / 1e6 if self.clock.isValid() else None
            try:
                return original(*args, **kwargs)
            finally:
                if start is not None:
                    self.spans.append((start, self.clock.nsecsElapsed() / 1e6, label))
        return timed

    def eventFilter(self, _obj, event) -> bool:
        from qtpy.QtCore import QEvent

        if event.type() == QEvent.Type.LayoutRequest:
            self.layout_requests += 1
        return False

    def start(self) -> None:
        from qtpy.QtCore import QObject
        from qtpy.QtWidgets import QApplication

        self.spans.clear()
        self._filter = type("_Filter", (QObject,), {"eventFilter": lambda _s, o, e: self.eventFilter(o, e)})()
        QApplication.instance().installEventFilter(self._filter)
        self._running = True
        self._probe = threading.Thread(target=self._sleep_probe, daemon=True)
        self._probe.start()

    def _sleep_probe(self) -> None:
        while self._running:
            started = time.perf_counter()
            time.sleep(0.002)
            self.late_ms.append((time.perf_counter() - started) * 1000 - 2.0)

    def stop(self) -> None:
        from qtpy.QtWidgets import QApplication

        self._running = False
        self._probe.join()
        QApplication.instance().removeEventFilter(self._filter)
        for owner, name, original in self._undo:
            setattr(owner, name, original)

    def summary(self, gaps: list[tuple[float, float]], seconds: float) -> dict:
        """Totals per label over the stream, and for each gap (start, end) what overlapped it."""
        totals: dict[str, list[float]] = {}
        for start, end, label in self.spans:
            totals.setdefault(label, []).append(end - start)
        worst = []
        for start, end in gaps:
            inside: dict[str, float] = {}
            for a, b, label in self.spans:
                overlap = min(b, end) - max(a, start)
                if overlap > 0:
                    inside[label] = round(inside.get(label, 0.0) + overlap, 1)
            worst.append({"gap_ms": round(end - start, 1), "at_ms": round(start, 1),
                          "overlapping_ms": inside})
        late = sorted(self.late_ms)
        return {
            "per_handler": {label: {"calls": len(t), "total_ms": round(sum(t), 1), "max_ms": round(max(t), 1)}
                            for label, t in sorted(totals.items())},
            "worst_gaps": worst,
            "layout_requests_per_s": round(self.layout_requests / seconds, 1),
            "probe_thread_late_ms": {"median": round(late[len(late) // 2], 2),
                                     "p99": round(late[int(len(late) * 0.99)], 2), "max": round(late[-1], 1)},
        }


def measure(model: Path, study_path: Path, tokens: int, trace: bool = False, dock: str = "report") -> dict:
    """``dock``: "report" streams a report into the Report dock; "chat" an answer into the Chat dock."""
    import napari
    from qtpy.QtCore import QElapsedTimer, QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_radreport import load_study
    from napari_radreport.bench.measure import PeakMemory
    from napari_radreport.viewer import add_docks, add_study
    from napari_radreport.widgets.session import session_for

    clock, ticks = QElapsedTimer(), []
    tracer = _Trace(clock) if trace else None  # patches classes: before the viewer and docks exist
    viewer = napari.Viewer(show=True)
    session = session_for(viewer)
    session.settings.model_folder, session.settings.max_new_tokens = str(model), tokens
    docks = add_docks(viewer)
    report = docks["Report"]
    add_study(viewer, load_study(study_path))
    report.load_model()
    while session.busy:
        QApplication.processEvents()
        time.sleep(0.005)

    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(lambda: ticks.append(clock.nsecsElapsed() / 1e6))
    loop = QEventLoop()
    session.busy_changed.connect(lambda busy: None if busy else loop.quit())
    with PeakMemory() as memory:
        if tracer is not None:
            tracer.start()
        clock.start()
        heartbeat.start()
        started = time.perf_counter()
        if dock == "chat":
            docks["Chat"].ask("Describe the findings.")
        else:
            report.generate()
        loop.exec()  # napari's own event loop would run here; nothing else drives it
        seconds = time.perf_counter() - started
        heartbeat.stop()
        if tracer is not None:
            tracer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    worst = sorted(zip(gaps, ticks), reverse=True)[:3]
    streamed = (docks["Chat"].turns(session.study)[-1][1] if dock == "chat"
                else report.draft_for(session.study).text)
    result = {
        "dock": dock,
        "longest_stall_ms": round(max(gaps), 1),
        "median_tick_ms": round(statistics.median(gaps), 1),
        "ticks": len(ticks),
        "worst_gaps_ms_at_ms": [[round(g, 1), round(t, 1)] for g, t in worst],
        "stream_s": round(seconds, 2),
        "longest_stall_share_of_stream": round(max(gaps) / 1000 / seconds, 4),
        "words_streamed": len(streamed.split()),
        "memory": memory.as_dict(),
    }
    if tracer is not None:
        longest = sorted(zip(gaps, ticks), reverse=True)[:5]
        result["trace"] = tracer.summary([(t, t + g) for g, t in longest], seconds)
    viewer.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("study", type=Path)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--dock", choices=("report", "chat"), default="report",
                        help="stream a report into the Report dock (default) or an answer into the Chat dock")
    parser.add_argument("--trace", action="store_true", help="also say where the GUI thread's time went")
    args = parser.parse_args()
    import tempfile

    from napari_radreport.paths import use_private_user_files

    with tempfile.TemporaryDirectory(prefix="radreport-ui-stall-") as private:
        use_private_user_files(Path(private))  # the run's settings stay out of the user's
        result = measure(args.model, args.study, args.tokens, trace=args.trace, dock=args.dock)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
