"""A located sentence in the viewer: go to its peak (slice and centre), draw its box, overlay its heatmap.

Layers are placed through the study's image layer (``data_to_world``), so they sit on the image whatever its
scale, translation or affine; each carries the study in its metadata, so it shows and hides with the study.
One box layer and one heatmap layer per finding name ("nodule (location)"); showing another sentence of the
same finding replaces them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_radreport.grounding.geometry import affine_of, box_corners
from napari_radreport.grounding.location import Location
from napari_radreport.viewer import LOCATION_KEY

BOX_COLOUR = "#ffd400"
SUFFIX = " (location)"
HEATMAP_SUFFIX = " (heatmap)"


def study_to_world(layer) -> np.ndarray:
    """4 x 4: a study array index -> the viewer's world coordinates (the image layer's own transform)."""
    return affine_of(lambda index: layer.data_to_world(index))


def _world(layer, study_index) -> np.ndarray:
    return (study_to_world(layer) @ np.append(np.asarray(study_index, float), 1.0))[:3]


def go_to(viewer, layer, study, peak_lps_mm) -> None:
    """Move the viewer's sliders to the slice of ``peak_lps_mm``, and centre the view on it when it lies
    outside the middle 80 % of what the canvas shows (otherwise the framing stays as the reader left it)."""
    world = _world(layer, study.image.patient_to_index(peak_lps_mm))
    axes = list(range(viewer.dims.ndim - 3, viewer.dims.ndim))
    for axis, value in zip(axes, world):
        viewer.dims.set_point(axis, float(value))
    shown = [float(world[axes.index(axis)]) for axis in viewer.dims.displayed if axis in axes]
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    centre = list(camera.center)[-len(shown):] if shown else []
    size = list(getattr(viewer.canvas, "size", ()))[-len(shown):]
    half = [0.4 * n / max(camera.zoom, 1e-9) for n in size] if len(size) == len(shown) else []
    if shown and (not half or any(abs(p - c) > h for p, c, h in zip(shown, centre, half))):
        camera.center = tuple(shown)


def box_rectangles(study, box_lps_mm) -> list[np.ndarray]:
    """The box as one rectangle per axial slice it spans, in the study's array index (slice, row, column)."""
    low, high = (np.asarray(c, float) for c in box_lps_mm)
    index = np.stack([study.image.patient_to_index(c) for c in box_corners(low, high)])
    first, last = index.min(axis=0), index.max(axis=0)
    slices = range(max(int(np.ceil(first[0] - 1e-6)), 0),
                   min(int(np.floor(last[0] + 1e-6)), study.array.shape[0] - 1) + 1)
    (y0, x0), (y1, x1) = first[1:], last[1:]
    return [np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]]) for z in slices]


def _replace(viewer, name: str, add) -> Any:
    if name in viewer.layers:
        viewer.layers.remove(name)
    return add()


def show_location(viewer, layer, study, finding: str, sentence: str, location: dict[str, Any] | Location,
                  heatmap: Location | None = None) -> list[Any]:
    """Go to the location and draw it: its box (labelled with the finding), and the heatmap when the
    in-memory ``Location`` has one. Returns the layers added."""
    data = location.as_dict() if isinstance(location, Location) else location
    go_to(viewer, layer, study, data["peak_lps_mm"])
    meta = {"study": study, LOCATION_KEY: sentence}
    added = []
    rectangles = box_rectangles(study, data["box_lps_mm"])
    name = f"{finding}{SUFFIX}"
    if rectangles:
        transform = study_to_world(layer)
        added.append(_replace(viewer, name, lambda: viewer.add_shapes(
            rectangles, shape_type="rectangle", edge_color=BOX_COLOUR, face_color="transparent",
            edge_width=2, name=name, affine=transform, metadata=meta, units=layer.units,
            features={"finding": [finding] * len(rectangles)},
            text={"string": "{finding}", "color": BOX_COLOUR, "anchor": "upper_left", "size": 10})))
    if heatmap is not None and heatmap.model_heatmap is not None and heatmap.grid is not None:
        to_study = affine_of(heatmap.grid.study_index)  # model grid -> study index
        heat_name = f"{finding}{HEATMAP_SUFFIX}"
        added.append(_replace(viewer, heat_name, lambda: viewer.add_image(
            heatmap.model_heatmap, name=heat_name, colormap="inferno", blending="additive", opacity=0.5,
            contrast_limits=(0.0, 1.0), affine=study_to_world(layer) @ to_study, metadata=meta,
            units=layer.units, interpolation2d="linear")))
    viewer.layers.selection.active = layer  # the study stays the active one
    return added


def show_all(viewer, layer, study, grounded: list[dict[str, Any]]) -> Any | None:
    """Every located sentence's box on one layer, each labelled with its finding; None when none is."""
    rectangles, findings = [], []
    for entry in grounded:
        if entry.get("location"):
            for rectangle in box_rectangles(study, entry["location"]["box_lps_mm"]):
                rectangles.append(rectangle)
                findings.append(entry.get("finding") or "finding")
    if not rectangles:
        return None
    name = f"all findings{SUFFIX}"
    shapes = _replace(viewer, name, lambda: viewer.add_shapes(
        rectangles, shape_type="rectangle", edge_color=BOX_COLOUR, face_color="transparent", edge_width=2,
        name=name, affine=study_to_world(layer), metadata={"study": study, LOCATION_KEY: "all"},
        units=layer.units,
        features={"finding": findings},
        text={"string": "{finding}", "color": BOX_COLOUR, "anchor": "upper_left", "size": 10}))
    viewer.layers.selection.active = layer
    return shapes


def show_sentence(session, sentence: dict[str, Any], location: Location | None = None) -> str:
    """Show where a grounded sentence of the active study is (``show_location``; ``location``: the
    in-memory one, with its heatmap, when at hand); the line a dock says about it ('' when nothing shows)."""
    import html

    from napari_radreport.viewer import study_image_layers

    viewer, study = session.viewer_ref(), session.study
    layers = study_image_layers(viewer, study) if viewer is not None and study is not None else []
    where = sentence.get("location")
    if not layers or not where:
        return ""
    finding = sentence.get("finding") or "finding"
    show_location(viewer, layers[0], study, finding, sentence.get("text", ""), where, location)
    peak = ", ".join(f"{v:.0f}" for v in where["peak_lps_mm"])
    return (f"Showing where “{html.escape(sentence.get('text', ''))}” is: peak at LPS ({peak}) mm, box on "
            f"layer “{html.escape(finding)}{SUFFIX}”.")
