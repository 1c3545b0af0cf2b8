"""DICOM Comprehensive SR rendering of a ``ReportRecord`` with highdicom.

The SR joins the source study: its Study Instance UID and patient identity come from the source DICOM
headers, and its evidence (Current Requested Procedure Evidence Sequence) lists every source instance
under its series. A study that did not come from DICOM (NIfTI, PNG) gets a new Study Instance UID and empty
patient fields. Content: Findings and Impressions containers (TID 2000 section codes) holding the text,
then a comment saying it is an AI draft and whether it was reviewed, and a comment with the provenance.
Completion Flag: COMPLETE only for a reviewed report whose generation ended by itself, about a study within
the model's scope; PARTIAL otherwise, with the Completion Flag Description "incomplete: generation was
stopped" (or why else), or "out of the model's scope" (the status comment says why).
Verification Flag (PS3.3 C.17.2): VERIFIED, with the reviewer in the Verifying Observer Sequence, for a
COMPLETE report signed off by name (the standard allows VERIFIED only with COMPLETE); UNVERIFIED otherwise
(a named sign-off of a PARTIAL report is still in the status comment). Preliminary Flag: PRELIMINARY.
The SR holds no file paths: the source files are read for their UIDs, which the evidence references.
Sentences located in the image (``ReportRecord.sentences``, grounding/) follow their section's text as Finding
items. In a volume, each has two 3-D spatial coordinates (SCOORD3D, "Image Region", INFERRED FROM) in the
source's Frame of Reference: the peak as a POINT and the box as a MULTIPOINT of its two corners (LPS mm); the
SR is then a Comprehensive 3D SR. On a DICOM radiograph, each has two image coordinates (SCOORD, "Image
Region", INFERRED FROM), each SELECTED FROM that radiograph's instance ("Source image"): the peak as a POINT
and the box as a closed POLYLINE around its pixels (column, row; the top left corner of the image is 0, 0).
A volume without a Frame of Reference UID (NIfTI) or a picture (PNG) keeps its locations in the JSON export
only.
A report about the images of more than one patient (a study opened with ``allow_mixed_patients``, or source
files whose PatientID, PatientName or PatientBirthDate differ) gets no SR: an SR joins one patient's record,
and any identity it carried would be put on the other patients' images (``one_patient``).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from napari_radreport.common import one_line
from napari_radreport.export.content import (
    ExportError,
    provenance_line,
    sections,
    software_version,
    status_line,
)
from napari_radreport.export.record import ReportRecord

MANUFACTURER = "napari-radreport"
SERIES_DESCRIPTION = "AI draft report"
SERIES_NUMBER = 9001
INSTANCE_NUMBER = 1
_REFERENCE_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")
_PATIENT_STUDY_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                       "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
_DATE, _TIME = re.compile(r"\d{8}"), re.compile(r"\d{2,6}(\.\d{1,6})?")
_VALID = {"PatientBirthDate": _DATE, "StudyDate": _DATE, "StudyTime": _TIME,
          "PatientSex": re.compile("[MFO]")}


def _value(ds: Any, keyword: str) -> str:
    value = ds.get(keyword) if ds is not None else None
    return "" if value is None else str(value).strip()


def source_headers(files: list[str]) -> list[Any]:
    """Headers (no pixel data) of the source DICOM files; an unreadable one is an ExportError."""
    import pydicom

    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True, force=True))
        except Exception as exc:
            raise ExportError(f"{path}: source DICOM header cannot be read ({one_line(exc)}); "
                              "the SR needs it to reference the study") from exc
    return headers


def referable(headers: list[Any]) -> list[Any]:
    """Headers with all four UIDs an evidence reference needs, one per SOP instance."""
    seen: set[str] = set()
    kept = []
    for ds in headers:
        uid = _value(ds, "SOPInstanceUID")
        if all(_value(ds, key) for key in _REFERENCE_KEYS) and uid not in seen:
            seen.add(uid)
            kept.append(ds)
    return kept


def one_patient(record: ReportRecord, headers: list[Any] | None = None) -> None:
    """An ExportError when the report is about more than one patient's images: the study says so, or the
    source ``headers`` (in ``record.study.dicom_files`` order) differ (``io.dicom_headers.patient_mix``).

    Refused rather than written without a patient: a PACS files an SR by its patient and study, so one with
    blank ones would be filed apart or matched by hand, its evidence still pointing at two patients'
    images."""
    from napari_radreport.io.dicom_headers import PatientIdentity, patient_mix

    mix = None
    if headers is not None:
        mix = patient_mix([(path, PatientIdentity.from_dataset(ds))
                           for path, ds in zip(record.study.dicom_files, headers)])
    count = len(mix.patients) if mix is not None else record.study.mixed_patients
    if count > 1:
        detail = f" ({mix.describe()})" if mix is not None else ""
        said = " (they say MIXED PATIENTS)" if record.study.mixed_patients else ""
        raise ExportError(f"DICOM SR not written: the report is about the images of {count} patients{detail} "
                          "and an SR belongs to one patient; export text, Markdown, JSON or PDF instead"
                          f"{said}")


def _identity(record: ReportRecord, headers: list[Any], evidence: list[Any]) -> Any:
    """Dataset with the SR's study UID and patient/study attributes (highdicom reads them off evidence[0])."""
    from highdicom import UID
    from pydicom import Dataset

    source = evidence[0] if evidence else (headers[0] if headers else None)
    identity = Dataset()
    identity.StudyInstanceUID = _value(source, "StudyInstanceUID") or record.study.study_uid or UID()
    for key in _PATIENT_STUDY_KEYS:
        value = _value(source, key)
        valid = _VALID.get(key)
        setattr(identity, key, value if valid is None or valid.fullmatch(value) else "")  # bad value: empty
    if source is None:  # not DICOM: what the loader knew, patient fields stay empty
        identity.AccessionNumber = record.study.accession_number
        identity.StudyDate = record.study.study_date if _DATE.fullmatch(record.study.study_date) else ""
    # highdicom also asks the first evidence item for these; build_sr drops the stub from the evidence.
    identity.SeriesInstanceUID, identity.SOPInstanceUID = UID(), UID()
    identity.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    return identity


