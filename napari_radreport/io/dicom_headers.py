"""Reading DICOM headers (without pixel data) and deciding what each object is."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from napari_radreport.io.study import MixedPatients, StudyReadError, StudyTags

RADIOGRAPH_MODALITIES = {"CR", "DX", "RG"}
RADIOGRAPH_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
NON_IMAGE_MODALITIES = {
    "SR": "a structured report",
    "SEG": "a segmentation",
    "RTSTRUCT": "an RT structure set",
    "RTPLAN": "an RT plan",
    "RTDOSE": "an RT dose grid",
    "RTRECORD": "an RT treatment record",
    "ECG": "an ECG waveform",
    "HD": "a hemodynamic waveform",
    "AU": "an audio recording",
    "KO": "a key object selection",
    "PR": "a presentation state",
    "DOC": "an encapsulated document",
    "REG": "a registration",
    "FID": "a fiducials object",
}


def looks_like_dicom(path: str | Path) -> bool:
    """Cheap sniff: the DICM preamble, or a first tag in group 0002/0008 (files without preamble)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


PATIENT_TAGS = ("PatientID", "PatientName", "PatientBirthDate")


def alphabetic_group(value: Any) -> str:
    """A DICOM person name's first non-empty component group (the alphabetic one, before '='), as written."""
    text = "" if value is None else str(value)
    return next((g for g in text.split("=") if g.strip(" ^\x00")), "")


def person_name(value: Any) -> str:
    """A PatientName as words, so that spellings of one name compare equal: the first non-empty component
    group (the alphabetic one, before '='), split at '^' and spaces, case-folded, empty components dropped.
    "Doe^John", "DOE^JOHN  ", "Doe^John^^^" and "doe john" are all "doe john"; a middle name or a prefix is
    a word more, so "Doe^John^A" is another name."""
    return " ".join(alphabetic_group(value).replace("^", " ").replace("\x00", " ").casefold().split())


def birth_date(value: str) -> str:
    """A PatientBirthDate as YYYYMMDD when it holds 8 digits (ACR-NEMA wrote 1940.03.05), else as written."""
    digits = re.sub(r"\D", "", value)
    return digits if len(digits) == 8 else value.strip()


@dataclass(frozen=True)
class PatientIdentity:
    """Whose one DICOM object is: PatientID (as written, spaces trimmed, case kept), PatientName
    (``person_name``) and PatientBirthDate (``birth_date``). An empty field is unknown, not a difference."""

    patient_id: str = ""
    name: str = ""
    birth_date: str = ""

    @classmethod
    def from_dataset(cls, ds: Any) -> PatientIdentity:
        try:
            name = person_name(ds.get("PatientName"))
        except Exception:  # a name too broken to decode is unknown, not a reason to refuse the file
            name = ""
        return cls(patient_id=_text(ds, "PatientID").strip(" \x00"), name=name,
                   birth_date=birth_date(_text(ds, "PatientBirthDate")))

    @property
    def values(self) -> tuple[str, str, str]:
        return (self.patient_id, self.name, self.birth_date)

    @property
    def known(self) -> bool:
        return any(self.values)


@dataclass
class PatientMix:
    """Files of more than one patient: the tags that differ, and each patient's files in order."""

    differs: tuple[str, ...]
    patients: list[tuple[str, list[str]]]  # (PatientID as written or "", file paths)

    def describe(self, most: int = 4) -> str:
        """What differs and each patient's ID and first file ("PatientID differs: 'A1' in a.dcm (+2 more);
        'B2' in b.dcm"); names and birth dates are never shown."""
        parts = [f"{repr(pid) if pid else 'no PatientID'} in {Path(files[0]).name}"
                 + (f" (+{len(files) - 1} more)" if len(files) > 1 else "")
                 for pid, files in self.patients[:most]]
        if len(self.patients) > most:
            parts.append(f"{len(self.patients) - most} more patient(s)")
        verb = "differs" if len(self.differs) == 1 else "differ"
        return f"{', '.join(self.differs)} {verb}: {'; '.join(parts)}"

    def as_extra(self) -> list[dict[str, Any]]:
        """What ``Study.extra["patients"]`` holds: each patient's PatientID and files (no names, no dates)."""
        return [{"patient_id": pid, "files": list(files)} for pid, files in self.patients]


