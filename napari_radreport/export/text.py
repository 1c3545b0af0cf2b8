"""Plain-text, Markdown and JSON renderings of a ``ReportRecord`` (each returns the file's bytes).

None of them writes a file path: text and Markdown show identifiers and provenance only, and the JSON leaves
the study's source paths out unless the record's ``include_paths`` says otherwise.
"""

from __future__ import annotations

import json

from napari_radreport.common import text_diff, utc_now
from napari_radreport.export.content import identifiers, provenance_items, status_line
from napari_radreport.export.record import ReportRecord

JSON_FORMAT = "napari-radreport report"
# 2: status, complete, stop_reason; source paths only when asked. 3: reviewer, reviewed_at
JSON_FORMAT_VERSION = 3


def render_txt(record: ReportRecord) -> bytes:
    """Title, status, identifiers, the final text and a short provenance footer."""
    lines = [record.title, "=" * len(record.title), f"Status: {status_line(record)}"]
    ids = identifiers(record)
    if ids:
        width = max(len(label) for label, _ in ids) + 1
        lines += [""] + [f"{label + ':':<{width}} {value}" for label, value in ids]
    lines += ["", record.final_text.strip(), "", "-" * 40, "Provenance"]
    lines += [f"  {label}: {value}" for label, value in provenance_items(record)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _md_cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_md(record: ReportRecord) -> bytes:
    """The plain-text content as Markdown: heading, status, identifier table, text, provenance list."""
    lines = [f"# {record.title}", "", f"**Status:** {status_line(record)}", ""]
    ids = identifiers(record)
    if ids:
        lines += ["| Identifier | Value |", "|---|---|"]
        lines += [f"| {_md_cell(label)} | {_md_cell(value)} |" for label, value in ids]
        lines.append("")
    # Two trailing spaces keep the report's own line breaks when the Markdown is rendered.
    text_lines = record.final_text.strip().splitlines()
    body = "\n".join(line.rstrip() + "  " if line.strip() else "" for line in text_lines)
    lines += [body, "", "---", "", "**Provenance**", ""]
    lines += [f"- {label}: `{value}`" if label == "Weights SHA-256" else f"- {label}: {value}"
              for label, value in provenance_items(record)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def report_diff(record: ReportRecord) -> str:
    """Unified diff from the AI draft to the final text (empty when the user changed nothing)."""
    return text_diff(record.ai_draft, record.final_text, "ai_draft", "final_text")


def render_json(record: ReportRecord) -> bytes:
    """``record.as_dict()`` (no source paths unless ``include_paths``) plus format tag, export time, the
    status line and the draft-to-final diff, UTF-8, indented."""
    data = {"format": JSON_FORMAT, "format_version": JSON_FORMAT_VERSION, "exported_at": utc_now(),
            "status": status_line(record), **record.as_dict(), "diff": report_diff(record)}
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