def person_name(name: str) -> str:
    """A typed name as a DICOM PN: "Smith, Jane" -> "Smith^Jane"; one with "^" is kept; any other is all
    family name (no guessing which word is which). Backslashes and "=" (PN delimiters) become spaces."""
    name = " ".join(name.replace("\\", " ").replace("=", " ").split())
    if "^" not in name:
        family, comma, given = name.partition(",")
        name = f"{family.strip()}^{given.strip()}" if comma else name
    return name[:64]  # PN: 64 characters per component group


def dicom_datetime(iso: str) -> str:
    """ISO 8601 ("2025-05-01T10:00:00+02:00") as DICOM DT ("20250501100000+0200"); '' when unreadable."""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return ""
    return when.strftime("%Y%m%d%H%M%S%z")


def _verifying_observer(record: ReportRecord) -> Any | None:
    """The Verifying Observer Sequence item of the sign-off; None when the record has no named, timed one."""
    from pydicom import Dataset

    when = dicom_datetime(record.reviewed_at)
    if not (record.reviewed and record.reviewer.strip() and when):
        return None
    observer = Dataset()
    observer.VerifyingObserverName = person_name(record.reviewer)  # type 1
    observer.VerifyingObserverIdentificationCodeSequence = []  # type 2: no coded identity known
    observer.VerifyingOrganization = ""  # type 2: none known
    observer.VerificationDateTime = when  # type 1
    return observer


def _located(sentence: dict[str, Any], frame_of_reference: str) -> Any:
    """A located sentence as a Finding text item with its peak and box as SCOORD3D children."""
    import numpy as np
    from highdicom.sr import ContentSequence, Scoord3DContentItem, TextContentItem
    from pydicom.sr.codedict import codes

    where = sentence["location"]
    item = TextContentItem(name=codes.DCM.Finding, value=sentence["text"], relationship_type="CONTAINS")
    item.ContentSequence = ContentSequence([
        Scoord3DContentItem(name=codes.DCM.ImageRegion, graphic_type=kind,
                            graphic_data=np.array(points, float), frame_of_reference_uid=frame_of_reference,
                            relationship_type="INFERRED FROM")
        for kind, points in (("POINT", [where["peak_lps_mm"]]), ("MULTIPOINT", where["box_lps_mm"]))])
    return item


