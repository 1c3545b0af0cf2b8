"""The export formats, one row each: the name the command line takes, the file suffix, the file dialog's
label.

The CLI's ``--format`` choices, the suffix rules of ``export_report`` and the Report dock's file filters all
derive from ``EXPORT_FORMATS``; adding a format is one row here plus its renderer in ``writers.RENDERERS``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    name: str  # what --format takes
    suffix: str  # with the dot
    label: str  # what a file dialog shows


EXPORT_FORMATS = (
    ExportFormat("txt", ".txt", "Text"),
    ExportFormat("md", ".md", "Markdown"),
    ExportFormat("json", ".json", "JSON with provenance"),
    ExportFormat("pdf", ".pdf", "PDF"),
    ExportFormat("sr", ".dcm", "DICOM SR"),
)
FORMATS = tuple(f.name for f in EXPORT_FORMATS)
SUFFIXES = {f.name: f.suffix for f in EXPORT_FORMATS}


def dialog_filters() -> str:
    """Qt file-dialog filters, one per format: "Text (*.txt);;Markdown (*.md);;..."."""
    return ";;".join(f"{f.label} (*{f.suffix})" for f in EXPORT_FORMATS)
