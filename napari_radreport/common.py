"""Small stdlib-only helpers shared across the package: one-line errors, atomic writes, UTC time, text diffs,
lazy package faces."""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it into place.

    A crash leaves either the old file or the new one, never half a file. With ``overwrite=False`` a file
    that appeared meanwhile is kept (``FileExistsError``). Permissions follow the umask, as for ``open``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not overwrite and path.exists():
            raise FileExistsError(errno.EEXIST, "exists; not overwritten", str(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
