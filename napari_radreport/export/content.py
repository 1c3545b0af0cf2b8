"""What every export format shows, decided once: status line, study identifiers, provenance, sections.

No Qt, no torch, no heavy imports. The text, Markdown, PDF and DICOM SR writers all read from here, so the
formats cannot drift apart on what a report says about itself.
"""

from __future__ import annotations

import re

from napari_radreport.export.record import ReportRecord

STATUS_DRAFT = "AI draft, not reviewed"
STATUS_REVIEWED = "Reviewed by the user"

_SECTION = re.compile(r"^\s*(findings?|impressions?)\s*:\s*(.*)$", re.IGNORECASE)


class ExportError(Exception):
    """A report could not be exported; the message is one line naming the path and the reason."""


class ExportExists(ExportError):
    """The export's file exists and replacing it was not asked for."""


def reviewed_by(reviewer: str, reviewed_at: str) -> str:
    """The sign-off as the editor and the exports show it: "Reviewed by NAME, TIME" (STATUS_REVIEWED for a
    draft reviewed before names were recorded)."""
    if not reviewer:
        return STATUS_REVIEWED
    return f"Reviewed by {reviewer}, {reviewed_at}" if reviewed_at else f"Reviewed by {reviewer}"


def status_line(record: ReportRecord) -> str:
    """Whether a person reviewed the AI draft (who, when), and "; incomplete: generation was stopped" (or why
    else) when the generation did not end by itself; out of scope, mixed patients and the text's conflicts
    (with itself or the model's diagnosis) are said here too."""
    status = reviewed_by(record.reviewer, record.reviewed_at) if record.reviewed else STATUS_DRAFT
    if record.provenance.weight_problems:
        status += "; written by a model with incomplete weights (unreliable)"
    if record.out_of_scope_reason:
        status += f"; OUT OF THE MODEL'S SCOPE: {record.out_of_scope_reason}"
    if record.study.mixed_patients:
        status += (f"; MIXED PATIENTS: the images come from {record.study.mixed_patients} patients "
                   "(no patient identity given)")
    conflicts = record.conflicts
    if conflicts:
        noun = "conflict" if len(conflicts) == 1 else "conflicts"
        status += f"; {len(conflicts)} {noun} in the text: {'; '.join(c.message for c in conflicts)}"
    return status if record.complete else f"{status}; incomplete: {record.incomplete_reason}"


def _dicom_date(value: str) -> str:
    """DICOM DA (YYYYMMDD) as ISO 8601; anything else unchanged."""
    value = value.strip()
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def identifiers(record: ReportRecord) -> list[tuple[str, str]]:
    """(label, value) for the study identifiers that exist, in a fixed order."""
    study = record.study
    rows = [
        ("Patient ID", study.patient_id),
        ("Study UID", study.study_uid),
        ("Accession", study.accession_number),
        ("Study date", _dicom_date(study.study_date)),
        ("Modality", study.modality),
        ("Study description", study.study_description),
    ]
    return [(label, value.strip()) for label, value in rows if value and value.strip()]


def software_version(record: ReportRecord) -> str:
    """The version that produced the draft, or this package's version when the record does not say."""
    if record.provenance.software_version:
        return record.provenance.software_version
    from napari_radreport import __version__

    return __version__


def provenance_items(record: ReportRecord, *, full_hash: bool = False) -> list[tuple[str, str]]:
    """(label, value) for the short provenance footer; empty fields are left out, the hash cut to 12."""
    prov = record.provenance
    rows = [
        ("Model", prov.model_name),
        ("Adapter", prov.adapter),
        ("Weights SHA-256", prov.weights_sha256 if full_hash else prov.weights_sha256[:12]),
        ("Task", prov.task),
        ("Generated at", prov.generated_at),
        ("Software", f"napari-radreport {software_version(record)}"),
    ]
    return [(label, value) for label, value in rows if value]


def provenance_line(record: ReportRecord, *, full_hash: bool = False) -> str:
    """The provenance footer as one line."""
    return "; ".join(f"{label}: {value}" for label, value in provenance_items(record, full_hash=full_hash))


def sections(text: str) -> list[tuple[str, str]]:
    """Split a report into ("Findings" | "Impression", text) parts, in order, dropping empty parts.

    Lines starting with "Findings:" or "Impression:" (any case, singular or plural) open a section; text
    before the first such line, or the whole text when there is none, counts as findings.
    """
    parts: list[tuple[str, list[str]]] = [("Findings", [])]
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            name = "Impression" if match.group(1).lower().startswith("impression") else "Findings"
            parts.append((name, [match.group(2)] if match.group(2).strip() else []))
        else:
            parts[-1][1].append(line)
    result = [(name, "\n".join(lines).strip()) for name, lines in parts]
    return [(name, body) for name, body in result if body]
