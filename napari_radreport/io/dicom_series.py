"""Grouping DICOM slices into series, choosing the main one, and reading it as a Study."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_radreport.io.dicom_headers import DicomHeader, check_one_patient
from napari_radreport.io.dicom_pixels import read_pixels
from napari_radreport.io.dicom_volume import Frame, VolumeGeometry, assemble_volume, rescale_warnings
from napari_radreport.io.limits import MemoryBudget
from napari_radreport.io.study import SeriesInfo, Study, StudyReadError, kind_for_modality


@dataclass
class SeriesGroup:
    """Slices that belong together: same series UID (if any), frame of reference and geometry."""

    headers: list[DicomHeader]

    @property
    def first(self) -> DicomHeader:
        return self.headers[0]

    @property
    def role(self) -> str:
        if any(h.is_localizer for h in self.headers):
            return "localizer"
        return "volume"


def _series_key(h: DicomHeader) -> tuple:
    orientation = tuple(np.round(h.orientation, 3)) if h.orientation else None
    spacing = tuple(np.round(h.pixel_spacing, 4)) if h.pixel_spacing else None
    return (h.series_uid, h.frame_of_reference_uid, h.modality, orientation, h.rows, h.columns, spacing,
            h.is_localizer)


def group_slices(headers: list[DicomHeader]) -> list[SeriesGroup]:
    """Group single-frame slices; order groups by series number then first appearance."""
    groups: dict[tuple, SeriesGroup] = {}
    for h in headers:
        groups.setdefault(_series_key(h), SeriesGroup(headers=[])).headers.append(h)
    return sorted(groups.values(), key=lambda g: (g.first.series_number is None, g.first.series_number or 0))


def choose_main(groups: list[SeriesGroup]) -> int:
    """Index of the main series: not a localizer, CT before other modalities, then most slices."""
    candidates = [i for i, g in enumerate(groups) if g.role == "volume"]
    if not candidates:
        raise StudyReadError(
            f"{groups[0].first.path}: only localizer/scout images found ({len(groups)} series); "
            "no volume to open"
        )
    return max(candidates, key=lambda i: (groups[i].first.modality == "CT", len(groups[i].headers)))


def _pick_series(groups: list[SeriesGroup], series: str | int | None) -> int:
    if series is None:
        return choose_main(groups)
    if isinstance(series, int) or (isinstance(series, str) and series.isdigit()):
        index = int(series)
        if not 0 <= index < len(groups):
            raise StudyReadError(f"series index {index} out of range: {len(groups)} series found")
        return index
    matches = [i for i, g in enumerate(groups) if g.first.series_uid == series]
    if not matches:
        raise StudyReadError(
            f"series {series!r} not found; found: {', '.join(g.first.series_uid for g in groups)}"
        )
    return matches[0]


def _frame_for_file(h: DicomHeader) -> Frame:
    def load(path: str = h.path) -> np.ndarray:
        return read_pixels(path)[0]

    return Frame(
        position=np.asarray(h.position, dtype=float),
        order_key=h.temporal_key + (float(h.instance_number or 0),),
        slope=h.rescale_slope,
        intercept=h.rescale_intercept,
        load=load,
        source=h.path,
    )


def _series_infos(groups: list[SeriesGroup], chosen: int) -> list[SeriesInfo]:
    return [
        SeriesInfo(
            index=i,
            uid=g.first.series_uid,
            description=g.first.series_description,
            modality=g.first.modality,
            n_images=len(g.headers),
            shape=(len(g.headers), g.first.rows, g.first.columns),
            role=g.role,
            chosen=i == chosen,
        )
        for i, g in enumerate(groups)
    ]


def read_slice_series(headers: list[DicomHeader], *, series: str | int | None = None,
                      budget: MemoryBudget | None = None, allow_mixed_patients: bool = False) -> Study:
    """Read the main (or the requested) series among single-frame slices; others are listed, never merged.

    Each file's pixel data length is checked against its header, and the whole volume against ``budget``,
    before any pixel is decoded; so is that its slices are of one patient (``check_one_patient``: a slice of
    another patient is refused unless ``allow_mixed_patients``)."""
    groups = group_slices(headers)
    chosen = _pick_series(groups, series)
    group = groups[chosen]
    h = group.first
    folder = Path(h.path).parent
    name = h.path if len(group.headers) == 1 else f"{folder} ({len(group.headers)} files of series {chosen})"
    patients, patient_warnings = check_one_patient([(x.path, x.patient) for x in group.headers], name,
                                                   allow=allow_mixed_patients)
    for x in group.headers:
        problem = x.pixel_data_problem()
        if problem:
            raise StudyReadError(f"{x.path}: {problem}")
    label = f"{h.modality} {h.series_description or Path(h.path).parent.name or Path(h.path).name}".strip()
    geometry = VolumeGeometry(
        orientation=h.orientation,  # type: ignore[arg-type]
        pixel_spacing=h.pixel_spacing,
        rows=h.rows,
        columns=h.columns,
        bits_stored=h.bits_stored,
        slice_thickness=h.slice_thickness,
        gantry_tilt_tag=h.gantry_tilt,
        stored_dtype=h.stored_dtype,
    )
    image, warnings, notes = assemble_volume([_frame_for_file(x) for x in group.headers], geometry,
                                             modality=h.modality, tags=h.tags, label=label, budget=budget,
                                             name=name)
    invalid = [(x.path, problem) for x in group.headers for problem in x.rescale_problems]
    warnings[:0] = patient_warnings + rescale_warnings(invalid, len(group.headers), h.modality)
    if group.role == "localizer":
        warnings.append("this series is a localizer/scout, opened because it was asked for")
    others = len(groups) - 1
    if others:
        notes.append(f"{others} other series in the input, not merged (listed under 'series')")
    if not h.series_uid:
        notes.append(
            "SeriesInstanceUID is empty: slices grouped by frame of reference, orientation and geometry"
        )
    kind = kind_for_modality(h.modality)
    if kind == "volume":
        notes.append(f"modality {h.modality or 'unknown'}: opened as a generic volume")
    source = tuple(x.path for x in group.headers)
    return Study(
        kind=kind,
        images=[image],
        source=source,
        warnings=warnings,
        notes=notes,
        series=_series_infos(groups, chosen),
        extra={"patients": patients} if patients else {},
    )

