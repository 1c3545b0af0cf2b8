"""From a heatmap on the model's grid to a ``Location``: smoothed peak, the region around it, its box."""

from __future__ import annotations

import numpy as np

from napari_radreport.grounding.geometry import ModelGrid, box_corners
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


def location_from_heatmap(heat: np.ndarray, grid: ModelGrid, method: str,
                          smoothing: float = SMOOTHING_VOXELS) -> Location | None:
    """The peak, region and box of a raw heatmap on the model's grid (smoothed by ``smoothing`` cells), in
    patient space; None if empty."""
    scaled = normalised(heat, grid, smoothing)
    if scaled is None:
        return None
    return location_from_model_mask(region(scaled), grid, method, heatmap=scaled)


def interior_peak(probability: np.ndarray, mask: np.ndarray,
                  smoothing: float = SMOOTHING_VOXELS) -> np.ndarray | None:
    """The model voxel where a probability map, smoothed as attribution maps are, is highest within ``mask``:
    a point well inside the region. A head's or SegVol's sigmoid saturates (many voxels at exactly 1.0 in
    float32), so the raw maximum is the first voxel of that plateau in array order, on the region's edge.
    None for an empty mask."""
    from scipy.ndimage import gaussian_filter

    if not mask.any():
        return None
    smooth = gaussian_filter(np.asarray(probability, dtype=np.float32), smoothing)
    return np.array(np.unravel_index(int(np.argmax(np.where(mask, smooth, -np.inf))), mask.shape), float)


def location_from_model_mask(model_mask: np.ndarray, grid: ModelGrid, method: str,
                             heatmap: np.ndarray | None = None,
                             peak: np.ndarray | None = None) -> Location | None:
    """A Location for a mask on the model's grid: the peak at ``peak`` (a model voxel index) when given, else
    at the heatmap's maximum, else the mask's centre of mass; the box around the mask once on the study's
    grid. None for an empty mask."""
    if not model_mask.any():
        return None
    if peak is not None:
        peak_model = np.asarray(peak, float)
    elif heatmap is not None:
        peak_model = np.array(np.unravel_index(int(np.argmax(heatmap)), heatmap.shape), float)
    else:
        peak_model = np.argwhere(model_mask).mean(axis=0)
    peak_index = grid.study_index(peak_model)
    study_mask = grid.to_study(model_mask.astype(np.float32)) >= 0.5
    # the voxel under the peak belongs to its region (a mask smaller than a study voxel, or one at the
    # study's edge, where the resampled mask can stop short of the peak)
    study_mask[tuple(np.clip(np.round(peak_index).astype(int), 0, np.array(grid.study_shape) - 1))] = True
    low, high = grid.study.box(study_mask)
    return Location(method, tuple(float(v) for v in grid.patient(peak_index)),
                    (tuple(float(v) for v in low), tuple(float(v) for v in high)),
                    tuple(float(v) for v in peak_index), grid, model_mask, heatmap)


def model_box_mask(start, end, grid: ModelGrid) -> np.ndarray:
    """Bool on the model's grid: the voxels whose centres a box covers, the box given by its first and last
    voxel centres (continuous indices, ``end`` inclusive, as M3D-LaMed writes boxes), each end rounded to the
    nearest voxel (M3D's three decimals move an end by up to 0.0005 of its axis); padding left out."""
    low = np.maximum(np.round(np.asarray(start, float)).astype(int), 0)
    high = np.minimum(np.round(np.asarray(end, float)).astype(int), np.asarray(grid.model_shape) - 1)
    mask = np.zeros(grid.model_shape, dtype=bool)
    if np.all(low <= high):
        mask[low[0]:high[0] + 1, low[1]:high[1] + 1, low[2]:high[2] + 1] = True
    return mask & grid.field_of_view()


def location_from_model_box(start, end, grid: ModelGrid, method: str) -> Location | None:
    """A Location for a box on the model's grid (``model_box_mask``), its peak at the box's centre; None when
    the box lies outside the study."""
    return location_from_model_mask(model_box_mask(start, end, grid), grid, method)


def model_box_of_patient_box(low_lps, high_lps, grid: ModelGrid) -> tuple[np.ndarray, np.ndarray] | None:
    """The first and last model voxel centres (continuous indices, (D, H, W)) a patient-space box covers:
    its eight corners through the study's and the model's grids; an axis thinner than one model voxel keeps
    the voxel nearest its middle. None when it lies outside the model's input."""
    model = np.array([grid.matrix @ grid.study.to_index(c) + grid.offset
                      for c in box_corners(low_lps, high_lps)])
    lo, hi = model.min(axis=0), model.max(axis=0)
    first, last = np.ceil(lo - 1e-6), np.floor(hi + 1e-6)
    thin = first > last
    middle = np.round((lo + hi) / 2)
    first, last = np.where(thin, middle, first), np.where(thin, middle, last)
    size = np.asarray(grid.model_shape) - 1
    first, last = np.clip(first, 0, size), np.clip(last, 0, size)
    if np.any(hi < -0.5) or np.any(lo > size + 0.5):
        return None
    return first, last
