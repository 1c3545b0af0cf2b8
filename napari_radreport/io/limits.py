"""Input limits: the memory budget a reader may fill, checked against what a header claims before any
voxel is read."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from napari_radreport.io.study import StudyReadError

MAX_VOLUME_ENV = "RADREPORT_MAX_VOLUME_MB"
# Reading briefly holds a second copy (rescale, reorientation), so the default leaves the other half for it.
BUDGET_SHARE = 0.5
FALLBACK_BUDGET_BYTES = 4096 * 2**20  # where the available memory cannot be read
# Deflate never expands a stream more than 1032-fold (a 258-byte match coded in 2 bits; zlib's technical
# notes): a .gz file of N bytes cannot hold more than 1032 * N bytes, whatever its header says.
DEFLATE_MAX_RATIO = 1032
MB = 2**20


def describe(shape, dtype) -> str:
    """``2000 x 2000 x 2000 float32``."""
    return f"{' x '.join(str(int(n)) for n in shape)} {np.dtype(dtype)}"


def megabytes(n: int | float) -> str:
    """A size for a message: bytes below 1 MB, else MB (2**20 bytes, as in RADREPORT_MAX_VOLUME_MB)."""
    if n < MB:
        return f"{int(n):,} bytes"
    return f"{n / MB:.1f} MB" if n < 10 * MB else f"{n / MB:,.0f} MB"


def nbytes(shape, dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (exact integers: a lying header may overflow int64)."""
    return math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize


def meminfo_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (what Linux can hand out without swapping); None elsewhere."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
        return None if text in ("", "max") else int(text)
    except (OSError, ValueError):
        return None


def _cgroup_room() -> int | None:
    """What is left under this process's cgroup memory limit (v2, else v1); None when unlimited."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2**60:
            return max(0, limit - usage)
    return None


def _address_space_room() -> int | None:
    """What is left under RLIMIT_AS (``ulimit -v``), from this process's current virtual size."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    used = 0
    try:
        with open("/proc/self/status") as handle:
            used = next((int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:")), 0)
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - used)


def _other_platforms() -> int | None:
    """Free memory where /proc/meminfo is absent: psutil when installed (napari brings it), else sysconf."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no answer on this platform
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def available_memory() -> tuple[int | None, str]:
    """Bytes this process may still fill, and what bounds it (the smallest of the limits that apply)."""
    found = [(v, what) for v, what in ((meminfo_available(), "available memory"),
                                       (_cgroup_room(), "memory left under the cgroup limit"),
                                       (_address_space_room(), "address space left under RLIMIT_AS"))
             if v is not None]
    if not any(what == "available memory" for _, what in found):
        other = _other_platforms()
        if other is not None:
            found.append((other, "available memory"))
    return min(found) if found else (None, "")


@dataclass
class MemoryBudget:
    """How many bytes one ``load_study`` may build; each image claims its share before it is read."""

    limit: int
    source: str
    used: int = 0

    @classmethod
    def resolve(cls, max_bytes: int | None = None) -> MemoryBudget:
        """``max_bytes`` if given, else $RADREPORT_MAX_VOLUME_MB, else half of the available memory."""
        if max_bytes is not None:
            real = (int, float, np.integer, np.floating)
            number = isinstance(max_bytes, real) and not isinstance(max_bytes, bool)
            if not number or not math.isfinite(max_bytes) or max_bytes < 1:
                raise StudyReadError(f"max_bytes={max_bytes!r}: give a positive number of bytes")
            return cls(int(max_bytes), f"max_bytes={int(max_bytes)}")
        text = os.environ.get(MAX_VOLUME_ENV, "").strip()
        if text:
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value <= 0:
                raise StudyReadError(f"{MAX_VOLUME_ENV}={text!r}: give a positive number of megabytes")
            return cls(int(value * MB), f"{MAX_VOLUME_ENV}={text}")
        available, what = available_memory()
        if available is None:
            return cls(FALLBACK_BUDGET_BYTES, "a fixed default: the available memory could not be read")
        return cls(int(available * BUDGET_SHARE), f"half of the {megabytes(available)} of {what}")

    def claim(self, path, shape, dtype, what: str = "volume") -> None:
        """Count an image of ``shape`` and ``dtype`` against the budget, or refuse it in one line."""
        need = nbytes(shape, dtype)
        if self.used + need > self.limit:
            taken = f", {megabytes(self.used)} already taken by this input" if self.used else ""
            article = "an" if what[:1] in "aeiou" else "a"
            raise StudyReadError(
                f"{path}: the header describes {article} {what} of {describe(shape, dtype)} "
                f"({megabytes(need)}), over the memory budget of {megabytes(self.limit)} "
                f"({self.source}{taken}); raise it with {MAX_VOLUME_ENV}=<MB> or "
                "load_study(..., max_bytes=...)"
            )
        self.used += need


def budget_or_default(budget: MemoryBudget | None) -> MemoryBudget:
    return budget if budget is not None else MemoryBudget.resolve()
