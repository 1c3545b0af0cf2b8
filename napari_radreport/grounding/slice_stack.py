"""A model input made of axial slices, each a picture of its own (MedGemma's CT recipe), on the study's grid.

``SliceStackGrid``: model index (image n, row i, column j) on a grid of ``model_shape`` (images, rows,
columns): image n is the study's slice ``slices[n]``; its rows and columns each span the whole slice in equal
steps (a picture resized to the processor's square, then read in cells: pixels, or the model's image tokens).
The slices need not be evenly spaced (the recipe rounds its sampling), so the map along the body axis is
piecewise linear between the kept slices, not affine: it has the methods of ``geometry.ModelGrid`` that a
``Location`` uses, without its matrix. Numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_radreport.grounding.geometry import StudyGrid


@dataclass(frozen=True)
class SliceStackGrid:
    slices: tuple[int, ...]  # the study slice of each model image, in model order (increasing)
    model_shape: tuple[int, int, int]
    study: StudyGrid

    @property
    def study_shape(self) -> tuple[int, int, int]:
        return self.study.shape

    def _in_plane_scale(self) -> np.ndarray:
        """Study pixels per model cell along rows and columns."""
        return np.asarray(self.study.shape[1:], float) / np.asarray(self.model_shape[1:], float)

    def study_index(self, model_index) -> np.ndarray:
        """The study's continuous array index of a model index (between two images: between their slices)."""
        n, i, j = (float(v) for v in model_index)
        z = float(np.interp(n, np.arange(len(self.slices)), self.slices))
        row, column = (np.array([i, j]) + 0.5) * self._in_plane_scale() - 0.5
        return np.array([z, row, column])

    def patient(self, study_index) -> np.ndarray:
        return self.study.to_lps(study_index)

    def field_of_view(self) -> np.ndarray:
        """Every model cell shows the study (the pictures are whole slices, no padding)."""
        return np.ones(self.model_shape, dtype=bool)

    def to_study(self, volume: np.ndarray, *, order: int = 1) -> np.ndarray:
        """A map on the model's grid sampled at every study voxel: each image resized to the slice (edges
        held), then, slice by slice, the images of the kept slices around it blended linearly (held beyond the
        first and the last kept slice)."""
        from scipy.ndimage import affine_transform

        volume = np.asarray(volume, dtype=np.float32)
        scale = 1.0 / self._in_plane_scale()  # model cells per study pixel
        images = affine_transform(volume, np.array([1.0, *scale]), np.array([0.0, *(0.5 * scale - 0.5)]),
                                  output_shape=(volume.shape[0], *self.study.shape[1:]), order=order,
                                  mode="nearest")
        position = np.interp(np.arange(self.study.shape[0]), self.slices, np.arange(len(self.slices)))
        study = np.empty(self.study.shape, dtype=np.float32)  # filled slice by slice: one study-sized array
        for z, at in enumerate(position):
            below = int(np.floor(at))
            weight = np.float32(at - below)
            study[z] = (images[below] if weight == 0
                        else (1 - weight) * images[below] + weight * images[below + 1])
        return study
