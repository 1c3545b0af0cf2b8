"""Grids for grounding: a study's voxel grid in patient space, and the model's input grid on top of it.

``StudyGrid``: a study's array shape and its index -> LPS (mm) map. ``ModelGrid``: every step of
``processor.volume_to_pixels`` (resampling with ``align_corners=False``, centre crop or pad, resize; CT-RATE's
own steps for ``intensity: "ct_rate"``) maps a study voxel index to a model voxel index by an affine map;
``processor.model_grid`` reads it off ``patient_to_pixel_index`` at four points (so the steps are written
once, in the processor) and this class applies or inverts it. Numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def box_corners(low, high) -> np.ndarray:
    """(8, 3) every corner of the axis-aligned box from ``low`` to ``high`` (any 3-D coordinates)."""
    ends = (np.asarray(low, float), np.asarray(high, float))
    return np.array([[ends[b][a] for a, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)])


def affine_of(point_map, dims: int = 3) -> np.ndarray:
    """The (dims + 1)-square homogeneous matrix of an affine map of points, read off at dims + 1 points."""
    origin = np.asarray(point_map(np.zeros(dims)), float)
    columns = [np.asarray(point_map(unit), float) - origin for unit in np.eye(dims)]
    matrix = np.eye(dims + 1)
    matrix[:dims, :dims] = np.stack(columns, axis=1)
    matrix[:dims, dims] = origin
    return matrix


@dataclass(frozen=True)
class StudyGrid:
    """A study's array grid: its shape and index -> LPS (mm) map, ``lps = origin + index @ axes``."""

    shape: tuple[int, int, int]
    origin: np.ndarray
    axes: np.ndarray  # rows: the LPS step (mm) of one voxel along each array axis

    @classmethod
    def of(cls, study) -> StudyGrid:
        image = study.image
        if image.direction is None or image.origin is None or None in image.spacing:
            raise ValueError(f"{image.label}: no patient geometry (radiograph or unknown spacing)")
        axes = np.asarray(image.direction, float) * np.asarray(image.spacing, float)[:, None]
        return cls(tuple(int(n) for n in image.array.shape[-3:]), np.asarray(image.origin, float), axes)

    def to_lps(self, index) -> np.ndarray:
        return self.origin + np.asarray(index, float) @ self.axes

    def to_index(self, lps) -> np.ndarray:
        """The continuous array index of an LPS position."""
        return np.linalg.solve(self.axes.T, np.asarray(lps, float) - self.origin)

    def voxel_of(self, lps) -> tuple[int, ...] | None:
        """The voxel nearest to an LPS position, None when it lies outside the array."""
        index = np.rint(self.to_index(lps)).astype(int)
        if np.any(index < 0) or np.any(index >= np.asarray(self.shape)):
            return None
        return tuple(int(i) for i in index)

    def box(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The LPS box (min corner, max corner) of a mask, to its voxels' outer faces (half a voxel beyond
        the outermost centres: a one-voxel mask has the voxel's size)."""
        where = np.argwhere(mask)
        points = self.to_lps(box_corners(where.min(axis=0) - 0.5, where.max(axis=0) + 0.5))
        return points.min(axis=0), points.max(axis=0)


@dataclass(frozen=True)
class ModelGrid:
    """``model_index = matrix @ study_index + offset`` (indices in array order) between a study's grid and
    the model's input of ``model_shape``."""

    matrix: np.ndarray
    offset: np.ndarray
    model_shape: tuple[int, int, int]
    study: StudyGrid

    @property
    def study_shape(self) -> tuple[int, int, int]:
        return self.study.shape

    def study_index(self, model_index) -> np.ndarray:
        """The study's continuous array index of a model voxel index."""
        return np.linalg.solve(self.matrix, np.asarray(model_index, float) - self.offset)

    def patient(self, study_index) -> np.ndarray:
        """LPS (mm) of a study array index."""
        return self.study.to_lps(study_index)

    def field_of_view(self) -> np.ndarray:
        """Bool on the model grid: the voxels whose centre lies inside the study (not padding)."""
        inside = np.ones(self.model_shape, dtype=bool)
        inverse = np.linalg.inv(self.matrix)
        for axis, n in enumerate(self.model_shape):
            sources = np.flatnonzero(np.abs(inverse[:, axis]) > 1e-9)
            if len(sources) != 1:
                return np.ones(self.model_shape, dtype=bool)  # an oblique map: keep every voxel
            source = sources[0]
            centres = (np.arange(n) - self.offset[axis]) * inverse[source, axis]
            valid = (centres >= -0.5) & (centres <= self.study_shape[source] - 0.5)
            shape = [1, 1, 1]
            shape[axis] = n
            inside &= valid.reshape(shape)
        return inside

    def to_study(self, volume: np.ndarray, *, order: int = 1) -> np.ndarray:
        """A volume on the model's grid sampled at every voxel of the study (0 outside the field of view)."""
        from scipy.ndimage import affine_transform

        return affine_transform(np.asarray(volume, dtype=np.float32), self.matrix, self.offset,
                                output_shape=self.study_shape, order=order, mode="constant", cval=0.0)

    def to_model(self, volume: np.ndarray, *, order: int = 1) -> np.ndarray:
        """A volume on the study's grid sampled at every voxel of the model's input (0 outside the study): a
        mask becomes the fraction of it each model voxel covers (``order`` 1)."""
        from scipy.ndimage import affine_transform

        inverse = np.linalg.inv(self.matrix)
        return affine_transform(np.asarray(volume, dtype=np.float32), inverse, -inverse @ self.offset,
                                output_shape=self.model_shape, order=order, mode="constant", cval=0.0)
