"""Orientation arithmetic shared by the NIfTI and DICOM readers (LPS patient coordinates)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# LPS axis letters: the direction a coordinate increases toward, and its opposite.
_POSITIVE = ("L", "P", "S")
_NEGATIVE = ("R", "A", "I")

# Display target for (slice, row, column): superior->inferior, anterior->posterior, right->left.
CANONICAL_DIRECTION = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
CANONICAL_CODES = ("I", "P", "L")

# Above this many degrees between an axis and its nearest patient axis, a volume is oblique.
OBLIQUE_TOLERANCE_DEG = 0.5


def orientation_codes(direction: np.ndarray) -> tuple[str, ...]:
    """Letter of the patient direction each axis increases toward (nearest patient axis)."""
    codes = []
    for row in np.asarray(direction, dtype=float):
        k = int(np.argmax(np.abs(row)))
        codes.append(_POSITIVE[k] if row[k] > 0 else _NEGATIVE[k])
    return tuple(codes)


def obliquity_deg(direction: np.ndarray) -> float:
    """Largest angle (degrees) between any axis and its nearest patient axis."""
    rows = np.asarray(direction, dtype=float)
    cosines = np.max(np.abs(rows), axis=1) / np.linalg.norm(rows, axis=1)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


@dataclass(frozen=True)
class Reorientation:
    """Axis permutation then flips that bring an array closest to the canonical display."""

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)


def plan_reorientation(direction: np.ndarray) -> Reorientation:
    """Choose, for each canonical axis, the source axis closest to it and whether to flip it."""
    d = np.asarray(direction, dtype=float)
    similarity = np.abs(d @ CANONICAL_DIRECTION.T)  # [source, target]
    perm = [-1, -1, -1]
    free_sources, free_targets = {0, 1, 2}, {0, 1, 2}
    # Greedy by strongest alignment, so a 45-degree tie cannot map two axes onto one.
    for flat in np.argsort(-similarity, axis=None):
        src, tgt = divmod(int(flat), 3)
        if src in free_sources and tgt in free_targets:
            perm[tgt] = src
            free_sources.discard(src)
            free_targets.discard(tgt)
    flip = tuple(bool(d[perm[t]] @ CANONICAL_DIRECTION[t] < 0) for t in range(3))
    return Reorientation(perm=(perm[0], perm[1], perm[2]), flip=flip)  # type: ignore[arg-type]


def reorient(
    array: np.ndarray,
    spacing: tuple[float, float, float],
    origin: np.ndarray,
    direction: np.ndarray,
    plan: Reorientation,
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, np.ndarray]:
    """Apply ``plan`` to the last three axes of ``array`` and update the geometry to match.

    Returns a view when possible (the caller decides whether to make it contiguous).
    """
    lead = array.ndim - 3
    shape = array.shape[lead:]
    origin = np.asarray(origin, dtype=float)
    direction = np.asarray(direction, dtype=float)
    spacing_arr = np.asarray(spacing, dtype=float)
    new_origin = origin.copy()
    for src in range(3):
        tgt = plan.perm.index(src)
        if plan.flip[tgt]:
            new_origin = new_origin + (shape[src] - 1) * spacing_arr[src] * direction[src]
    axes = tuple(range(lead)) + tuple(lead + p for p in plan.perm)
    out = np.transpose(array, axes)
    flip_axes = tuple(lead + t for t in range(3) if plan.flip[t])
    if flip_axes:
        out = np.flip(out, axis=flip_axes)
    signs = np.array([-1.0 if f else 1.0 for f in plan.flip])
    new_direction = direction[list(plan.perm)] * signs[:, None]
    new_spacing = tuple(float(spacing_arr[p]) for p in plan.perm)
    return out, new_spacing, new_origin, new_direction  # type: ignore[return-value]


def affine_lps(origin: np.ndarray, spacing: tuple[float, ...], direction: np.ndarray) -> np.ndarray:
    """4x4 affine from array index (spatial axes, array order) to LPS mm."""
    affine = np.eye(4)
    affine[:3, :3] = (np.asarray(direction, dtype=float) * np.asarray(spacing, dtype=float)[:, None]).T
    affine[:3, 3] = origin
    return affine