def patient_mix(files: Sequence[tuple[str, PatientIdentity | None]]) -> PatientMix | None:
    """The patients among ``files`` ((path, identity); None for a PNG/JPEG), or None when they can be one.

    Two files are of different patients when any of PatientID, PatientName and PatientBirthDate holds two
    different non-empty values; an empty value matches anything. Files are grouped by the tags that differ;
    a file that leaves some of them empty joins the one group it agrees with (it stays apart when it agrees
    with several), and a file that leaves all of them empty belongs to no group."""
    known = [(path, who) for path, who in files if who is not None and who.known]
    differs = tuple(tag for i, tag in enumerate(PATIENT_TAGS)
                    if len({who.values[i] for _, who in known} - {""}) > 1)
    if not differs:
        return None
    index = [PATIENT_TAGS.index(tag) for tag in differs]
    groups: dict[tuple[str, ...], list[tuple[str, PatientIdentity]]] = {}
    for path, who in known:
        key = tuple(who.values[i] for i in index)
        if any(key):
            groups.setdefault(key, []).append((path, who))
    for key in sorted(groups, key=lambda k: sum(map(bool, k))):  # the least known first
        fuller = [other for other in groups
                  if other != key and all(not a or a == b for a, b in zip(key, other))]
        if len(fuller) == 1:
            groups[fuller[0]].extend(groups.pop(key))
    patients = []
    for members in groups.values():
        shown = next((who.patient_id for _, who in members if who.patient_id), "")
        patients.append((shown, [path for path, _ in members]))
    return PatientMix(differs=differs, patients=patients)


