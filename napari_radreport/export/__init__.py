"""Exporting a drafted report: plain text, Markdown, JSON, PDF and DICOM SR. No Qt, no torch.

``export_report(record, path)`` picks the format from the suffix (``.txt .md .json .pdf .dcm``), never
overwrites unless asked, and writes atomically; failures are one-line ``ExportError`` messages.
``check_target(path, fmt)`` runs the same checks on the path alone (the CLI, before loading a model).
"""

from napari_radreport.export.content import ExportError, ExportExists
from napari_radreport.export.formats import EXPORT_FORMATS, FORMATS, SUFFIXES, dialog_filters
from napari_radreport.export.record import Provenance, ReportRecord, StudyReference
from napari_radreport.export.writers import check_target, export_report

__all__ = ["EXPORT_FORMATS", "FORMATS", "SUFFIXES", "ExportError", "ExportExists", "Provenance",
           "ReportRecord", "StudyReference", "check_target", "dialog_filters", "export_report"]
