"""A box the reader draws in napari (a rectangle on a Shapes layer) as a patient-space box to ask about.

The rectangle's corners go from the Shapes layer's data to the viewer's world (its own transform), then to
the study's array index through the study's image layer (the inverse of ``study_to_world``), then to LPS mm.
Rectangles on several slices of one layer span those slices; a single rectangle reaches half its shorter
side above and below its slice (a box drawn around a lesion on its largest slice covers the lesion's depth
when it is roughly round), at least the slice itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_radreport.grounding.geometry import box_corners
from napari_radreport.viewer import LOCATION_KEY
from napari_radreport.widgets.location_layers import study_to_world

NO_BOX = ("Draw a rectangle first: add a Shapes layer, pick the rectangle tool and drag a box around the "
          "region on a slice of this study.")


def drawn_shapes_layer(viewer) -> Any | None:
    """The Shapes layer the reader drew in: the active layer if it is one, else the newest; never a layer
    this plugin drew for a located sentence."""
    from napari.layers import Shapes

    def drawn(layer) -> bool:
        return isinstance(layer, Shapes) and LOCATION_KEY not in layer.metadata and len(layer.data) > 0

    active = viewer.layers.selection.active
    if active is not None and drawn(active):
        return active
    candidates = [layer for layer in viewer.layers if drawn(layer)]
    return candidates[-1] if candidates else None


def drawn_box_lps(viewer, image_layer, study) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) LPS mm corners of the box drawn on ``study`` (see the module's docstring); None when no
    rectangle is drawn. Rectangles of another dimensionality than the study's three axes are skipped."""
    shapes = drawn_shapes_layer(viewer)
    if shapes is None:
        return None
    to_study = np.linalg.inv(study_to_world(image_layer))
    points = []
    for vertices in shapes.data:
        vertices = np.asarray(vertices, float)
        if vertices.ndim != 2 or vertices.shape[1] < 3:
            continue
        world = np.array([shapes.data_to_world(v) for v in vertices])[:, -3:]
        points.append((to_study @ np.c_[world, np.ones(len(world))].T).T[:, :3])
    if not points:
        return None
    index = np.concatenate(points)
    low, high = index.min(axis=0), index.max(axis=0)
    if len(points) == 1:
        spacing = np.abs(np.asarray(study.image.spacing, float))
        half_mm = 0.5 * min((high[1:] - low[1:]) * spacing[1:])
        reach = max(half_mm / spacing[0], 0.5)
        low[0], high[0] = low[0] - reach, high[0] + reach
    corners = np.array([study.image.index_to_patient(c) for c in box_corners(low, high)])
    return corners.min(axis=0), corners.max(axis=0)
