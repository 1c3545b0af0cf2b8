"""Enhanced (multi-frame) CT/MR objects: one file whose frames carry their own geometry."""

from __future__ import annotations

import numpy as np

from napari_radreport.io.dicom_headers import DicomHeader, read_dataset, valid_orientation
from napari_radreport.io.dicom_pixels import decode_pixels
from napari_radreport.io.dicom_volume import Frame, VolumeGeometry, assemble_volume, rescale_warnings
from napari_radreport.io.limits import MemoryBudget
from napari_radreport.io.study import SeriesInfo, Study, StudyReadError, kind_for_modality


def _item(groups, name: str):
    """First item of a functional group macro, or None."""
    seq = groups.get(name) if groups is not None else None
    return seq[0] if seq else None


def _group_value(per_frame, shared, macro: str, keyword: str, where: str):
    """A value from the frame's functional groups, else the shared ones; a value pydicom cannot convert
    (text in a DS element) is refused naming ``where`` and the tag."""
    for source in (per_frame, shared):
        item = _item(source, macro)
        if item is not None and keyword in item:
            try:
                return item.get(keyword)
            except (TypeError, ValueError) as exc:
                raise StudyReadError(f"{where}: {keyword} is unreadable ({exc})") from exc
    return None


def _numbers(value, count: int) -> tuple[float, ...] | None:
    """``count`` finite numbers from a DICOM value (multi-valued or not), else None."""
    if value is None or value == "":
        return None
    items = value if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) else [value]
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) else None


def _text(value) -> str:
    items = value if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) else [value]
    text = "\\".join(str(v) for v in items)
    return text if len(text) <= 40 else text[:40] + "..."


def _rescale(value, keyword: str, default: float, where: str, problems: list[tuple[str, str]]) -> float:
    if value is None or value == "":
        return default
    number = _numbers(value, 1)
    if number is None or (keyword == "RescaleSlope" and number[0] == 0):
        problems.append((where, f"{keyword} '{_text(value)}' is not a valid "
                                f"{'nonzero ' if default else ''}number: {default:g} used"))
        return default
    return number[0]


def read_enhanced(header: DicomHeader, *, budget: MemoryBudget | None = None) -> Study:
    """Read an enhanced multi-frame object, or refuse it clearly when its frames have no positions.

    Per-frame positions, orientations and rescale values are checked, and the volume counted against
    ``budget``, before the pixel data is decoded."""
    path = header.path
    if not header.has_per_frame_groups:
        raise StudyReadError(
            f"{path}: multi-frame {header.modality or 'DICOM'} object ({header.n_frames} frames) "
            "without per-frame positions (cine, secondary capture or dose grid): "
            "not a volume napari-radreport can place"
        )
    problem = header.pixel_data_problem()
    if problem:
        raise StudyReadError(f"{path}: {problem}")
    ds = read_dataset(path, pixels=True)
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None
    per_frame = ds.PerFrameFunctionalGroupsSequence
    decoded: list[np.ndarray] = []

    def pixels() -> np.ndarray:
        """All frames, decoded once, on the first frame's load (after the budget check)."""
        if not decoded:
            array = decode_pixels(ds, path)
            array = array[None] if array.ndim == 2 else array
            if array.ndim != 3 or array.shape[0] != len(per_frame):
                raise StudyReadError(f"{path}: {len(per_frame)} frame descriptions for pixel data "
                                     f"of shape {array.shape}")
            decoded.append(array)
        return decoded[0]

    frames: list[Frame] = []
    orientation = None
    pixel_spacing = None
    invalid: list[tuple[str, str]] = []
    for i, item in enumerate(per_frame):
        where = f"{path} frame {i + 1}"
        position = _group_value(item, shared, "PlanePositionSequence", "ImagePositionPatient", where)
        ori = _group_value(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient", where)
        if position is None or ori is None:
            raise StudyReadError(f"{path}: frame {i + 1} has no plane position or orientation")
        if _numbers(position, 3) is None:
            raise StudyReadError(f"{where}: ImagePositionPatient '{_text(position)}' is not three finite "
                                 "numbers; the frame cannot be placed")
        valid = valid_orientation(_numbers(ori, 6))
        if valid is None:
            raise StudyReadError(f"{where}: ImageOrientationPatient '{_text(ori)}' is not two perpendicular "
                                 "unit vectors; the frame cannot be placed")
        if orientation is None:
            orientation = valid
        elif not np.allclose(orientation, valid, atol=1e-3):
            raise StudyReadError(f"{path}: frames have different orientations (a multi-planar object)")
        spacing = _numbers(_group_value(item, shared, "PixelMeasuresSequence", "PixelSpacing", where), 2)
        if spacing is not None and pixel_spacing is None and all(v > 0 for v in spacing):
            pixel_spacing = (spacing[0], spacing[1])
        slope = _group_value(item, shared, "PixelValueTransformationSequence", "RescaleSlope", where)
        intercept = _group_value(item, shared, "PixelValueTransformationSequence", "RescaleIntercept", where)
        frames.append(
            Frame(
                position=np.asarray(_numbers(position, 3)),
                order_key=(float(i),),
                slope=(header.rescale_slope if slope is None
                       else _rescale(slope, "RescaleSlope", 1.0, where, invalid)),
                intercept=(header.rescale_intercept if intercept is None
                           else _rescale(intercept, "RescaleIntercept", 0.0, where, invalid)),
                load=lambda i=i: pixels()[i],
                source=where,
            )
        )
    invalid += [(path, problem) for problem in header.rescale_problems]
    thickness = _numbers(_group_value(per_frame[0], shared, "PixelMeasuresSequence", "SliceThickness",
                                      f"{path} frame 1"), 1)
    geometry = VolumeGeometry(
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing=pixel_spacing,
        rows=header.rows,
        columns=header.columns,
        bits_stored=header.bits_stored,
        slice_thickness=thickness[0] if thickness else None,
        stored_dtype=header.stored_dtype,
    )
    label = header.series_description or path
    image, warnings, notes = assemble_volume(frames, geometry, modality=header.modality, tags=header.tags,
                                             label=label, budget=budget, name=path)
    warnings[:0] = rescale_warnings(invalid, len(frames), header.modality)
    notes.insert(0, f"enhanced multi-frame object: {len(frames)} frames in one file")
    info = SeriesInfo(
        index=0,
        uid=header.series_uid,
        description=header.series_description,
        modality=header.modality,
        n_images=len(frames),
        shape=tuple(image.array.shape),
        role="volume",
        chosen=True,
    )
    kind = kind_for_modality(header.modality)
    return Study(kind=kind, images=[image], source=(path,), warnings=warnings, notes=notes, series=[info])
