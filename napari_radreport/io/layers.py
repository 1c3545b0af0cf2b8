"""Study -> napari layer data tuples (plain data, no napari import)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_radreport.io.study import ImageData, Study
from napari_radreport.io.windows import DEFAULT_CT_WINDOW, default_contrast_limits

# A gap between radiographs placed side by side, as a fraction of the widest image.
XRAY_GAP_FRACTION = 0.05
VOLUME_AXIS_LABELS = ("S->I", "A->P", "R->L")


def _volume_layer(study: Study, image: ImageData) -> tuple[Any, dict[str, Any], str]:
    lead = image.array.ndim - 3
    # napari world coordinates: patient position along each displayed axis, in mm.
    translate = [0.0] * lead + [float(np.dot(image.origin, d)) for d in image.direction]
    scale = [1.0] * lead + [float(s) for s in image.spacing]
    units = ("pixel",) * lead + ("mm", "mm", "mm")
    labels = tuple(f"axis {i}" for i in range(lead)) + VOLUME_AXIS_LABELS
    kwargs = {
        "name": image.label or study.kind.upper(),
        "scale": scale,
        "translate": translate,
        "units": units,
        "axis_labels": labels,
        "colormap": "gray",
        "contrast_limits": default_contrast_limits(study.kind, image.array, image.file_window),
        "metadata": {"study": study, "radreport_window": DEFAULT_CT_WINDOW if study.kind == "ct" else None},
    }
    return image.array, kwargs, "image"


def _xray_layers(study: Study) -> list[tuple[Any, dict[str, Any], str]]:
    """One layer per radiograph, placed side by side left to right in set order."""
    layers = []
    known = all(None not in im.spacing for im in study.images)
    units = ("mm", "mm") if known else ("pixel", "pixel")
    scales = [tuple(im.spacing) if known else (1.0, 1.0) for im in study.images]
    widths = [im.array.shape[1] * s[1] for im, s in zip(study.images, scales)]
    gap = XRAY_GAP_FRACTION * max(widths)
    x = 0.0
    n = len(study.images)
    prefix = "CXR" if study.kind == "xray_set" else "Image"
    for i, (image, scale, width) in enumerate(zip(study.images, scales, widths)):
        view = f" {image.view_position}" if image.view_position else ""
        kwargs = {
            "name": f"{prefix} {i + 1}/{n}{view} {image.label}",
            "scale": scale,
            "translate": (0.0, x),
            "units": units,
            "colormap": "gray",
            "contrast_limits": default_contrast_limits(study.kind, image.array, image.file_window),
            "metadata": {"study": study, "radreport_image_index": i},
        }
        layers.append((image.array, kwargs, "image"))
        x += width + gap
    return layers


def study_to_layer_data(study: Study) -> list[tuple[Any, dict[str, Any], str]]:
    if study.kind in ("xray_set", "image"):
        return _xray_layers(study)
    return [_volume_layer(study, image) for image in study.images]
