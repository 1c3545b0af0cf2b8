"""Assembling sorted DICOM slices (or enhanced multi-frame frames) into one volume in HU."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_radreport.io.dicom_pixels import apply_rescale, rescaled_dtype
from napari_radreport.io.geometry import OBLIQUE_TOLERANCE_DEG, obliquity_deg, plan_reorientation, reorient
from napari_radreport.io.limits import MemoryBudget, budget_or_default
from napari_radreport.io.study import ImageData, StudyReadError, StudyTags, nonfinite_warning

POSITION_TOLERANCE_MM = 0.01
TILT_TOLERANCE_DEG = 0.5


@dataclass
class Frame:
    """One 2-D image of a volume: where it is and how to get its stored values."""

    position: np.ndarray
    order_key: tuple[float, ...]
    slope: float
    intercept: float
    load: Callable[[], np.ndarray]
    source: str


@dataclass
class VolumeGeometry:
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    bits_stored: int
    slice_thickness: float | None = None
    gantry_tilt_tag: float | None = None
    stored_dtype: np.dtype | None = None  # from BitsAllocated/PixelRepresentation, for the memory budget


def rescale_warnings(problems: list[tuple[str, str]], total: int, modality: str) -> list[str]:
    """One warning per invalid rescale value, counting the images (``problems``: (file, problem))."""
    counts = Counter(problem for _, problem in problems)
    example = {problem: source for source, problem in reversed(problems)}
    unit = "; values may not be in HU" if modality == "CT" else ""
    return [f"{problem} in {n} of {total} image(s) (e.g. {Path(example[problem]).name}){unit}"
            for problem, n in counts.items()]


def _fits(raw: np.ndarray, intercept: float, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return bool(info.min <= int(raw.min()) + intercept and int(raw.max()) + intercept <= info.max)


@dataclass(frozen=True)
class SliceGap:
    """A step between neighbouring slice positions of well over the usual spacing."""

    after: int  # between positions ``after`` and ``after + 1``, counted ascending along the slice normal
    step_mm: float
    missing: int  # about how many slices would fill it


@dataclass(frozen=True)
class SliceSteps:
    """Slice spacing from positions (None for one position), its gaps and any other irregular spacing."""

    spacing: float | None
    gaps: tuple[SliceGap, ...] = ()
    irregular: str | None = None  # the warning about steps off the spacing that are not gaps


def _slice_steps(distances: np.ndarray) -> SliceSteps:
    """The median step between sorted positions, the steps over 1.5 times it and other irregular steps."""
    if len(distances) < 2:
        return SliceSteps(None)
    steps = np.diff(distances)
    median = float(np.median(steps))
    tolerance = max(0.01 * median, POSITION_TOLERANCE_MM)
    is_gap = steps > 1.5 * median
    gaps = tuple(SliceGap(int(i), float(steps[i]), int(round(steps[i] / median)) - 1)
                 for i in np.flatnonzero(is_gap))
    irregular = None
    if (np.abs(steps - median) > tolerance)[~is_gap].any():
        rest = steps[~is_gap]
        besides = f" apart from the {'gap' if len(gaps) == 1 else 'gaps'}" if gaps else ""
        irregular = (f"variable slice spacing {rest.min():.2f}..{rest.max():.2f} mm{besides} "
                     f"(median {median:.2f} mm used for display)")
    return SliceSteps(median, gaps, irregular)


def _shown_pair(gap: SliceGap, count: int, backwards: bool) -> tuple[int, int]:
    """The displayed indices of the two slices either side of ``gap`` among ``count`` positions."""
    return (count - 2 - gap.after, count - 1 - gap.after) if backwards else (gap.after, gap.after + 1)


def _gap_warning(gaps: tuple[SliceGap, ...], spacing: float, count: int, *, backwards: bool = False,
                axis: int = 0) -> str | None:
    """One line for all the gaps: the one gap, or how many, the slices missing in all and the largest.

    Slices are numbered as displayed: ``backwards`` when the volume is shown highest position first,
    ``axis`` the array axis they stack along (named when not the first)."""
    if not gaps:
        return None
    along = f" of axis {axis}" if axis else ""
    if len(gaps) == 1:
        a, b = _shown_pair(gaps[0], count, backwards)
        return (f"gap: about {gaps[0].missing} slice(s) missing between slice {a} and {b}{along} "
                f"({gaps[0].step_mm:.2f} mm apart, usual {spacing:.2f} mm); napari shows them adjacent")
    pairs = {gap: _shown_pair(gap, count, backwards) for gap in gaps}
    largest = max(gaps, key=lambda g: (round(g.step_mm, 2), -pairs[g][0]))
    a, b = pairs[largest]
    return (f"{len(gaps)} gaps in slice positions (about {sum(g.missing for g in gaps)} slices missing in "
            f"all), largest {largest.step_mm:.2f} mm between slices {a} and {b}{along} "
            f"(usual {spacing:.2f} mm); napari shows the slices adjacent")


def _stack_positions(frames: list[Frame], normal: np.ndarray) -> tuple[list[list[Frame]], np.ndarray]:
    """Frames grouped by position along the normal (sorted ascending), each group in acquisition order."""
    distances = np.array([float(f.position @ normal) for f in frames])
    order = np.argsort(distances, kind="stable")
    groups: list[list[Frame]] = []
    centres: list[float] = []
    for idx in order:
        if centres and abs(distances[idx] - centres[-1]) <= POSITION_TOLERANCE_MM:
            groups[-1].append(frames[idx])
        else:
            groups.append([frames[idx]])
            centres.append(float(distances[idx]))
    for group in groups:
        group.sort(key=lambda f: f.order_key)
    return groups, np.array(centres)


def assemble_volume(
    frames: list[Frame],
    geometry: VolumeGeometry,
    *,
    modality: str,
    tags: StudyTags,
    label: str,
    budget: MemoryBudget | None = None,
    name: str | None = None,
) -> tuple[ImageData, list[str], list[str]]:
    """Sort frames along the slice normal, apply rescale (HU for CT) and reorient for display.

    The volume the headers describe is counted against ``budget`` before any pixel is decoded; ``name``
    (the file or folder) heads that refusal."""
    if not frames:
        raise StudyReadError(f"{label}: no slices to assemble")
    warnings: list[str] = []
    notes: list[str] = []
    row_cos = np.asarray(geometry.orientation[:3], dtype=float)
    col_cos = np.asarray(geometry.orientation[3:], dtype=float)
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)

    groups, distances = _stack_positions(frames, normal)
    per_position = {len(g) for g in groups}
    if len(per_position) > 1:
        raise StudyReadError(
            f"{label}: {len(frames)} images at {len(groups)} positions with unequal counts per position "
            f"({min(per_position)}..{max(per_position)}): mixed acquisitions in one series; "
            "open them separately"
        )
    n_time = per_position.pop()
    if n_time > 1:
        notes.append(f"{n_time} images per slice position (time points or echoes): opened as 4-D, first axis")

    steps = _slice_steps(distances)
    spacing_z = steps.spacing
    if spacing_z is None:
        spacing_z = geometry.slice_thickness or 1.0
        notes.append(
            "single slice: slice spacing unknown, "
            + ("SliceThickness used" if geometry.slice_thickness else "1 mm assumed")
        )
    elif geometry.slice_thickness and abs(geometry.slice_thickness - spacing_z) > max(0.05, 0.02 * spacing_z):
        notes.append(
            f"SliceThickness {geometry.slice_thickness:g} mm differs from the {spacing_z:.3g} mm "
            "between slice positions; the spacing between positions is used"
        )

    if len(groups) > 1:
        first, last = groups[0][0].position, groups[-1][0].position
        travel = (last - first) / np.linalg.norm(last - first)
        tilt = float(np.degrees(np.arccos(np.clip(abs(travel @ normal), -1.0, 1.0))))
        if tilt > TILT_TOLERANCE_DEG:
            tag = f" (GantryDetectorTilt {geometry.gantry_tilt_tag:g})" if geometry.gantry_tilt_tag else ""
            warnings.append(
                f"gantry tilt of {tilt:.1f} deg{tag}: slices are sheared; "
                "napari stacks them without the shear"
            )
    if geometry.pixel_spacing is None:
        warnings.append("PixelSpacing missing, zero or invalid: in-plane spacing unknown, 1 mm assumed")
    row_mm, col_mm = geometry.pixel_spacing or (1.0, 1.0)

    direction = np.stack([normal, col_cos, row_cos])
    plan = plan_reorientation(direction)
    reversed_stack = plan.perm[0] == 0 and plan.flip[0]
    if reversed_stack:  # stack in reverse instead of flipping afterwards
        groups, normal = groups[::-1], -normal
        direction = np.stack([normal, col_cos, row_cos])
        plan = plan_reorientation(direction)
    shown_axis = plan.perm.index(0)
    gap_line = _gap_warning(steps.gaps, spacing_z, len(groups),
                           backwards=reversed_stack != plan.flip[shown_axis], axis=shown_axis + (n_time > 1))
    warnings.extend(w for w in (gap_line, steps.irregular) if w)

    ordered = [frame for group in groups for frame in group]
    slopes = np.array([f.slope for f in ordered])
    intercepts = np.array([f.intercept for f in ordered])
    planned = (np.dtype(np.float32) if geometry.stored_dtype is None
               else rescaled_dtype(geometry.stored_dtype, slopes, intercepts,
                                   geometry.bits_stored or geometry.stored_dtype.itemsize * 8))
    shape = ((n_time,) if n_time > 1 else ()) + (len(groups), geometry.rows, geometry.columns)
    budget_or_default(budget).claim(name or label, shape, planned)
    first_raw = ordered[0].load()
    if first_raw.shape != (geometry.rows, geometry.columns):
        raise StudyReadError(
            f"{ordered[0].source}: pixel array shape {first_raw.shape} is not a single grayscale "
            f"{geometry.rows}x{geometry.columns} image"
        )
    dtype = rescaled_dtype(first_raw.dtype, slopes, intercepts,
                           geometry.bits_stored or first_raw.itemsize * 8)
    volume = np.empty((len(groups), n_time, geometry.rows, geometry.columns), dtype=dtype)
    for z, group in enumerate(groups):
        for t, frame in enumerate(group):
            raw = first_raw if frame is ordered[0] else frame.load()
            if raw.shape != (geometry.rows, geometry.columns):
                raise StudyReadError(f"{frame.source}: pixel array shape {raw.shape} differs from the series")
            if dtype.kind == "i" and not _fits(raw, frame.intercept, dtype):
                # Stored values beyond BitsStored: widen instead of wrapping around.
                dtype = np.dtype(np.float32)
                volume = volume.astype(dtype)
            volume[z, t] = apply_rescale(raw, frame.slope, frame.intercept, dtype)
    volume = np.moveaxis(volume, 1, 0)  # (t, z, y, x)
    if n_time == 1:
        volume = volume[0]

    spacing = (float(spacing_z), float(row_mm), float(col_mm))
    origin = groups[0][0].position.astype(float)
    volume, spacing, origin, direction = reorient(volume, spacing, origin, direction, plan)
    if not plan.is_identity:
        volume = np.ascontiguousarray(volume)
    nonfinite = nonfinite_warning(volume, name or label)
    if nonfinite:
        warnings.append(nonfinite)
    oblique = obliquity_deg(direction)
    if oblique > OBLIQUE_TOLERANCE_DEG:
        warnings.append(
            f"oblique slices: axes up to {oblique:.1f} deg from the patient axes; "
            "shown on the acquisition grid without resampling, so on-screen directions are approximate"
        )
    image = ImageData(
        array=volume,
        spacing=spacing,
        modality=modality,
        tags=tags,
        origin=tuple(float(v) for v in origin),
        direction=direction,
        label=label,
        source_files=tuple(dict.fromkeys(f.source for f in ordered)),
    )
    return image, warnings, notes
