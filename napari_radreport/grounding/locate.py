"""From a heatmap on the model's grid to a ``Location``: smoothed peak, the region around it, its box."""

from __future__ import annotations

import numpy as np

from napari_radreport.grounding.geometry import ModelGrid
from napari_radreport.grounding.location import Location

SMOOTHING_VOXELS = 1.0  # Gaussian sigma on the model's grid before the peak is taken
REGION_FRACTION = 0.5  # the region: voxels connected to the peak at or above this fraction of it


def normalised(heat: np.ndarray, grid: ModelGrid, smoothing: float = SMOOTHING_VOXELS) -> np.ndarray | None:
    """The heatmap smoothed, outside the study's field of view set to 0, scaled to [0, 1]; None when it is
    zero everywhere (the sentence did not depend on the image)."""
    from scipy.ndimage import gaussian_filter

    heat = gaussian_filter(np.asarray(heat, dtype=np.float32), smoothing) if smoothing else heat
    heat = np.where(grid.field_of_view(), heat, 0.0).astype(np.float32)
    top = float(heat.max())
    if not np.isfinite(top) or top <= 0:
        return None
    return heat / top


def region(heat: np.ndarray, fraction: float = REGION_FRACTION) -> np.ndarray:
    """Bool: the voxels at or above ``fraction`` of the peak that are connected to the peak."""
    from scipy.ndimage import label

    labels, _ = label(heat >= fraction)
    return labels == labels[np.unravel_index(int(np.argmax(heat)), heat.shape)]


def location_from_heatmap(heat: np.ndarray, grid: ModelGrid, method: str) -> Location | None:
    """The peak, region and box of a raw heatmap on the model's grid, in patient space; None if empty."""
    scaled = normalised(heat, grid)
    if scaled is None:
        return None
    return location_from_model_mask(region(scaled), grid, method, heatmap=scaled)


def location_from_model_mask(model_mask: np.ndarray, grid: ModelGrid, method: str,
                             heatmap: np.ndarray | None = None) -> Location | None:
    """A Location for a mask on the model's grid: the peak at the heatmap's maximum (the mask's centre of
    mass without one), the box around the mask once on the study's grid. None for an empty mask."""
    if not model_mask.any():
        return None
    if heatmap is not None:
        peak_model = np.array(np.unravel_index(int(np.argmax(heatmap)), heatmap.shape), float)
    else:
        peak_model = np.argwhere(model_mask).mean(axis=0)
    peak_index = grid.study_index(peak_model)
    study_mask = grid.to_study(model_mask.astype(np.float32)) >= 0.5
    if not study_mask.any():  # smaller than a study voxel: the voxel under the peak
        study_mask = np.zeros(grid.study_shape, dtype=bool)
        clipped = np.clip(np.round(peak_index).astype(int), 0, np.array(grid.study_shape) - 1)
        study_mask[tuple(clipped)] = True
    low, high = grid.study.box(study_mask)
    return Location(method, tuple(float(v) for v in grid.patient(peak_index)),
                    (tuple(float(v) for v in low), tuple(float(v) for v in high)),
                    tuple(float(v) for v in peak_index), grid, model_mask, heatmap)
