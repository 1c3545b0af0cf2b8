"""``export_report``: pick the format, refuse to overwrite unless asked, and write the file atomically.

Every renderer returns the whole file as bytes; this module alone touches the file system, so each format
gets the same rules (``check_target``: the format and suffix agree, the folder exists and is writable, an
existing file is kept unless asked) as one-line ``ExportError`` messages, and a failed export never leaves
a half-written file behind (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from napari_radreport.common import one_line, write_atomic
from napari_radreport.export.content import ExportError, ExportExists
from napari_radreport.export.dicom_sr import render_sr
from napari_radreport.export.formats import FORMATS, SUFFIXES
from napari_radreport.export.pdf import render_pdf
from napari_radreport.export.record import ReportRecord
from napari_radreport.export.text import render_json, render_md, render_txt

RENDERERS: dict[str, Callable[[ReportRecord], bytes]] = {
    "txt": render_txt, "md": render_md, "json": render_json, "pdf": render_pdf, "sr": render_sr}


def format_for(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format named by ``fmt``, or the one the suffix of ``path`` implies.

    A suffix the table gives another format is refused (``--format sr`` into ``x.txt`` would be DICOM in a
    text file); one it does not know ("report.out", none) is accepted when ``fmt`` names the format.
    """
    allowed = " ".join(SUFFIXES.values())
    suffix = Path(path).suffix.lower()
    by_suffix = {s: f for f, s in SUFFIXES.items()}
    if fmt is not None:
        if fmt not in FORMATS:
            raise ExportError(f"{path}: unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if by_suffix.get(suffix, fmt) != fmt:
            raise ExportError(f"{path}: the suffix {suffix} does not match the format {fmt} "
                              f"({fmt} files end in {SUFFIXES[fmt]}, {suffix} is {by_suffix[suffix]})")
        return fmt
    if suffix not in by_suffix:
        raise ExportError(f"{path}: cannot tell the export format from the suffix {suffix or '(none)'!r}; "
                          f"use one of {allowed}")
    return by_suffix[suffix]


def _cannot_create_in(folder: Path) -> str:
    """Why no file can be created in ``folder`` ('' when one can): a file is really made, then removed
    (permission bits alone say nothing about read-only mounts, ACLs or root)."""
    probe = folder / f".radreport-probe.{uuid.uuid4().hex[:8]}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        return exc.strerror or one_line(exc)
    with contextlib.suppress(OSError):
        probe.unlink()
    return ""


def check_target(path: str | os.PathLike, fmt: str | None = None, *,
                 overwrite: bool = False) -> tuple[Path, str]:
    """(path, format) when a report can be written there; otherwise an ``ExportError`` naming the path.

    The format is known and matches the suffix (``format_for``), the folder exists and takes new files, the
    path is not a folder, and it is not a file unless ``overwrite`` (``ExportExists``). ``export_report``
    runs these checks; the command line runs them before it loads a model.
    """
    path = Path(path)
    fmt = format_for(path, fmt)
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(f"{path}: folder {parent} does not exist")
    if path.is_dir():
        raise ExportError(f"{path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise ExportExists(f"{path} exists; not overwritten")
    reason = _cannot_create_in(parent)
    if reason:
        raise ExportError(f"{path}: folder {parent} is not writable ({reason})")
    return path, fmt


def _write(path: Path, data: bytes, overwrite: bool) -> None:
    try:
        write_atomic(path, data, overwrite=overwrite)
    except FileExistsError as exc:  # appeared while rendering
        raise ExportExists(f"{path} exists; not overwritten") from exc
    except OSError as exc:
        raise ExportError(f"{path}: cannot be written ({exc.strerror or one_line(exc)})") from exc


def export_report(record: ReportRecord, path: str | os.PathLike, fmt: str | None = None, *,
                  overwrite: bool = False) -> Path:
    """Write ``record`` to ``path`` as ``fmt`` (default: from the suffix) and return the path written.

    Raises ExportError (one line naming the path) for an unknown format or one the suffix contradicts, a
    missing or unwritable folder, an existing file when ``overwrite`` is False (``ExportExists``), an
    empty report, or any failure while rendering or writing.
    """
    path, fmt = check_target(path, fmt, overwrite=overwrite)
    if not record.final_text.strip():
        raise ExportError(f"{path}: nothing to export, the report text is empty")
    try:
        data = RENDERERS[fmt](record)
    except ExportError:
        raise
    except Exception as exc:  # a renderer failing on unusual input must not reach the UI as a traceback
        raise ExportError(f"{path}: {fmt} export failed ({type(exc).__name__}: {one_line(exc)})") from exc
    _write(path, data, overwrite)
    return path