def _on_radiograph(sentence: dict[str, Any], source: Any) -> Any:
    """A sentence located on a radiograph as a Finding text item with its peak and box as SCOORD children,
    each selected from the radiograph's instance (``source``: its header)."""
    import numpy as np
    from highdicom.sr import ContentSequence, ImageContentItem, ScoordContentItem, TextContentItem
    from pydicom.sr.codedict import codes

    where = sentence["location"]
    row, column = where["peak_pixel_rc"]
    (r0, c0), (r1, c1) = where["box_pixel_rc"]
    outline = [(c0, r0), (c1 + 1, r0), (c1 + 1, r1 + 1), (c0, r1 + 1), (c0, r0)]  # around the pixels
    item = TextContentItem(name=codes.DCM.Finding, value=sentence["text"], relationship_type="CONTAINS")
    coordinates = []
    for kind, points in (("POINT", [(column + 0.5, row + 0.5)]), ("POLYLINE", outline)):
        coordinate = ScoordContentItem(name=codes.DCM.ImageRegion, graphic_type=kind,
                                       graphic_data=np.array(points, float),
                                       relationship_type="INFERRED FROM")
        coordinate.ContentSequence = ContentSequence([ImageContentItem(
            name=codes.DCM.SourceImage, referenced_sop_class_uid=_value(source, "SOPClassUID"),
            referenced_sop_instance_uid=_value(source, "SOPInstanceUID"), relationship_type="SELECTED FROM")])
        coordinates.append(coordinate)
    item.ContentSequence = ContentSequence(coordinates)
    return item


def _location_item(sentence: dict[str, Any], frame_of_reference: str,
                   radiographs: Sequence[Any]) -> Any | None:
    """The SR item of a located sentence, or None where the SR cannot say where it is (no Frame of Reference
    for a volume, a radiograph that is not a DICOM instance)."""
    where = sentence["location"]
    if not where:
        return None
    if "image_index" in where:
        index = int(where["image_index"])
        source = radiographs[index] if index < len(radiographs) else None
        return _on_radiograph(sentence, source) if source is not None else None
    return _located(sentence, frame_of_reference) if frame_of_reference else None


def radiograph_headers(record: ReportRecord, headers: list[Any]) -> list[Any]:
    """Each radiograph's header from ``headers`` (read in ``dicom_files`` order), None for a picture or an
    instance without the UIDs a reference needs."""
    by_file = dict(zip(record.study.dicom_files, headers))
    found = [by_file.get(f) if f else None for f in record.study.radiograph_files]
    return [ds if ds is not None and all(_value(ds, key) for key in _REFERENCE_KEYS) else None
            for ds in found]


def _content(record: ReportRecord, frame_of_reference: str = "", radiographs: Sequence[Any] = ()) -> Any:
    """The document tree: title container with section containers (their text, then their located sentences
    where the source has a Frame of Reference or the radiograph is a DICOM instance: ``radiographs``, each
    one's header), status and provenance comments."""
    from highdicom.sr import ContainerContentItem, ContentSequence, TextContentItem
    from pydicom.sr.codedict import codes

    section_codes = {"Findings": (codes.DCM.Findings, codes.DCM.Finding),
                     "Impression": (codes.DCM.Impressions, codes.DCM.Impression)}
    grouped: dict[str, list[str]] = {}
    for name, body in sections(record.final_text):
        grouped.setdefault(name, []).append(body)
    items = []
    for name, bodies in grouped.items():
        container_code, item_code = section_codes[name]
        container = ContainerContentItem(name=container_code, relationship_type="CONTAINS")
        located = [item for item in (_location_item(s, frame_of_reference, radiographs)
                                     for s in record.sentences if s["section"] == name.lower()) if item]
        container.ContentSequence = ContentSequence(
            [TextContentItem(name=item_code, value=body, relationship_type="CONTAINS") for body in bodies]
            + located)
        items.append(container)
    status = f"AI-generated draft report. Status: {status_line(record)}."
    provenance = f"Provenance: {provenance_line(record, full_hash=True)}"
    items += [TextContentItem(name=codes.DCM.Comment, value=value, relationship_type="CONTAINS")
              for value in (status, provenance)]
    root = ContainerContentItem(name=codes.LN.RadiologyReport)
    root.ContentSequence = ContentSequence(items)
    return root


