"""Run engine work in a background thread: events through a queue, a stop flag, the result or the error.

``Job`` is plain threading (no Qt): scripts iterate ``job.events()``; the docks poll ``job.drain()`` from
a Qt timer, so no Qt object is ever touched from the worker thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class Job:
    """One call of ``fn(*args, on_event=..., stop=..., **kwargs)`` in a daemon thread."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "radreport-job",
                 on_done: Callable[[Job], None] | None = None, **kwargs: Any):
        self.stop_event = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._result: Any = None
        self.error: BaseException | None = None
        self._on_done = on_done
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = self._fn(*self._args, on_event=self._queue.put, stop=self.stop_event, **self._kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, never swallowed
            self.error = exc
        finally:
            if self._on_done is not None:
                self._on_done(self)
            self._queue.put(_DONE)

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the work to stop; generation checks this flag before every decoding step."""
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> Any:
        """The return value, or the worker's exception raised here."""
        if not self.join(timeout):
            raise TimeoutError("the job is still running")
        if self.error is not None:
            raise self.error
        return self._result

    # -- events ----------------------------------------------------------------------------
    def drain(self) -> tuple[list[Any], bool]:
        """Events waiting now (never blocks) and whether the job has finished."""
        events, finished = [], False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return events, finished
            if item is _DONE:
                finished = True
            else:
                events.append(item)

    def events(self, timeout: float | None = None):
        """Iterate events as they come until the job ends (then ``result()`` gives the outcome)."""
        while True:
            item = self._queue.get(timeout=timeout)
            if item is _DONE:
                return
            yield item


_DONE = object()
