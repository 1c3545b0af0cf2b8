"""Reading DICOM headers (without pixel data) and deciding what each object is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from napari_radreport.io.study import StudyReadError, StudyTags

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

    def non_image_reason(self) -> str | None:
        """Why this object is not an image we can show, or None when it is one."""
        if self.is_dicomdir:
            return "a DICOMDIR index (open the folder that holds the images instead)"
        if self.modality in NON_IMAGE_MODALITIES:
            return f"{NON_IMAGE_MODALITIES[self.modality]} ({self.modality}), not an image"
        if not self.has_pixels:
            return f"a DICOM object without pixel data (modality {self.modality or 'unknown'})"
        return None


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


def _positive_pair(values: tuple[float, ...] | None) -> tuple[float, float] | None:
    """A pixel spacing is only valid when both entries are positive; 0\\0 means unknown."""
    if values is None or values[0] <= 0 or values[1] <= 0:
        return None
    return (values[0], values[1])


def _valid_orientation(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    row, col = np.asarray(values[:3]), np.asarray(values[3:])
    if abs(np.linalg.norm(row) - 1) > 0.05 or abs(np.linalg.norm(col) - 1) > 0.05 or abs(row @ col) > 0.05:
        return None
    return values


def _header_from_dataset(path: str, ds) -> DicomHeader:
    meta = getattr(ds, "file_meta", None)
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
        position=_floats(ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        orientation=_valid_orientation(_floats(ds, "ImageOrientationPatient", 6)),
        pixel_spacing=_positive_pair(_floats(ds, "PixelSpacing", 2)),
        imager_pixel_spacing=_positive_pair(_floats(ds, "ImagerPixelSpacing", 2)),
        slice_thickness=(_floats(ds, "SliceThickness", 1) or (None,))[0],
        gantry_tilt=(_floats(ds, "GantryDetectorTilt", 1) or (None,))[0],
        photometric=_text(ds, "PhotometricInterpretation").upper(),
        samples_per_pixel=_int(ds, "SamplesPerPixel") or 1,
        view_position=_text(ds, "ViewPosition").upper(),
        series_description=_text(ds, "SeriesDescription"),
        temporal_key=temporal,
        rescale_slope=(_floats(ds, "RescaleSlope", 1) or (1.0,))[0] or 1.0,
        bits_stored=_int(ds, "BitsStored") or 0,
        rescale_intercept=(_floats(ds, "RescaleIntercept", 1) or (0.0,))[0],
        has_per_frame_groups="PerFrameFunctionalGroupsSequence" in ds,
        tags=StudyTags(
            patient_id=_text(ds, "PatientID"),
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
    )


def read_dataset(path: str | Path, *, pixels: bool):
    """pydicom Dataset of ``path``; any failure becomes a one-line StudyReadError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

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
        return _header_from_dataset(path, ds)
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
