"""Input limits: the memory budget a reader may fill, checked against what a header claims before any
voxel is read (and against what a deflated DICOM file unpacks to before pydicom unpacks it)."""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

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
DEFLATED_SYNTAX = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
# Explicit VR elements whose length takes 4 bytes (after 2 reserved ones) instead of 2 (PS3.5 7.1.2).
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


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


def deflated_dicom_start(handle) -> int | None:
    """Where the deflated data set of an open DICOM file begins, or None when its file meta (group 0002)
    does not name Deflated Explicit VR Little Endian. As pydicom reads it: the meta starts after the preamble
    when there is one and ends at the first tag of another group; explicit VR, read as implicit where a VR
    is not two capitals (pydicom's fallback for such files)."""
    handle.seek(128)
    handle.seek(132 if handle.read(4) == b"DICM" else 0)
    deflated = False
    while len(element := handle.read(8)) == 8 and element[:2] == b"\x02\x00":
        vr = element[4:6]
        if vr in _LONG_VRS:
            length = int.from_bytes(handle.read(4), "little")
        elif vr.isalpha() and vr.isupper():
            length = int.from_bytes(element[6:8], "little")
        else:
            length = int.from_bytes(element[4:8], "little")
        if element[2:4] == b"\x10\x00":  # (0002,0010) TransferSyntaxUID
            deflated = handle.read(length).rstrip(b"\x00 ") == DEFLATED_SYNTAX
        else:
            handle.seek(length, os.SEEK_CUR)
    return handle.tell() - len(element) if deflated else None


def inflated_size(handle, cap: int, chunk: int = MB) -> int:
    """Bytes the raw deflate stream from the handle's position unpacks to, counted ``chunk`` at a time and
    only up to just past ``cap``: a bomb costs two chunks of memory and the time to unpack ``cap`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while total <= cap and not inflater.eof and (data := handle.read(chunk)):
        while data and total <= cap:
            total += len(inflater.decompress(data, chunk))
            data = inflater.unconsumed_tail
    return total


def check_deflated_dicom(path: str | Path, budget: MemoryBudget | None = None) -> None:
    """Refuse, in one line, a deflate-compressed DICOM file whose data set unpacks to more than the memory
    budget: pydicom inflates the whole data set in memory before it reads a tag, even the header. Other files
    cost one short read of their file meta; a broken file is left for pydicom to name."""
    try:
        with open(path, "rb") as handle:
            start = deflated_dicom_start(handle)
            if start is None:
                return
            budget = budget_or_default(budget)
            room = budget.limit - budget.used
            handle.seek(start)
            size = inflated_size(handle, room)
    except (OSError, zlib.error):
        return
    if size > room:
        packed, left = megabytes(os.path.getsize(path)), megabytes(room)
        raise StudyReadError(
            f"{path}: this deflate-compressed DICOM file ({packed}) unpacks to more than the {left} left of "
            f"the memory budget ({budget.source}), and pydicom unpacks it whole: refused as a possible "
            f"decompression bomb; raise the budget with {MAX_VOLUME_ENV}=<MB>"
        )