def evidence_sequences(study_uid: str, evidence: list[Any]) -> tuple[list[Any], list[Any]]:
    """Hierarchical references (study > series > instances): those in ``study_uid``, then all others.

    Built here rather than by highdicom, whose grouping changed between releases (by "referenced in the
    content" up to 0.2x, by study since): the source images belong to the current requested procedure.
    """
    from pydicom import Dataset

    tree: dict[str, dict[str, list[Any]]] = {}
    for ds in evidence:
        item = Dataset()
        item.ReferencedSOPClassUID = _value(ds, "SOPClassUID")
        item.ReferencedSOPInstanceUID = _value(ds, "SOPInstanceUID")
        series = tree.setdefault(_value(ds, "StudyInstanceUID"), {})
        series.setdefault(_value(ds, "SeriesInstanceUID"), []).append(item)
    current, other = [], []
    for study, series in tree.items():
        study_item = Dataset()
        study_item.StudyInstanceUID = study
        study_item.ReferencedSeriesSequence = []
        for series_uid, instances in series.items():
            series_item = Dataset()
            series_item.SeriesInstanceUID = series_uid
            series_item.ReferencedSOPSequence = instances
            study_item.ReferencedSeriesSequence.append(series_item)
        (current if study == study_uid else other).append(study_item)
    return current, other


def build_sr(record: ReportRecord) -> Any:
    """The SR as a ``highdicom.sr.ComprehensiveSR`` dataset."""
    from highdicom import UID
    from highdicom.sr import Comprehensive3DSR, ComprehensiveSR

    one_patient(record)  # before reading the sources: the study already says it mixes patients
    headers = source_headers(record.study.dicom_files)
    one_patient(record, headers)
    evidence = referable(headers)
    identity = _identity(record, headers, evidence)
    complete = record.reviewed and record.complete and not record.out_of_scope_reason
    frame = next((f for f in (_value(ds, "FrameOfReferenceUID") for ds in headers) if f), "")
    spatial = bool(frame) and any(s["location"] and "peak_lps_mm" in s["location"] for s in record.sentences)
    document = Comprehensive3DSR if spatial else ComprehensiveSR  # SCOORD3D needs the 3D IOD
    radiographs = radiograph_headers(record, headers)
    with warnings.catch_warnings():  # names are copied as the source wrote them ("Lung_Dx-A0001")
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name",
                                category=UserWarning)
        sr = document(
            # highdicom takes patient and study from the first; the referenced radiographs must be evidence
            # too (it checks); the evidence sequences are rebuilt below
            evidence=[identity, *(ds for ds in radiographs if ds is not None)],
            content=_content(record, frame if spatial else "", radiographs),
            series_instance_uid=UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=UID(),
            instance_number=INSTANCE_NUMBER,
            manufacturer=MANUFACTURER,
            is_complete=complete,
            is_final=False,
            is_verified=False,  # set below: highdicom would stamp the export time as the verification time
            series_description=SERIES_DESCRIPTION,
            software_versions=software_version(record),
        )
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: report text and names may hold any character
    observer = _verifying_observer(record) if complete else None
    if observer is not None:
        sr.VerificationFlag = "VERIFIED"
        sr.VerifyingObserverSequence = [observer]
    if not record.complete:
        sr.CompletionFlagDescription = f"incomplete: {record.incomplete_reason}"[:64]  # LO: 64 characters
    elif record.out_of_scope_reason:
        sr.CompletionFlagDescription = "out of the model's scope (see the report's status)"
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        if keyword in sr:
            delattr(sr, keyword)  # only the identity stub is in there
    current, other = evidence_sequences(sr.StudyInstanceUID, evidence)
    if current:
        sr.CurrentRequestedProcedureEvidenceSequence = current
    if other:
        sr.PertinentOtherEvidenceSequence = other
    return sr


def render_sr(record: ReportRecord) -> bytes:
    """The SR as DICOM file bytes (Part 10, with preamble and file meta)."""
    import pydicom

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, build_sr(record), enforce_file_format=True)
    return buffer.getvalue()
