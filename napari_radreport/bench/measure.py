"""Timing, peak memory and a description of the machine, for the benchmarks.

Times are medians of repeated runs after one untimed warm-up (first calls pay for imports, page cache and
allocator growth). Peak memory is the process's peak resident set size (RSS) while a step runs: on Linux the
kernel's high-water mark is reset before the step (``/proc/self/clear_refs``), elsewhere a thread samples the
RSS every 2 ms (which can miss short peaks; the result says which method measured it).
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")


def _status_kib(name: str) -> int | None:
    try:
        match = re.search(rf"^{name}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def rss_mib() -> float:
    """Resident memory of this process now, in MiB."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib / 1024
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    """``with PeakMemory() as peak: ...``; then ``peak.peak_mib`` (process peak RSS during the block)
    and ``peak.added_mib`` (that peak minus the RSS when the block began)."""

    start_mib: float = 0.0
    peak_mib: float = 0.0
    method: str = ""
    _samples: list[float] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def added_mib(self) -> float:
        return max(self.peak_mib - self.start_mib, 0.0)

    def __enter__(self) -> PeakMemory:
        self.start_mib = rss_mib()
        if _reset_high_water_mark() and _status_kib("VmHWM") is not None:
            self.method = "VmHWM"
        else:
            self.method = "sampled every 2 ms"
            self._done.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self._samples.append(rss_mib())

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            self.peak_mib = max([self.start_mib, rss_mib(), *self._samples])
        else:
            self.peak_mib = (_status_kib("VmHWM") or 0) / 1024

    def as_dict(self) -> dict[str, float]:
        return {"peak_rss_mib": round(self.peak_mib, 1), "added_mib": round(self.added_mib, 1)}


@dataclass
class Timed:
    """The median and every repeat of a timed call, its last result and the peak memory of all calls."""

    seconds: float
    runs: list[float]
    result: Any
    memory: PeakMemory

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": round(self.seconds, 4), "runs_s": [round(r, 4) for r in self.runs],
                **self.memory.as_dict()}


def timed(call: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> Timed:
    """Run ``call`` ``warmup`` times untimed, then ``repeats`` times; median wall-clock seconds."""
    for _ in range(warmup):
        call()
    runs, result = [], None
    with PeakMemory() as memory:
        for _ in range(max(repeats, 1)):
            start = time.perf_counter()
            result = call()
            runs.append(time.perf_counter() - start)
    return Timed(statistics.median(runs), runs, result, memory)


def timed_interleaved(calls: dict[Any, Callable[[], Any]], repeats: int = 3,
                      warmup: int = 1) -> dict[Any, Timed]:
    """Like :func:`timed` for several calls whose times are to be compared: round by round, one run of each.

    A burst of load from elsewhere on the machine then slows every call of that round, not only the call that
    happened to be measured at that moment, so ratios of the medians stay stable on a shared machine.
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    runs: dict[Any, list[float]] = {name: [] for name in calls}
    results: dict[Any, Any] = {}
    with PeakMemory() as memory:
        for _ in range(max(repeats, 1)):
            for name, call in calls.items():
                start = time.perf_counter()
                results[name] = call()
                runs[name].append(time.perf_counter() - start)
    return {name: Timed(statistics.median(runs[name]), runs[name], results[name], memory) for name in calls}


def ratio(slower: float, faster: float) -> float:
    """How many times faster ``faster`` is than ``slower`` (both in seconds)."""
    return round(slower / faster, 2) if faster > 0 else float("inf")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, GPU, Python and library versions."""
    import numpy
    import torch

    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # psutil comes with napari; keep the benchmarks usable without it
        memory_gib = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory_gib,
        "gpu": gpu,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
