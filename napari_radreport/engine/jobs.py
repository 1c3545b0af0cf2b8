"""Run engine work in a background thread: events through a queue, a stop flag, the result or the error.

``Job`` is plain threading (no Qt): scripts iterate ``job.events()`` then take ``job.result()``; the docks
poll ``job.drain()`` from a Qt timer and read ``job.outcome()``, so no Qt object is touched from the worker.

The engine runs all its jobs on one long-lived ``WorkerThread``. PyTorch's CPU kernels run on an OpenMP
thread team that belongs to the calling thread; once a process has more team threads than CPUs, GNU
OpenMP stops spinning between parallel regions (100 spins instead of 300,000) and every small kernel pays
for waking its helpers. A second team made decoding 1.3-1.5x (0.26 B model) to 2.9x (6 M model) slower on a
2-core machine (``radreport bench``, "second OpenMP team"); one model thread keeps one team.

Before its jobs the thread gives torch the engine's thread count (``threads.apply_thread_plan``: the cores
the process may really use), and before it starts it asks OpenMP to wait passively if torch is not imported
yet (``threads.prefer_passive_waiting``): spinning helpers collapsed decoding 18x while other work shared
the cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from napari_radreport.engine import threads


class Job:
    """One call of ``fn(*args, on_event=..., stop=..., **kwargs)`` on a ``WorkerThread``."""

    def __init__(self, fn: Callable[..., Any], *args: Any,
                 on_done: Callable[[Job], None] | None = None, on_event: Callable[[Any], None] | None = None,
                 stop_event: threading.Event | None = None, **kwargs: Any):
        """``on_event`` (called in the worker thread) replaces the event queue;
        ``stop_event`` the stop flag."""
        self.stop_event = stop_event or threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._on_event = on_event or self._queue.put
        self._result: Any = None
        self.error: BaseException | None = None
        self._on_done = on_done
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._started = False
        self._done = threading.Event()

    def start(self, worker: WorkerThread) -> Job:
        """Run on ``worker``, after the jobs queued before it."""
        self._started = True
        worker.submit(self)
        return self

    def run(self, setup: Callable[[], Any] | None = None) -> None:
        """Run here, in the calling thread (what a worker thread does), after ``setup()`` (whose error is the
        job's)."""
        try:
            if setup is not None:
                setup()
            self._result = self._fn(*self._args, on_event=self._on_event, stop=self.stop_event,
                                    **self._kwargs)
        except BaseException as exc:
            self.error = exc
        finally:
            if self._on_done is not None:
                self._on_done(self)
            self._done.set()
            self._queue.put(_DONE)

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the work to stop; generation checks this flag before every decoding step."""
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job; True when it has ended."""
        return self._done.wait(timeout)

    def outcome(self, timeout: float | None = None) -> tuple[Any, BaseException | None]:
        """(return value, None) or (None, the worker's exception), never raising it; waits up to ``timeout``
        s for the job to end (``TimeoutError`` if it has not)."""
        if not self.join(timeout):
            raise TimeoutError("the job is still running")
        return (None, self.error) if self.error is not None else (self._result, None)

    def result(self, timeout: float | None = None) -> Any:
        """The return value, or the worker's exception raised here."""
        value, error = self.outcome(timeout)
        if error is not None:
            raise error
        return value

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


class WorkerThread:
    """One daemon thread that runs submitted jobs in order; started on the first job, ended by ``close``.

    ``setup`` runs on the thread before each job (the default gives torch the engine's threads, once per
    plan, ``threads.apply_thread_plan``); None runs nothing.
    """

    def __init__(self, name: str = "radreport-engine",
                 setup: Callable[[], Any] | None = threads.apply_thread_plan):
        self.name = name
        self._setup = setup
        self._jobs: queue.SimpleQueue | None = None  # the running thread's own queue
        self._thread: threading.Thread | None = None
        self._closing: threading.Thread | None = None  # a closed thread finishing its last job
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                threads.prefer_passive_waiting()  # before the thread's first job imports torch
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._loop, args=(self._jobs, self._setup),
                                                name=self.name, daemon=True)
                self._thread.start()
            self._jobs.put(job)

    @property
    def alive(self) -> bool:
        """Whether a thread of this worker still runs (a closed one counts until it has ended)."""
        return any(t is not None and t.is_alive() for t in (self._thread, self._closing))

    @staticmethod
    def _loop(jobs: queue.SimpleQueue, setup: Callable[[], Any] | None) -> None:
        while (job := jobs.get()) is not None:
            job.run(setup)

    def close(self, timeout: float | None = None) -> bool:
        """End the thread after the jobs already queued; True when it has ended within ``timeout`` s."""
        with self._lock:
            if self._thread is not None:
                self._closing, self._thread = self._thread, None
                self._jobs.put(None)
                self._jobs = None
            thread = self._closing
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
