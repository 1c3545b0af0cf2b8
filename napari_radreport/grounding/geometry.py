"""Between the model's pixel grid and the study: the processor's exact geometry, inverted.

Every step of ``processor.volume_to_pixels`` (resampling with ``align_corners=False``, centre crop or pad,
resize; CT-RATE's own steps for ``intensity: "ct_rate"``) maps a study voxel index to a model voxel index by
an affine map, which ``processor.patient_to_pixel_index`` computes for a position. ``ModelGrid.of`` reads that
map off at four points (so the steps are written once, in the processor); everything here applies or inverts
it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelGrid:
    """``model_index = matrix @ study_index + offset`` (indices in array order), the model's input shape,
    the study's array shape and its index -> LPS map."""

    matrix: np.ndarray
    offset: np.ndarray
    model_shape: tuple[int, int, int]
    study_shape: tuple[int, int, int]
    study_origin: np.ndarray
    study_axes: np.ndarray  # rows: the LPS step (mm) of one voxel along each array axis

    @classmethod
    def of(cls, study, spec) -> ModelGrid:
        from napari_radreport.modeling.processor import patient_to_pixel_index

        image = study.image

        def model_index(study_index) -> np.ndarray:
            return np.asarray(patient_to_pixel_index(study, spec, image.index_to_patient(study_index)), float)

        offset = model_index(np.zeros(3))
        matrix = np.stack([model_index(unit) - offset for unit in np.eye(3)], axis=1)
        origin = np.asarray(image.index_to_patient(np.zeros(3)), float)
        axes = np.stack([np.asarray(image.index_to_patient(unit), float) - origin for unit in np.eye(3)])
        return cls(matrix, offset, tuple(int(n) for n in spec.target_shape[-3:]),  # type: ignore[arg-type]
                   tuple(int(n) for n in study.array.shape[-3:]), origin, axes)  # type: ignore[arg-type]

    def study_index(self, model_index) -> np.ndarray:
        """The study's continuous array index of a model voxel index."""
        return np.linalg.solve(self.matrix, np.asarray(model_index, float) - self.offset)

    def patient(self, study_index) -> np.ndarray:
        """LPS (mm) of a study array index."""
        return self.study_origin + np.asarray(study_index, float) @ self.study_axes

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

    def box(self, study_mask: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The LPS box (min corner, max corner) around a mask on the study's grid, to its voxels' outer faces
        (half a voxel beyond the outermost centres: a one-voxel mask has the voxel's size)."""
        where = np.argwhere(study_mask)
        ends = (where.min(axis=0) - 0.5, where.max(axis=0) + 0.5)
        corners = np.array([[ends[b][a] for a, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)], float)
        points = self.patient(corners)
        return tuple(points.min(axis=0)), tuple(points.max(axis=0))
