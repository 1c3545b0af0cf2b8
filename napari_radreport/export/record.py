"""What an export writes: the final text, the AI draft it came from, and how that draft was produced.

No Qt, no torch. The docks and the command line build a ``ReportRecord``; each writer in this package
turns one into a file.

The record keeps the source paths (the DICOM SR reads the source headers for its references), but
``as_dict`` (the JSON export) leaves them out unless ``include_paths``: folder and file names often hold
patient names, and a report shared with someone else has no use for this machine's paths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_radreport.consistency import Conflict


@dataclass
class Provenance:
    """How the AI draft was produced (all that is needed to reproduce it)."""

    model_name: str = ""
    model_path: str = ""
    weights_sha256: str = ""  # over the weight files, in name order
    adapter: str = ""
    recipe: str = ""
    task: str = ""  # report_task(): "report:findings+impression", "report:findings;regions=chest"
    generation: dict[str, Any] = field(default_factory=dict)  # GenerationSettings: max_new_tokens, seed...
    device: str = ""
    dtype: str = ""  # the compute dtype
    quantization: str = "none"  # weight-only "int8" / "int4" (modeling/quantize.py), else "none"
    generated_at: str = ""  # ISO 8601, UTC
    software_version: str = ""
    weight_problems: list[str] = field(default_factory=list)  # loaded with allow_partial: tensors missing...
    scope: dict[str, Any] = field(default_factory=dict)  # the study against the model's scope (ScopeVerdict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StudyReference:
    """The study the report is about, as far as the input said (anonymised data may leave fields empty)."""

    study_uid: str = ""
    series_uids: list[str] = field(default_factory=list)
    patient_id: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_description: str = ""
    modality: str = ""
    source: list[str] = field(default_factory=list)  # the files or folders that were opened
    dicom_files: list[str] = field(default_factory=list)  # source DICOM instances (for SR references)
    mixed_patients: int = 0  # how many patients the images come from when more than one (opened as allowed)
    # each radiograph's DICOM file, in the set's order ("" for a picture): what an SR location references
    radiograph_files: list[str] = field(default_factory=list)

    PATH_FIELDS = ("source", "dicom_files", "radiograph_files")

    def as_dict(self, *, include_paths: bool = True) -> dict[str, Any]:
        """All fields; without ``include_paths`` the local paths (``PATH_FIELDS``) are left out."""
        data = asdict(self)
        return data if include_paths else {k: v for k, v in data.items() if k not in self.PATH_FIELDS}

    @classmethod
    def from_study(cls, study) -> StudyReference:
        """From a ``napari_radreport.io.Study``; source files are sniffed to tell DICOM from NIfTI or PNG.

        A study of several patients (``study.extra["patients"]``, opened as allowed) keeps no patient ID,
        study UID, accession number or study date: those of its first image are one patient's, and would be
        put on the other patients' images."""
        from napari_radreport.io.dicom_headers import looks_like_dicom

        tags = study.tags
        series = sorted({im.tags.series_uid for im in study.images if im.tags.series_uid})
        files = dict.fromkeys(str(f) for im in study.images for f in im.source_files)  # ordered, unique
        dicom = [f for f in files if looks_like_dicom(f)]
        mixed = study.mixed_patients
        own = {} if mixed else {"study_uid": tags.study_uid, "patient_id": tags.patient_id,
                                "accession_number": tags.accession_number, "study_date": tags.study_date}
        radiographs = ([next((str(f) for f in im.source_files if looks_like_dicom(f)), "")
                        for im in study.images] if study.kind == "xray_set" else [])
        return cls(series_uids=series, study_description=tags.study_description, modality=study.modality,
                   source=[str(s) for s in study.extra.get("input", study.source)], dicom_files=dicom,
                   mixed_patients=mixed, radiograph_files=radiographs, **own)


# How a generation can end without its whole text, and what the exported report then says.
INCOMPLETE = {"stopped": "generation was stopped", "failed": "generation failed",
              "generating": "generation did not finish"}


@dataclass
class ReportRecord:
    """A report ready to export."""

    final_text: str
    ai_draft: str = ""
    reviewed: bool = False  # the user marked the draft as reviewed
    reviewer: str = ""  # who signed it off (Draft.reviewer); "" when not reviewed, or reviewed unnamed
    reviewed_at: str = ""  # when, ISO 8601 with the UTC offset
    study: StudyReference = field(default_factory=StudyReference)
    provenance: Provenance = field(default_factory=Provenance)
    title: str = "Radiology report (draft)"
    stop_reason: str = ""  # how the generation ended: "eos", "length", one of INCOMPLETE, "" unknown
    include_paths: bool = False  # keep the source paths in the JSON export (radreport report --include-paths)
    diagnosis: dict[str, float] = field(default_factory=dict)  # the model's own, label -> P(yes)
    # where the draft's sentences were located (GroundedSentence.as_dict of each; empty: never grounded)
    grounding: list[dict[str, Any]] = field(default_factory=list)

    @property
    def conflicts(self) -> list[Conflict]:
        """Where the final text contradicts itself or the model's diagnosis (consistency.py)."""
        from napari_radreport.consistency import find_conflicts

        return find_conflicts(self.final_text, self.diagnosis)

    @property
    def complete(self) -> bool:
        """False when the generation was stopped, failed or never finished."""
        return self.stop_reason not in INCOMPLETE

    @property
    def out_of_scope_reason(self) -> str:
        """Why the study is outside what the model was made for; '' when it is within (or was not checked)."""
        scope = self.provenance.scope
        return "; ".join(scope.get("reasons", [])) if scope and not scope.get("in_scope", True) else ""

    @property
    def incomplete_reason(self) -> str:
        """What an incomplete report says about itself ("generation was stopped"); '' when complete."""
        return INCOMPLETE.get(self.stop_reason, "")

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "final_text": self.final_text, "ai_draft": self.ai_draft,
                "reviewed": self.reviewed, "reviewer": self.reviewer, "reviewed_at": self.reviewed_at,
                "complete": self.complete, "stop_reason": self.stop_reason,
                "study": self.study.as_dict(include_paths=self.include_paths),
                "provenance": self.provenance.as_dict(), "include_paths": self.include_paths,
                "scope": self.provenance.scope or None, "diagnosis": self.diagnosis,
                "conflicts": [c.as_dict() for c in self.conflicts], "sentences": self.sentences}

    @property
    def sentences(self) -> list[dict[str, Any]]:
        """The final text's Findings and Impression sentences with their locations (grounding/matching.py)."""
        from napari_radreport.grounding.matching import export_sentences

        return export_sentences(self.final_text, self.grounding)
