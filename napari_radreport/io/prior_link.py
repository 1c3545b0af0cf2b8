"""A prior study beside the current one: whether it may be compared, how its slices link, and its Comparison
line. Pure (no Qt, no napari).

* **Same patient.** A prior of another patient is refused when both studies name their patient (PatientID);
  a study that names none (NIfTI, anonymised DICOM) is allowed with a note saying it was not checked.
* **Link.** Two studies that share a FrameOfReferenceUID were acquired in one patient coordinate frame: their
  LPS positions are directly comparable ("frame of reference"). Otherwise the link assumes the two scanners'
  coordinates are comparable along the body axis ("patient coordinates": LPS height z; works for NIfTI too)
  and centres the prior in-plane on the current study. Either way a manual offset in mm is added to the
  current position's height (+ toward the head) before the prior's slice is looked up.
* **Slices.** ``prior_slice`` maps a slice of the current study to the prior's (clamped, or None outside the
  prior's extent); ``prior_translate`` gives the prior's napari layer the translate that shows the linked
  slice at the current slice's world position (layers are placed as ``io/layers.py`` places them: scale =
  spacing, translate[i] = origin . direction[i]).
* **Comparison.** ``comparison_text`` names the prior in one line for the report's Comparison section, from
  its headers only (nothing guessed): "CT chest 2007-04-04 (series '5mm'), prior study."
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from napari_radreport.io.body_region import regions_from_text
from napari_radreport.io.identity import KIND_WORDS, study_date

if TYPE_CHECKING:
    from napari_radreport.io.study import ImageData, Study

FRAME_OF_REFERENCE = "frame of reference"
PATIENT_COORDINATES = "patient coordinates"
NOT_CHECKED = "patient not identified in {which}: not checked to be the same patient"
_KINDS = {"xray_set": "a radiograph set", "image": "a 2-D image"}


class PriorRefused(ValueError):
    """A study that cannot be the prior of the current one; the message is one line."""


@dataclass(frozen=True)
class PriorLink:
    """How the prior's slices follow the current study's: the mode and the manual offset along the body axis
    (mm, added to the current position's height z, + toward the head)."""

    mode: str
    offset_mm: float = 0.0

    def with_offset(self, offset_mm: float) -> PriorLink:
        return replace(self, offset_mm=float(offset_mm))

    def describe(self) -> str:
        """One line for the dock: what the link assumes, and the offset when there is one."""
        if self.mode == FRAME_OF_REFERENCE:
            text = "Linked by frame of reference (same FrameOfReferenceUID): positions directly comparable"
        else:
            text = ("Linked by patient coordinates (no shared frame of reference): assumes the two scanners' "
                    "heights are comparable; the prior is centred in-plane")
        return text + (f"; offset {self.offset_mm:+g} mm" if self.offset_mm else "") + "."


def choose_link(current: Study, prior: Study, offset_mm: float = 0.0) -> PriorLink:
    """Frame of reference when both studies carry the same FrameOfReferenceUID, else patient coordinates."""
    mine, theirs = current.tags.frame_of_reference_uid, prior.tags.frame_of_reference_uid
    mode = FRAME_OF_REFERENCE if mine and mine == theirs else PATIENT_COORDINATES
    return PriorLink(mode, float(offset_mm))


# -- may it be the prior? ---------------------------------------------------------------------------------
def _date(study: Study) -> str:
    tags = study.tags
    return study_date(tags.study_date or tags.series_date or tags.acquisition_date)


def check_prior(current: Study, prior: Study) -> list[str]:
    """The notes on comparing ``current`` with ``prior`` (unchecked patient, dates in the wrong order, slices
    that cannot be linked); PriorRefused (one line) when ``prior`` cannot be its prior at all: the study
    itself, another patient (both name one: PatientID), or files of several patients."""
    if prior is current or prior.key == current.key:
        raise PriorRefused("Not a prior: it is the current study itself.")
    for which, study in (("current", current), ("prior", prior)):
        if study.mixed_patients:
            raise PriorRefused(f"Not a prior: the {which} study mixes {study.mixed_patients} patients.")
    mine, theirs = current.tags.patient_id.strip(), prior.tags.patient_id.strip()
    if mine and theirs and mine != theirs:
        raise PriorRefused(f"Not a prior of this patient: patient ID {theirs!r} differs from the current "
                           f"study's {mine!r}.")
    notes = []
    unknown = [which for which, pid in (("the current study", mine), ("the prior", theirs)) if not pid]
    if unknown:
        notes.append(NOT_CHECKED.format(which=" and ".join(unknown)))
    now, then = _date(current), _date(prior)
    if now and then and then > now:
        notes.append(f"the prior ({then}) is dated after the current study ({now})")
    reason = cannot_link(current, prior)
    if reason:
        notes.append(f"slices not linked: {reason}")
    return notes


def _no_slices(study: Study) -> str:
    """Why a study has no slices to link ("" when it has)."""
    if not study.is_volume:
        return f"{_KINDS.get(study.kind, 'a ' + study.kind)} has no slices to link"
    if len(study.images) != 1:
        return f"a study of {len(study.images)} volumes"
    image = study.image
    if image.spatial_ndim != 3 or image.direction is None or image.origin is None or None in image.spacing:
        return "no patient geometry"
    return ""


def cannot_link(current: Study, prior: Study) -> str:
    """Why the two studies' slices cannot be linked ("" when they can)."""
    for which, study in (("current study", current), ("prior", prior)):
        reason = _no_slices(study)
        if reason:
            return f"the {which}: {reason}"
    if axial_axis(current.image) != axial_axis(prior.image):
        return "their slices run along different axes"
    return ""


# -- slices -----------------------------------------------------------------------------------------------
def axial_axis(image: ImageData) -> int:
    """The spatial axis (array order) nearest the body axis: the one the axial slices are stacked along."""
    return int(np.argmax(np.abs(np.asarray(image.direction, dtype=float)[:, 2])))


def _slices(image: ImageData) -> int:
    return int(image.array.shape[image.array.ndim - 3 + axial_axis(image)])


def slice_centre(image: ImageData, index: float) -> np.ndarray:
    """The LPS position (mm) of the in-plane centre of axial slice ``index`` (continuous)."""
    centre = (np.asarray(image.array.shape[-3:], dtype=float) - 1) / 2
    centre[axial_axis(image)] = index
    return image.index_to_patient(centre)


def prior_index_of_point(prior: ImageData, point: np.ndarray, link: PriorLink) -> float:
    """The prior's continuous axial index linked with the LPS ``point`` of the current study: the point
    itself (frame of reference) or its height alone (patient coordinates), raised by the offset."""
    target = np.asarray(point, dtype=float) + np.array([0.0, 0.0, link.offset_mm])
    if link.mode == FRAME_OF_REFERENCE:
        return float(prior.patient_to_index(target)[axial_axis(prior)])
    first = slice_centre(prior, 0.0)[2]
    step = slice_centre(prior, 1.0)[2] - first  # mm of height per slice (negative: slices run downward)
    return float((target[2] - first) / step)


def prior_index(current: ImageData, prior: ImageData, current_index: float, link: PriorLink) -> float:
    """The prior's continuous axial index linked with the current study's axial slice ``current_index``."""
    return prior_index_of_point(prior, slice_centre(current, current_index), link)


def prior_slice(current: ImageData, prior: ImageData, current_index: float, link: PriorLink, *,
                clamp: bool = False) -> int | None:
    """The prior's slice (0-based) nearest the one linked with the current slice ``current_index``; outside
    the prior's extent None, or its first or last slice when ``clamp``."""
    return _nearest(prior_index(current, prior, current_index, link), _slices(prior), clamp)


def prior_slice_of_point(prior: ImageData, point: np.ndarray, link: PriorLink, *,
                         clamp: bool = False) -> int | None:
    """As ``prior_slice`` for an LPS point of the current study (a clicked point, a measurement)."""
    return _nearest(prior_index_of_point(prior, point, link), _slices(prior), clamp)


def _nearest(index: float, count: int, clamp: bool) -> int | None:
    nearest = int(np.floor(index + 0.5))
    if 0 <= nearest < count:
        return nearest
    return min(max(nearest, 0), count - 1) if clamp else None


def layer_translate(image: ImageData) -> np.ndarray:
    """The translate ``io/layers.py`` gives a volume's layer (spatial axes): origin . direction[i]."""
    return np.asarray(image.direction, dtype=float) @ np.asarray(image.origin, dtype=float)


def prior_translate(current: ImageData, prior: ImageData, link: PriorLink,
                    current_index: float | None = None) -> np.ndarray:
    """The translate (spatial axes, world mm) for the prior's layer that shows, at the world position of the
    current study's axial slice ``current_index`` (default: its middle one), the prior's linked slice. Along
    the axial axis the prior is shifted; in-plane it keeps its patient position (frame of reference) or is
    centred on the current study (patient coordinates). With parallel axial axes the result is the same for
    every slice: one translate links them all."""
    axis = axial_axis(current)
    if axial_axis(prior) != axis:
        raise ValueError("the two studies' slices run along different axes")
    k = (_slices(current) - 1) / 2 if current_index is None else float(current_index)
    here, there = layer_translate(current), layer_translate(prior)
    s_here, s_there = np.asarray(current.spacing, dtype=float), np.asarray(prior.spacing, dtype=float)
    moved = there.copy()
    moved[axis] = here[axis] + k * s_here[axis] - prior_index(current, prior, k, link) * s_there[axis]
    if link.mode == PATIENT_COORDINATES:
        size_here = np.asarray(current.array.shape[-3:], dtype=float) - 1
        size_there = np.asarray(prior.array.shape[-3:], dtype=float) - 1
        for b in (b for b in range(3) if b != axis):
            moved[b] = here[b] + size_here[b] / 2 * s_here[b] - size_there[b] / 2 * s_there[b]
    return moved


# -- the Comparison line ----------------------------------------------------------------------------------
def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def comparison_text(prior: Study) -> str:
    """The prior named for the Comparison section, from its headers only: modality, the body regions the
    header names, date and series, e.g. "CT chest 2007-04-04 (series '5mm'), prior study."; a study without
    a date says "date not recorded"."""
    modality = prior.modality or KIND_WORDS.get(prior.kind, prior.kind.upper())
    tags = prior.tags
    fields = ("body_part", "protocol_name", "study_description", "series_description")
    named = regions_from_text(*(getattr(tags, name, "") for name in fields))
    head = modality + (f" {_and(list(named))}" if named else "")
    date = _date(prior)
    text = f"{head} {date}" if date else f"{head}, date not recorded"
    series = tags.series_description.strip()
    return text + (f" (series '{series}')" if series else "") + ", prior study."
