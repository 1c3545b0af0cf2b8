"""Small stdlib-only helpers shared across the package: one-line errors, atomic writes, UTC time, text diffs,
lazy package faces."""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


STALE_TMP_S = 60.0  # a temporary file of write_atomic this old is left from a killed write


def write_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = True,
                 mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it into place.

    A crash leaves either the old file or the new one, never half a file. With ``overwrite=False`` a file
    that appeared meanwhile is kept (``FileExistsError``). ``mode`` (0o600 for drafts) is set exactly,
    whatever the umask; without it permissions follow the umask, as for ``open``. The temporary file is
    ``.NAME.XXXXXXXX.tmp``; a process killed between its creation and the rename leaves it behind, so each
    write first removes the temporaries of the same target older than ``STALE_TMP_S`` (a younger one may
    belong to a write still running).
    """
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.chmod(tmp, mode)  # before any byte is written; os.open's mode is cut by the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not overwrite and path.exists():
            raise FileExistsError(errno.EEXIST, "exists; not overwritten", str(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(path: str | os.PathLike, older_than: float = STALE_TMP_S) -> list[Path]:
    """Remove ``write_atomic``'s temporaries of ``path`` (``.NAME.XXXXXXXX.tmp``) last modified more than
    ``older_than`` seconds ago; returns those removed (one that cannot be removed is skipped)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:  # no folder yet, or not listable: nothing to clean
        return removed
    now = time.time()
    for candidate in candidates:
        try:
            if now - candidate.lstat().st_mtime > older_than:
                candidate.unlink()
                removed.append(candidate)
        except OSError:
            continue
    return removed


def utc_now() -> str:
    """Current time, UTC, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def text_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    """Unified diff between two texts, line by line ('' when they are equal)."""
    return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), before_name, after_name,
                                          lineterm=""))


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package face (PEP 562): ``exports`` maps each public name to the
    submodule that defines it, imported on first access, so importing the package imports none of them."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*exports, *importlib.import_module(package).__dict__})

    return __getattr__, __dir__
