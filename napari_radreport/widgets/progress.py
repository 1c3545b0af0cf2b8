"""A running job in napari's activity dock: one ``napari.utils.progress`` per job, made, updated and closed in
the GUI thread from the job's events (``ViewerSession.run`` wires it), so none is left open after the job
ends, fails or is stopped. Its bar follows the last ``Progress`` event's fraction (indeterminate without one),
its description the event's message; while the model writes, the token count and speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from napari.utils.progress import cancelable_progress, progress

from napari_radreport.engine.events import Progress, Token

TITLES = {"load": "Loading the model", "unload": "Unloading the model", "report": "Drafting the report",
          "ask": "Answering", "choose": "Choosing an answer", "diagnose": "Checking for abnormalities",
          "ground": "Locating the findings", "ground_answer": "Locating the answer's findings",
          "ground_label": "Locating an abnormality"}
STEPS = 100  # a determinate bar's range: the fraction in percent
TOKEN_INTERVAL_S = 0.25  # how often the token count may redraw the description


class _StoppableProgress(cancelable_progress):
    """napari's Cancel button on the bar stops the job (as the dock's Stop does)."""

    def __init__(self, *args: Any, on_cancel: Callable[[], None], **kwargs: Any) -> None:
        self._on_cancel = on_cancel
        super().__init__(*args, **kwargs)

    def cancel(self) -> None:
        super().cancel()
        self._on_cancel()


class JobActivity:
    """One job's bar in napari's activity dock: ``start()`` shows it, ``update(events)`` follows the job,
    ``close()`` ends it (for good: a later ``start`` shows nothing). ``stop``: what napari's Cancel does
    (None: no Cancel button, e.g. for a load, which cannot stop).

    ``start`` runs from the event loop (``QTimer.singleShot(0, ...)``), not inside the dock's click handler:
    napari's activity dock runs the event loop when a bar is added (and on each change), which would deliver
    the job's outcome before the dock has noted what it started. Events that arrive meanwhile are kept: the
    bar shows the latest state once it is there.
    """

    def __init__(self, task: str, stop: Callable[[], None] | None = None) -> None:
        self.title = self.description = TITLES.get(task, task)
        self.stop = stop
        self.total, self.value = 0, 0  # the bar's state: total 0 is indeterminate
        self.bar: progress | None = None
        self.closed = False
        self._token_shown = 0.0

    def start(self) -> None:
        """Show the bar (from the event loop; nothing once closed or shown)."""
        if self.closed or self.bar is not None:
            return
        options = {"desc": self.title, "total": 0, "bar_format": "{desc}|{elapsed}"}  # label: the time
        bar = (_StoppableProgress(on_cancel=self.stop, **options) if self.stop is not None
               else progress(**options))
        if self.closed:  # the job ended while napari added the bar
            bar.close()
            return
        self.bar = bar
        self._show()

    def update(self, events: list[Any]) -> None:
        """Follow a batch of the job's events: the last ``Progress``, or while writing the last ``Token``."""
        last = next((e for e in reversed(events) if isinstance(e, Progress | Token)), None)
        if isinstance(last, Token):
            now = time.monotonic()
            if now - self._token_shown < TOKEN_INTERVAL_S:
                return
            self._token_shown = now
            rate = f", {last.tokens_per_s:.1f} tokens/s" if last.tokens_per_s else ""
            self.description = f"Writing · {last.count} tokens{rate}"
        elif isinstance(last, Progress):
            self.description = last.message or last.stage
            fraction = last.fraction
            self.total = STEPS if fraction is not None else 0
            self.value = round(STEPS * min(max(fraction, 0.0), 1.0)) if fraction is not None else 0
        else:
            return
        self._show()

    def _show(self) -> None:
        """Bring the bar to the state (napari redraws, and runs the event loop, only for what changed)."""
        bar = self.bar
        if bar is None:
            return
        if bar.desc.removesuffix(": ") != self.description:
            bar.set_description(self.description)
        if bar.total != self.total:
            bar.total = self.total
        if bar.n != self.value:
            bar.update(self.value - bar.n)

    def close(self) -> None:
        """Take the bar out of the activity dock (safe to call more than once)."""
        self.closed = True
        bar, self.bar = self.bar, None
        if bar is not None:
            bar.close()
