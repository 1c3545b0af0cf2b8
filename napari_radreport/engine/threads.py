"""How many CPU threads the engine's torch runs, and how its OpenMP threads wait. No torch at import, no Qt.

* **Threads**: the cores this process may really use, the smaller of its CPU affinity and its cgroup CPU
  quota (a container limited to 2 CPUs on a 64-core host). torch's own default counts the affinity only, so
  such a container ran 64 threads on 2 CPUs. ``RADREPORT_THREADS=N`` chooses N; a user's ``OMP_NUM_THREADS``
  is left as torch read it.
* **Waiting**: GNU OpenMP (torch's CPU backend on Linux) spins up to ~300,000 times between parallel regions.
  While another process wants the same cores, a spinning helper burns the time slice a working one needs, and
  every small kernel waits on a descheduled helper (a report 18x slower under load).
  ``OMP_WAIT_POLICY=PASSIVE`` makes helpers sleep at once. OpenMP reads it when torch is first imported, so
  ``prefer_passive_waiting`` runs at the entry points before anything imports torch; a user's own value wins,
  and in a process that imported torch earlier (another napari plugin) it cannot apply. Training is left to
  spin (``radreport train``; ``without_wait_default`` for its processes): on a machine of its own, passive
  waiting made the bench's training step 1.04 s instead of 0.79 s (the 0.17 B decoding: 2-14 %).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
THREADS_ENV = "RADREPORT_THREADS"
WAIT_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}  # set before torch loads OpenMP, unless the user set it
WAIT_DEFAULTED = "RADREPORT_WAIT_DEFAULTED"  # in the environment when WAIT_DEFAULTS are ours, not the user's


def affinity_cores() -> int:
    """CPUs this process may be scheduled on (``os.cpu_count()`` where affinity is unknown)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # macOS, Windows
        return max(os.cpu_count() or 1, 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def _quota_cores(quota: str | None, period: str | None) -> int | None:
    """ceil(quota / period), or None for no limit ("max", -1, missing or unreadable)."""
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return max(math.ceil(q / p), 1) if q > 0 and p > 0 else None


def _own_paths(proc_cgroup: Path) -> dict[str, str]:
    """This process's cgroup path per controller from /proc/self/cgroup ("" for cgroup v2's unified line)."""
    paths = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        _id, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        for name in controllers.split(","):
            paths[name] = path.strip("/")
    return paths


def _upwards(base: Path, relative: str) -> list[Path]:
    """``base/relative`` and each folder above it up to ``base`` (a quota anywhere above applies too)."""
    folder, found = base / relative if relative else base, []
    while True:
        found.append(folder)
        if folder == base or base not in folder.parents:
            return found
        folder = folder.parent


def cgroup_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The CPUs the cgroup CPU quota allows, rounded up (None: no quota). cgroup v2 ``cpu.max`` ("max
    100000" is no limit); v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 is no limit); the smallest quota
    from this process's own cgroup up to ``root``."""
    own = _own_paths(proc_cgroup)
    limits = []
    for folder in _upwards(root, own.get("", "")):
        fields = (_read(folder / "cpu.max") or "").split()
        limits.append(_quota_cores(*fields[:2]) if len(fields) == 2 else None)
    for v1 in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for folder in _upwards(root / v1, own.get("cpu", "")):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            limits.append(_quota_cores(quota, period))
    found = [n for n in limits if n is not None]
    return min(found) if found else None


def usable_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The cores this process may really use: its affinity, capped by the cgroup CPU quota; at least 1."""
    quota = cgroup_cores(root, proc_cgroup)
    return max(min(affinity_cores(), quota or sys.maxsize), 1)


@functools.cache
def _cores_now() -> int:
    """``usable_cores()`` counted once: the engine's thread asks before every job."""
    return usable_cores()


@dataclass(frozen=True)
class ThreadPlan:
    """torch's intra-op threads for the engine (None: leave torch's own choice) and why."""

    threads: int | None
    reason: str


def thread_plan(environ: Mapping[str, str] = os.environ, cores: int | None = None) -> ThreadPlan:
    """``RADREPORT_THREADS`` if set; else a user's ``OMP_NUM_THREADS`` as torch read it (None); else the
    usable cores (``cores``, or counted once per process)."""
    chosen = environ.get(THREADS_ENV, "").strip()
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise ValueError(f"{THREADS_ENV} must be a whole number of threads >= 1, not {chosen!r}")
        return ThreadPlan(int(chosen), THREADS_ENV)
    if environ.get("OMP_NUM_THREADS", "").strip():
        return ThreadPlan(None, "OMP_NUM_THREADS")
    return ThreadPlan(cores if cores is not None else _cores_now(), "usable cores (affinity, cgroup quota)")


def prefer_passive_waiting(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose how OpenMP waits (it or ``GOMP_SPINCOUNT``); call
    before anything imports torch. False (and nothing set) once torch is imported: OpenMP has read its
    settings then."""
    if "torch" in sys.modules:
        return False
    if not any(environ.get(name) for name in (*WAIT_DEFAULTS, "GOMP_SPINCOUNT")):
        environ.update({**WAIT_DEFAULTS, WAIT_DEFAULTED: "1"})
    return True


def without_wait_default(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``environ`` without the waiting ``prefer_passive_waiting`` chose (a user's own setting stays): for a
    process that should spin, as training does."""
    if not environ.get(WAIT_DEFAULTED):
        return dict(environ)
    return {k: v for k, v in environ.items() if k not in (*WAIT_DEFAULTS, WAIT_DEFAULTED)}


_applied: ThreadPlan | None = None


def apply_thread_plan(plan: ThreadPlan | None = None) -> ThreadPlan:
    """Give torch the plan's threads (``thread_plan()`` by default); run on the engine's thread before its
    tasks. Applied once per plan, so a script's own ``torch.set_num_threads`` between tasks stays."""
    global _applied
    plan = plan or thread_plan()
    if plan == _applied:
        return plan
    import torch

    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
        with contextlib.suppress(RuntimeError):  # allowed once, before any inter-op work started
            torch.set_num_interop_threads(plan.threads)
    _applied = plan
    return plan


def thread_policy() -> dict[str, object]:
    """What decides this process's threads, for benchmarks and bug reports."""
    plan = thread_plan()
    return {"usable_cores": usable_cores(), "affinity_cores": affinity_cores(),
            "cgroup_cores": cgroup_cores(), "threads": plan.threads, "reason": plan.reason,
            **{name: os.environ.get(name) for name in (*WAIT_DEFAULTS, "OMP_NUM_THREADS", THREADS_ENV)}}
