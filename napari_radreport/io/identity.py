"""Whose study this is, in the one line every dock shows above its work (what a PACS shows in its header)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_radreport.io.study import Study

UNKNOWN_PATIENT = "patient not identified"
KIND_WORDS = {"xray_set": "radiographs", "volume": "volume", "image": "image"}  # when no Modality tag says


def display_name(value: Any) -> str:
    """A DICOM PatientName as people read it: "DOE^JOHN^A" -> "DOE, JOHN A"; the alphabetic group only (before
    '='); "" when empty."""
    from napari_radreport.io.dicom_headers import alphabetic_group

    parts = [" ".join(p.replace("\x00", " ").split()) for p in alphabetic_group(value).split("^")]
    family, given = (parts + ["", ""])[:2]
    rest = " ".join(p for p in parts[2:] if p)
    first = " ".join(p for p in (given, rest) if p)
    return ", ".join(p for p in (family, first) if p)


def study_date(value: str) -> str:
    """A DICOM date (YYYYMMDD) as YYYY-MM-DD; anything else as written."""
    value = value.strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def identity_line(study: Study, name: str = "") -> str:
    """Patient name and ID, study date, series description (or ``name``, the layer's), modality and image
    count: e.g. "DOE, JOHN · ID 12345 · 2024-03-01 · CHEST 1.25 B30f · CT". Files with no identity (NIfTI,
    PNG) say so."""
    tags = study.tags
    patient = [p for p in (tags.patient_name, f"ID {tags.patient_id}" if tags.patient_id else "") if p]
    if study.mixed_patients:
        patient = [f"MIXED PATIENTS ({study.mixed_patients})"]
    what = tags.series_description or tags.study_description or name
    count = f"{len(study.images)} images" if len(study.images) > 1 else ""
    date = study_date(tags.study_date or tags.series_date or tags.acquisition_date)
    modality = study.modality or KIND_WORDS.get(study.kind, study.kind.upper())
    parts = [*(patient or [UNKNOWN_PATIENT]), date, what, modality, count]
    return " · ".join(p for p in parts if p)