def check_one_patient(files: Sequence[tuple[str, PatientIdentity | None]], origin: str, *,
                      allow: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Refuse the files of several patients as one study (``MixedPatients``) unless ``allow``.

    Returns (``Study.extra["patients"]``, empty unless the files mix patients; warnings): a warning says so
    when mixed patients are allowed, and when some files carry no identity (PNG/JPEG, or all three tags
    empty) beside files that do, since those cannot be checked."""
    warnings: list[str] = []
    unknown = [(path, who) for path, who in files if who is None or not who.known]
    if unknown and len(unknown) < len(files):
        path, who = unknown[0]
        why = "PNG/JPEG files carry none" if who is None else "no PatientID, PatientName or PatientBirthDate"
        warnings.append(f"patient identity unknown for {len(unknown)} of {len(files)} files (e.g. "
                        f"{Path(path).name}: {why}): not checked to be the same patient as the others")
    mix = patient_mix(files)
    if mix is None:
        return [], warnings
    count = len(mix.patients)
    if not allow:
        raise MixedPatients(f"{origin}: the files come from {count} patients ({mix.describe()}); not opened "
                            "as one study: open each patient's files separately",
                            differs=mix.differs, patients=count, files=tuple(path for path, _ in files))
    warnings.insert(0, f"MIXED PATIENTS: the files come from {count} patients ({mix.describe()}), opened as "
                       "one study as asked; its reports say so and no DICOM SR is written")
    return mix.as_extra(), warnings


def study_identities(study: Any) -> list[tuple[str, PatientIdentity | None]]:
    """(file, identity) of the first file of each of a study's images: its DICOM header's patient, or None
    for a PNG/JPEG (headers only, no pixels)."""
    found: list[tuple[str, PatientIdentity | None]] = []
    for image in study.images:
        path = str(image.source_files[0]) if image.source_files else ""
        if path and looks_like_dicom(path):
            found.append((path, PatientIdentity.from_dataset(read_dataset(path, pixels=False))))
        elif path:
            found.append((path, None))
    return found


@dataclass(frozen=True)
class DicomHeader:
    """The tags the readers need from one DICOM object, read without its pixel data."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    series_uid: str
    series_number: int | None
    instance_number: int | None
    frame_of_reference_uid: str
    image_type: tuple[str, ...]
    rows: int
    columns: int
    n_frames: int
    has_pixels: bool
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    imager_pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    gantry_tilt: float | None
    photometric: str
    samples_per_pixel: int
    view_position: str
    series_description: str
    temporal_key: tuple[float, ...]
    rescale_slope: float
    bits_stored: int
    rescale_intercept: float
    has_per_frame_groups: bool
    tags: StudyTags
    # What the header claims about the pixel data, checked against the file before decoding.
    bits_allocated: int = 0
    pixel_representation: int = 0
    float_pixels: int = 0  # 32 or 64 for FloatPixelData/DoubleFloatPixelData, else 0
    pixel_data_length: int | None = None  # bytes of native (uncompressed) pixel data; None when encapsulated
    pixel_data_start: int | None = None  # file offset of that data when its read was deferred
    file_size: int = 0
    # Values that were present but invalid: a refused geometry and rescale values replaced by 1/0.
    geometry_problem: str | None = None
    rescale_problems: tuple[str, ...] = ()
    patient: PatientIdentity = PatientIdentity()  # whose image it is (check_one_patient)

    @property
    def is_dicomdir(self) -> bool:
        return self.sop_class_uid == DICOMDIR_SOP_CLASS

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_radiograph(self) -> bool:
        return ((self.modality in RADIOGRAPH_MODALITIES or self.sop_class_uid in RADIOGRAPH_SOP_CLASSES)
                and self.n_frames <= 1)

    @property
    def is_slice(self) -> bool:
        """A single-frame cross-sectional image with its position and orientation."""
        return (self.has_pixels and self.n_frames <= 1 and self.position is not None
                and self.orientation is not None)

    @property
    def is_volume_slice(self) -> bool:
        """One slice of a CT/MR/PET-like volume (not a radiograph, not a non-image object)."""
        return self.is_slice and not self.is_radiograph and self.non_image_reason() is None

    @property
    def stored_dtype(self) -> np.dtype | None:
        """The dtype the decoder will give (per sample), from BitsAllocated and PixelRepresentation."""
        if self.float_pixels:
            return np.dtype(np.float32 if self.float_pixels == 32 else np.float64)
        if self.bits_allocated not in (8, 16, 32, 64):
            return None
        return np.dtype(f"{'i' if self.pixel_representation else 'u'}{self.bits_allocated // 8}")

    def expected_pixel_bytes(self) -> int:
        """Bytes of native pixel data that Rows x Columns x frames x samples x BitsAllocated claim."""
        bits = self.float_pixels or self.bits_allocated
        count = self.rows * self.columns * max(1, self.n_frames) * max(1, self.samples_per_pixel)
        if self.photometric == "YBR_FULL_422":  # two of every three samples are stored
            count = count * 2 // 3
        return (count * bits + 7) // 8

    def pixel_data_problem(self) -> str | None:
        """Why the pixel data cannot be what the header claims (short or truncated), or None."""
        if self.pixel_data_length is None:
            return None
        expected = self.expected_pixel_bytes()
        if expected and self.pixel_data_length < expected:
            return (f"PixelData holds {self.pixel_data_length:,} bytes but {self.rows} x {self.columns} x "
                    f"{max(1, self.n_frames)} frame(s) x {max(1, self.samples_per_pixel)} sample(s) at "
                    f"{self.float_pixels or self.bits_allocated} bits claim {expected:,}")
        end = (self.pixel_data_start or 0) + self.pixel_data_length
        if self.pixel_data_start is not None and self.file_size and end > self.file_size:
            return (f"truncated: PixelData claims {self.pixel_data_length:,} bytes from byte "
                    f"{self.pixel_data_start:,} but the file ends {end - self.file_size:,} bytes short")
        return None

    def non_image_reason(self) -> str | None:
        """Why this object is not an image we can show, or None when it is one."""
        if self.is_dicomdir:
            return "a DICOMDIR index (open the folder that holds the images instead)"
        if self.modality in NON_IMAGE_MODALITIES:
            return f"{NON_IMAGE_MODALITIES[self.modality]} ({self.modality}), not an image"
        if not self.has_pixels:
            return f"a DICOM object without pixel data (modality {self.modality or 'unknown'})"
        return None


def _display_name(ds) -> str:
    from napari_radreport.io.identity import display_name

    try:
        return display_name(ds.get("PatientName"))
    except Exception:  # a name too broken to decode is shown as unknown, never a reason to refuse the file
        return ""


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _int(ds, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _floats(ds, keyword: str, count: int) -> tuple[float, ...] | None:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        values = tuple(float(v) for v in (value if hasattr(value, "__len__") and not isinstance(value, str)
                                          else [value]))
    except (TypeError, ValueError):
        return None
    if len(values) != count or not all(np.isfinite(values)):
        return None
    return values


def _present(ds, keyword: str) -> str | None:
    """The raw text of a tag that is present and not empty (for messages), else None."""
    try:
        value = ds.get_item(keyword, keep_deferred=True)
    except Exception:  # an element too broken to fetch is there all the same
        return "?"
    value = None if value is None else value.value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("latin-1", "replace")
    elif value is None or isinstance(value, str):
        text = value or ""
    else:
        try:
            text = "\\".join(str(v) for v in value)
        except TypeError:
            text = str(value)
    text = text.strip(" \x00")
    return (text[:40] + "...") if len(text) > 40 else (text or None)


def _rescale(ds, keyword: str, default: float, problems: list[str]) -> float:
    """RescaleSlope/RescaleIntercept; a value that is present but unusable becomes ``default`` and a
    problem naming the tag (a slope must also be nonzero)."""
    text = _present(ds, keyword)
    if text is None:
        return default
    value = (_floats(ds, keyword, 1) or (None,))[0]
    if value is None or (keyword == "RescaleSlope" and value == 0):
        problems.append(f"{keyword} '{text}' is not a valid {'nonzero ' if default else ''}number: "
                        f"{default:g} used")
        return default
    return value


def _geometry_problem(ds, position, orientation) -> str | None:
    """A present ImagePositionPatient/ImageOrientationPatient that cannot place the image."""
    if position is None and (text := _present(ds, "ImagePositionPatient")) is not None:
        return f"ImagePositionPatient '{text}' is not three finite numbers"
    if orientation is None and (text := _present(ds, "ImageOrientationPatient")) is not None:
        return f"ImageOrientationPatient '{text}' is not two perpendicular unit vectors"
    return None


def _pixel_claim(ds) -> dict:
    """What the header says about the pixel data: dtype tags, native length and where it starts."""
    out: dict = {"bits_allocated": _int(ds, "BitsAllocated") or 0,
                 "pixel_representation": _int(ds, "PixelRepresentation") or 0}
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    compressed = bool(getattr(syntax, "is_compressed", False))
    deflated = bool(getattr(syntax, "is_deflated", False))
    for keyword, bits in (("PixelData", 0), ("FloatPixelData", 32), ("DoubleFloatPixelData", 64)):
        if keyword not in ds:
            continue
        out["float_pixels"] = bits
        elem = ds.get_item(keyword, keep_deferred=True)
        length = getattr(elem, "length", None)
        if length is None and isinstance(getattr(elem, "value", None), (bytes, bytearray)):
            length = len(elem.value)
        if compressed or length is None or length == 0xFFFFFFFF:
            return out  # encapsulated: its decoded size is checked against the memory budget only
        out["pixel_data_length"] = int(length)
        if getattr(elem, "value", b"") is None and not deflated:  # deferred: its offset is in the file
            out["pixel_data_start"] = int(elem.value_tell)
        return out
    return out


def _positive_pair(values: tuple[float, ...] | None) -> tuple[float, float] | None:
    """A pixel spacing is only valid when both entries are positive; 0\\0 means unknown."""
    if values is None or values[0] <= 0 or values[1] <= 0:
        return None
    return (values[0], values[1])


def valid_orientation(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    row, col = np.asarray(values[:3]), np.asarray(values[3:])
    if abs(np.linalg.norm(row) - 1) > 0.05 or abs(np.linalg.norm(col) - 1) > 0.05 or abs(row @ col) > 0.05:
        return None
    return values


def _header_from_dataset(path: str, ds, file_size: int = 0) -> DicomHeader:
    meta = getattr(ds, "file_meta", None)
    position = _floats(ds, "ImagePositionPatient", 3)
    orientation = valid_orientation(_floats(ds, "ImageOrientationPatient", 6))
    problems: list[str] = []
    slope = _rescale(ds, "RescaleSlope", 1.0, problems)
    intercept = _rescale(ds, "RescaleIntercept", 0.0, problems)
    sop_class = (_text(ds, "SOPClassUID")
                 or (_text(meta, "MediaStorageSOPClassUID") if meta is not None else ""))
    image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or []))
    temporal = tuple(
        float(v) if isinstance(v, (int, float)) else 0.0
        for v in (_int(ds, "TemporalPositionIdentifier"), _int(ds, "EchoNumbers"),
                  _int(ds, "AcquisitionNumber"))
        if v is not None
    )
    return DicomHeader(
        path=path,
        sop_class_uid=sop_class,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        modality=_text(ds, "Modality").upper(),
        series_uid=_text(ds, "SeriesInstanceUID"),
        series_number=_int(ds, "SeriesNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        image_type=image_type,
        rows=_int(ds, "Rows") or 0,
        columns=_int(ds, "Columns") or 0,
        n_frames=_int(ds, "NumberOfFrames") or 1,
        has_pixels=any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")),
        position=position,  # type: ignore[arg-type]
        orientation=orientation,
        pixel_spacing=_positive_pair(_floats(ds, "PixelSpacing", 2)),
        imager_pixel_spacing=_positive_pair(_floats(ds, "ImagerPixelSpacing", 2)),
        slice_thickness=(_floats(ds, "SliceThickness", 1) or (None,))[0],
        gantry_tilt=(_floats(ds, "GantryDetectorTilt", 1) or (None,))[0],
        photometric=_text(ds, "PhotometricInterpretation").upper(),
        samples_per_pixel=_int(ds, "SamplesPerPixel") or 1,
        view_position=_text(ds, "ViewPosition").upper(),
        series_description=_text(ds, "SeriesDescription"),
        temporal_key=temporal,
        rescale_slope=slope,
        bits_stored=_int(ds, "BitsStored") or 0,
        rescale_intercept=intercept,
        has_per_frame_groups="PerFrameFunctionalGroupsSequence" in ds,
        tags=StudyTags(
            patient_id=_text(ds, "PatientID"),
            patient_name=_display_name(ds),
            study_uid=_text(ds, "StudyInstanceUID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
            study_date=_text(ds, "StudyDate"),
            series_date=_text(ds, "SeriesDate"),
            acquisition_date=_text(ds, "AcquisitionDate"),
            accession_number=_text(ds, "AccessionNumber"),
            study_description=_text(ds, "StudyDescription"),
            series_description=_text(ds, "SeriesDescription"),
        ),
        file_size=file_size,
        geometry_problem=_geometry_problem(ds, position, orientation),
        rescale_problems=tuple(problems),
        patient=PatientIdentity.from_dataset(ds),
        **_pixel_claim(ds),
    )


def read_dataset(path: str | Path, *, pixels: bool):
    """pydicom Dataset of ``path``; any failure becomes a one-line StudyReadError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from napari_radreport.io.limits import check_deflated_dicom

    check_deflated_dicom(path)  # pydicom inflates a deflated data set whole, even for its header
    try:
        if pixels:
            return pydicom.dcmread(str(path), force=True)
        # Deferred large values: the header says whether pixel data exists without loading it.
        return pydicom.dcmread(str(path), defer_size=2048, force=True)
    except InvalidDicomError as exc:
        raise StudyReadError(f"{path}: not a DICOM file ({exc})") from exc
    except Exception as exc:
        from napari_radreport.common import one_line

        raise StudyReadError(f"{path}: DICOM header could not be parsed ({one_line(exc)})") from exc


@lru_cache(maxsize=8192)
def _cached_header(path: str, mtime_ns: int, size: int) -> DicomHeader:
    ds = read_dataset(path, pixels=False)
    if len(ds) == 0 and not getattr(ds, "file_meta", None):
        raise StudyReadError(f"{path}: no DICOM elements found (not a DICOM file)")
    try:
        return _header_from_dataset(path, ds, size)
    except StudyReadError:
        raise
    except Exception as exc:  # a malformed value deep in the header
        raise StudyReadError(f"{path}: DICOM header has an unreadable value ({exc})") from exc


def unique_instances(headers: list[DicomHeader]) -> tuple[list[DicomHeader], int]:
    """Drop repeated copies of one SOP instance (same SOPInstanceUID), keeping the first; count dropped."""
    seen: set[str] = set()
    kept = []
    for h in headers:
        if h.sop_instance_uid and h.sop_instance_uid in seen:
            continue
        seen.add(h.sop_instance_uid)
        kept.append(h)
    return kept, len(headers) - len(kept)


def read_header(path: str | Path) -> DicomHeader:
    """Header of one DICOM file, cached by path, modification time and size."""
    path = str(path)
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise StudyReadError(f"{path}: cannot be read ({exc.strerror})") from exc
    return _cached_header(path, stat.st_mtime_ns, stat.st_size)
