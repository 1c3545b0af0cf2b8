"""Grounding on radiographs: where the model's input pixels come from in each radiograph, and a heatmap on
that input as a location in one radiograph's pixels.

A radiograph has no patient space (no position of its pixels in LPS), so its locations are in the pixels of
the radiograph they fall on: which image of the set, the peak's (row, column) and the box's first and last
rows and columns. ``ViewGrid`` is the affine map from one radiograph's pixel index to the model's input
(``processor.radiograph_grids`` reads it off the processor's own steps); it has the methods of
``geometry.ModelGrid`` that a ``Location`` and the viewer use, in two dimensions. Numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_radreport.grounding.locate import region
from napari_radreport.grounding.location import Location

SMOOTHING_PIXELS = 1.0  # Gaussian sigma on the model's input before the peak is taken


@dataclass(frozen=True)
class ViewGrid:
    """``model_rc = matrix @ view_rc + offset``: radiograph ``image_index``'s pixels on model image
    ``model_image`` of ``model_shape`` (rows, columns)."""

    image_index: int
    view_shape: tuple[int, int]
    model_image: int
    model_shape: tuple[int, int]
    matrix: np.ndarray
    offset: np.ndarray

    @property
    def study_shape(self) -> tuple[int, int]:
        return self.view_shape

    def study_index(self, model_index) -> np.ndarray:
        """The radiograph's continuous (row, column) of a model pixel index."""
        return np.linalg.solve(self.matrix, np.asarray(model_index, float) - self.offset)

    def field_of_view(self) -> np.ndarray:
        """Bool on the model image: the pixels whose centre lies on this radiograph."""
        rows, columns = np.meshgrid(*(np.arange(n, dtype=float) for n in self.model_shape), indexing="ij")
        view = np.linalg.solve(self.matrix, np.stack([rows.ravel(), columns.ravel()]) - self.offset[:, None])
        limits = np.asarray(self.view_shape, float)[:, None] - 0.5
        return np.all((view >= -0.5) & (view <= limits), axis=0).reshape(self.model_shape)

    def to_study(self, image: np.ndarray, *, order: int = 1) -> np.ndarray:
        """A map on the model image sampled at every pixel of the radiograph."""
        from scipy.ndimage import affine_transform

        return affine_transform(np.asarray(image, dtype=np.float32), self.matrix, self.offset,
                                output_shape=self.view_shape, order=order, mode="constant", cval=0.0)

    def pixel_box(self, mask: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
        """The first and last (row, column) of a mask on the radiograph (pixel centres, inclusive)."""
        where = np.argwhere(mask)
        return (tuple(float(v) for v in where.min(axis=0)), tuple(float(v) for v in where.max(axis=0)))


def location_from_radiograph_heatmap(heat: np.ndarray, grids: list[ViewGrid], method: str,
                                     smoothing: float = SMOOTHING_PIXELS) -> Location | None:
    """The peak, region and box of a raw heatmap on the model's input (images, rows, columns) in the
    radiograph the peak falls on; None when the heatmap is zero on every radiograph."""
    from scipy.ndimage import gaussian_filter

    heat = np.asarray(heat, dtype=np.float32)
    if smoothing:
        heat = gaussian_filter(heat, (0, smoothing, smoothing))
    footprints = [grid.field_of_view() for grid in grids]
    seen = np.zeros(heat.shape, dtype=bool)
    for grid, footprint in zip(grids, footprints):
        seen[grid.model_image] |= footprint
    heat = np.where(seen, heat, 0.0).astype(np.float32)
    top = float(heat.max())
    if not np.isfinite(top) or top <= 0:
        return None
    heat /= top
    which, row, column = np.unravel_index(int(np.argmax(heat)), heat.shape)
    grid, footprint = next((grid, footprint) for grid, footprint in zip(grids, footprints)
                           if grid.model_image == which and footprint[row, column])
    on_view = np.where(footprint, heat[which], 0.0)
    around = region(on_view)  # connected to the peak, at half of it or more, on this radiograph
    peak = grid.study_index((row, column))
    view_mask = grid.to_study(around.astype(np.float32)) >= 0.5
    # the pixel under the peak belongs to its region (at an image's edge the resampled mask can stop short)
    view_mask[tuple(np.clip(np.round(peak).astype(int), 0, np.asarray(grid.view_shape) - 1))] = True
    return Location(method, None, None, tuple(float(v) for v in peak), grid, around, on_view,
                    image_index=grid.image_index, box_pixel=grid.pixel_box(view_mask))
