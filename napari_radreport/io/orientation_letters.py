"""Patient orientation letters at the edges of a 2D view, and the plane a slice axis cuts (pure, no Qt).

Patient coordinates are DICOM's LPS (``io/study.py``): +x left, +y posterior, +z superior. A volume's
``direction[i]`` is the LPS unit vector of spatial axis ``i`` and ``spacing[i]`` its step in mm, so a step
``v`` in (continuous) voxel index moves the patient position by ``(v * spacing) @ direction``.

A view shows two data axes: one running down the screen, one running right. Given the data-index vectors
that point screen-right and screen-down, the letters name the patient direction each edge faces, the way
3D Slicer and OHIF label their views: R on the viewer's left of a radiological axial view, A on top.
An oblique edge gets several letters in order of significance (DICOM Patient Orientation style, "LA").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_radreport.io.geometry import OBLIQUE_TOLERANCE_DEG

_POSITIVE = ("L", "P", "S")
_NEGATIVE = ("R", "A", "I")
# A patient-axis component below this share of a unit vector is left out of its letters.
_MINOR = float(np.sin(np.radians(OBLIQUE_TOLERANCE_DEG)))

PLANE_OF_NORMAL = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal",
                   "R": "sagittal"}
PLANES = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class EdgeLetters:
    """The patient direction each edge of a view faces ("" when unknown)."""

    left: str
    right: str
    top: str
    bottom: str

    def as_line(self) -> str:
        """One line naming each edge, for a view that cannot place text at the edges."""
        return f"left: {self.left}  right: {self.right}  top: {self.top}  bottom: {self.bottom}"


def direction_letters(vector: Sequence[float], minor: float = _MINOR) -> str:
    """Letters of the LPS direction ``vector`` points to, most significant first ("" for a zero vector).

    ``(1, 0, 0)`` -> "L"; ``(-0.8, -0.6, 0)`` -> "RA"; components under ``minor`` (of the unit vector) are
    left out, so an axis within the obliquity tolerance gets one letter."""
    v = np.asarray(vector, dtype=float)
    norm = float(np.linalg.norm(v))
    if norm == 0 or not np.isfinite(norm):
        return ""
    v = v / norm
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join((_POSITIVE[k] if v[k] > 0 else _NEGATIVE[k]) for k in order if abs(v[k]) >= minor)


def opposite(letters: str) -> str:
    """The letters of the opposite direction ("LA" -> "RP")."""
    swap = dict(zip(_POSITIVE + _NEGATIVE, _NEGATIVE + _POSITIVE))
    return "".join(swap.get(c, c) for c in letters)


def patient_vector(index_step: Sequence[float], spacing: Sequence[float],
                   direction: np.ndarray) -> np.ndarray:
    """The LPS displacement in mm of a step in voxel index (spatial axes, array order)."""
    step = np.asarray(index_step, dtype=float) * np.asarray(spacing, dtype=float)
    return step @ np.asarray(direction, dtype=float)


def edge_letters(direction: np.ndarray, spacing: Sequence[float], right: Sequence[float],
                 down: Sequence[float]) -> EdgeLetters:
    """Letters of a view whose screen-right and screen-down run along the voxel-index vectors ``right`` and
    ``down`` (spatial axes, array order; e.g. ``(0, 0, 1)`` and ``(0, 1, 0)`` for an axial slice)."""
    to_right = direction_letters(patient_vector(right, spacing, direction))
    to_bottom = direction_letters(patient_vector(down, spacing, direction))
    return EdgeLetters(left=opposite(to_right), right=to_right, top=opposite(to_bottom), bottom=to_bottom)


def view_letters(direction: np.ndarray, spacing: Sequence[float], displayed: tuple[int, int], *,
                 vertical_up: bool = False, horizontal_left: bool = False) -> EdgeLetters:
    """Letters of a view showing spatial axes ``displayed`` = (axis running down, axis running right),
    napari's 2D convention; ``vertical_up``/``horizontal_left`` for a camera that flips either axis."""
    n = len(spacing)
    down, right = np.zeros(n), np.zeros(n)
    down[displayed[0]] = -1.0 if vertical_up else 1.0
    right[displayed[1]] = -1.0 if horizontal_left else 1.0
    return edge_letters(direction, spacing, right, down)


def plane_axes(direction: np.ndarray) -> dict[str, int]:
    """The spatial axis normal to each standard plane: the axis nearest to S/I is sliced for axial, A/P for
    coronal, L/R for sagittal (axes are matched one to one, strongest alignment first)."""
    d = np.abs(np.asarray(direction, dtype=float))
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    found: dict[str, int] = {}
    taken: set[int] = set()
    plane_of_patient_axis = {2: "axial", 1: "coronal", 0: "sagittal"}
    for flat in np.argsort(-d, axis=None, kind="stable"):
        axis, patient = divmod(int(flat), 3)
        plane = plane_of_patient_axis[patient]
        if axis not in taken and plane not in found:
            found[plane] = axis
            taken.add(axis)
    return {plane: found[plane] for plane in PLANES}


def plane_of_axis(direction: np.ndarray, slice_axis: int) -> str:
    """The standard plane a view slicing along ``slice_axis`` shows ("axial", "coronal" or "sagittal")."""
    return next(plane for plane, axis in plane_axes(direction).items() if axis == slice_axis)
