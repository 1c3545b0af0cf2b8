"""Distances and ROI statistics in patient mm and the image's values (HU for CT), from an image's geometry.

Pure (no Qt, no napari): positions are continuous voxel indices of the image's spatial axes, in array order,
as a napari layer with the image layer's scale and translate stores them. Distances go through the image's
geometry (``ImageData.index_to_patient``), so they hold for anisotropic voxels and sheared or oblique grids;
a radiograph (no direction) uses its pixel spacing. An ROI is a rectangle or an ellipse on one slice, given
by its four corners in perimeter order (napari's Shapes convention); its statistics are over the voxels
whose centres lie inside it, its area is the shape's own (as OHIF reports it), and SD is the population SD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_radreport.io.study import ImageData, Study

# Coordinates that differ by less than this (in voxels) are on one slice.
SAME_SLICE_TOLERANCE = 1e-3


class MeasurementError(ValueError):
    """A measurement cannot be made (unknown spacing, a shape off the image or across slices)."""


@dataclass(frozen=True)
class Distance:
    """A ruler: its length in mm and the slice it was drawn on (0-based; None for a 2D image)."""

    mm: float
    slice_axis: int | None = None
    slice_index: int | None = None


@dataclass(frozen=True)
class RoiStats:
    """An ROI's statistics over the voxels whose centres lie inside it, and its area in mm²."""

    area_mm2: float
    mean: float
    sd: float
    min: float
    max: float
    n: int
    unit: str = ""
    slice_axis: int | None = None
    slice_index: int | None = None


def has_spacing(image: ImageData) -> bool:
    """Whether distances in mm can be measured on ``image`` (its pixel/voxel spacing is known)."""
    return bool(image.spacing) and None not in image.spacing


def _geometry(image: ImageData) -> tuple[np.ndarray, np.ndarray]:
    """(spacing, direction) of ``image``; the identity direction for a 2D image without one."""
    if not has_spacing(image):
        raise MeasurementError(f"{image.label or 'this image'}: pixel spacing unknown; cannot measure in mm")
    spacing = np.asarray(image.spacing, dtype=float)
    n = len(spacing)
    direction = np.eye(n) if image.direction is None else np.asarray(image.direction, dtype=float)
    return spacing, direction


def to_patient_mm(image: ImageData, index_step: Sequence[float]) -> np.ndarray:
    """The displacement in mm (LPS for a volume, row/column for a radiograph) of a step in voxel index."""
    spacing, direction = _geometry(image)
    return (np.asarray(index_step, dtype=float) * spacing) @ direction


def _slice_axis(image: ImageData, points: np.ndarray, slice_axis: int | None) -> int | None:
    """The spatial axis the points share one coordinate along (the slice they were drawn on): ``slice_axis``
    when they do along it (a shape in one row of an axial slice shares two), else the first such axis."""
    if image.spatial_ndim < 3:
        return None
    constant = [a for a in range(points.shape[1]) if np.ptp(points[:, a]) <= SAME_SLICE_TOLERANCE]
    if not constant:
        raise MeasurementError("the shape is not on one slice")
    return slice_axis if slice_axis in constant else constant[0]


def _slice_index(image: ImageData, points: np.ndarray, axis: int | None) -> int | None:
    if axis is None:
        return None
    index = int(np.rint(points[0, axis]))
    size = image.array.shape[image.array.ndim - image.spatial_ndim + axis]
    if not 0 <= index < size:
        raise MeasurementError(f"slice {index + 1} is outside the image (1..{size})")
    return index


def distance(image: ImageData, start: Sequence[float], end: Sequence[float], *,
             slice_axis: int | None = None) -> Distance:
    """The distance in mm between two voxel-index positions (spatial axes, array order).

    ``slice_axis``: the axis the view slices along, when known (a ruler in one plane may share more than one
    coordinate); a slice is reported only when both ends lie on one."""
    points = np.asarray([start, end], dtype=float)
    mm = float(np.linalg.norm(to_patient_mm(image, points[1] - points[0])))
    try:
        axis = _slice_axis(image, points, slice_axis)
        index = _slice_index(image, points, axis)
    except MeasurementError:  # across slices, or off the image: the length still holds
        axis = index = None
    return Distance(mm=mm, slice_axis=axis, slice_index=index)


