"""``export_report``: pick the format, refuse to overwrite unless asked, and write the file atomically.

Every renderer returns the whole file as bytes; this module alone touches the file system, so each format
gets the same rules: a missing folder or an existing file is a one-line ``ExportError``, and a failed
export never leaves a half-written file behind (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from napari_radreport.common import one_line, write_atomic
from napari_radreport.export.content import ExportError
from napari_radreport.export.dicom_sr import render_sr
from napari_radreport.export.formats import FORMATS, SUFFIXES
from napari_radreport.export.pdf import render_pdf
from napari_radreport.export.record import ReportRecord
from napari_radreport.export.text import render_json, render_md, render_txt

RENDERERS: dict[str, Callable[[ReportRecord], bytes]] = {
    "txt": render_txt, "md": render_md, "json": render_json, "pdf": render_pdf, "sr": render_sr}


def format_for(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format named by ``fmt``, or the one the suffix of ``path`` implies."""
    allowed = " ".join(SUFFIXES.values())
    if fmt is not None:
        if fmt not in FORMATS:
            raise ExportError(f"{path}: unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    by_suffix = {s: f for f, s in SUFFIXES.items()}
    if suffix not in by_suffix:
        raise ExportError(f"{path}: cannot tell the export format from the suffix {suffix or '(none)'!r}; "
                          f"use one of {allowed}")
    return by_suffix[suffix]


def _write(path: Path, data: bytes, overwrite: bool) -> None:
    try:
        write_atomic(path, data, overwrite=overwrite)
    except FileExistsError as exc:  # appeared while rendering
        raise ExportError(f"{path} exists; not overwritten") from exc
    except OSError as exc:
        raise ExportError(f"{path}: cannot be written ({exc.strerror or one_line(exc)})") from exc


def export_report(record: ReportRecord, path: str | os.PathLike, fmt: str | None = None, *,
                  overwrite: bool = False) -> Path:
    """Write ``record`` to ``path`` as ``fmt`` (default: from the suffix) and return the path written.

    Raises ExportError (one line naming the path) for an unknown format, a missing folder, an existing
    file when ``overwrite`` is False, an empty report, or any failure while rendering or writing.
    """
    path = Path(path)
    fmt = format_for(path, fmt)
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(f"{path}: folder {parent} does not exist")
    if path.is_dir():
        raise ExportError(f"{path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise ExportError(f"{path} exists; not overwritten")
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