def _frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and half-edge vectors of a parallelogram given by its four corners in perimeter order."""
    if points.shape[0] != 4:
        raise MeasurementError(f"an ROI needs 4 corners, got {points.shape[0]}")
    return points.mean(axis=0), (points[1] - points[0]) / 2, (points[3] - points[0]) / 2


def roi_mask(corners: np.ndarray, shape: tuple[int, ...], kind: str
             ) -> tuple[tuple[slice, slice], np.ndarray]:
    """The voxels of a 2D grid of ``shape`` whose centres lie inside an ROI (``kind`` "rectangle" or
    "ellipse", corners (4, 2) in index coordinates, perimeter order), as (bounding-box slices, boolean mask
    of that box); voxels on the boundary count as inside."""
    centre, e1, e2 = _frame(np.asarray(corners, dtype=float))
    basis = np.stack([e1, e2], axis=1)  # index offset = basis @ (u, v)
    if abs(np.linalg.det(basis)) < 1e-9:
        raise MeasurementError("the ROI has no area")
    lo = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, shape)
    if np.any(hi <= lo):
        raise MeasurementError("the ROI lies outside the image")
    rows, cols = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
    offsets = np.stack([rows - centre[0], cols - centre[1]], axis=-1)
    uv = offsets @ np.linalg.inv(basis).T
    eps = 1e-9
    if kind == "ellipse":
        inside = (uv ** 2).sum(axis=-1) <= 1 + eps
    elif kind == "rectangle":
        inside = np.all(np.abs(uv) <= 1 + eps, axis=-1)
    else:
        raise MeasurementError(f"an ROI is a rectangle or an ellipse, not a {kind}")
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1])), inside


def roi_statistics(image: ImageData, corners: Sequence[Sequence[float]], kind: str = "ellipse", *,
                   slice_axis: int | None = None, lead: tuple[int, ...] = (), unit: str | None = None
                   ) -> RoiStats:
    """Mean, SD (population), min and max of the image's values inside an ROI on one slice, and its area.

    ``corners``: (4, spatial ndim) voxel-index positions in perimeter order; ``lead``: the index along any
    non-spatial leading axes; ``unit``: defaults to "HU" for CT and "" otherwise."""
    points = np.asarray(corners, dtype=float)
    axis = _slice_axis(image, points, slice_axis)
    index = _slice_index(image, points, axis)
    lead_ndim = image.array.ndim - image.spatial_ndim
    if len(lead) != lead_ndim:
        raise MeasurementError(f"expected {lead_ndim} leading indices, got {len(lead)}")
    volume = image.array[tuple(lead)]
    in_plane = [a for a in range(image.spatial_ndim) if a != axis]
    plane = volume if axis is None else np.take(volume, index, axis=axis)
    box, inside = roi_mask(points[:, in_plane], plane.shape, kind)
    values = np.asarray(plane[box], dtype=np.float64)[inside]
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise MeasurementError("no voxel centre lies inside the ROI")
    _, e1, e2 = _frame(points)
    a, b = to_patient_mm(image, e1), to_patient_mm(image, e2)
    gram = float(np.dot(a, a) * np.dot(b, b) - np.dot(a, b) ** 2)
    half_area = np.sqrt(max(gram, 0.0))  # |a x b|: the area spanned by the half-edges
    area = (np.pi if kind == "ellipse" else 4.0) * half_area
    if unit is None:
        unit = "HU" if image.modality.upper() == "CT" else ""
    return RoiStats(area_mm2=float(area), mean=float(values.mean()), sd=float(values.std()),
                    min=float(values.min()), max=float(values.max()), n=int(values.size), unit=unit,
                    slice_axis=axis, slice_index=index)


# -- report text ------------------------------------------------------------------------------------------
def series_label(study: Study, image_index: int = 0, fallback: str = "") -> str:
    """"series 3" from the DICOM SeriesNumber of the image's first file; ``fallback`` (e.g. the layer's name)
    when the image is not DICOM or has no series number."""
    from napari_radreport.io.dicom_headers import looks_like_dicom, read_header

    image = study.images[image_index] if study.images else None
    files = (image.source_files if image is not None else ()) or study.source
    if files and looks_like_dicom(files[0]):
        try:
            number = read_header(files[0]).series_number
        except Exception:  # an unreadable header just means no number
            number = None
        if number is not None:
            return f"series {number}"
    return fallback


def location_text(series: str = "", image_number: int | None = None, plane: str | None = None) -> str:
    """Where a measurement was made, as a report cites it: "series 3, image 18" (1-based image number;
    "coronal image 120" for a reformatted plane)."""
    parts = [series] if series else []
    if image_number is not None:
        reformatted = plane and plane != "axial"
        parts.append(f"{plane} image {image_number}" if reformatted else f"image {image_number}")
    return ", ".join(parts)


def _value(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def distance_text(measured: Distance, where: str = "") -> str:
    """"12.4 mm (series 3, image 18)"."""
    return f"{measured.mm:.1f} mm" + (f" ({where})" if where else "")


def roi_text(stats: RoiStats, where: str = "") -> str:
    """"ROI 52.1 mm²: mean 34.2 HU, SD 12.0, min -5, max 80 (series 3, image 18)"."""
    unit = f" {stats.unit}" if stats.unit else ""
    return (f"ROI {stats.area_mm2:.1f} mm²: mean {stats.mean:.1f}{unit}, SD {stats.sd:.1f}, "
            f"min {_value(stats.min)}, max {_value(stats.max)}" + (f" ({where})" if where else ""))
