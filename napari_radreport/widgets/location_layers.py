"""A located sentence in the viewer: go to its peak (slice and centre), draw its box, overlay its heatmap.

Layers are placed through the study's image layer (``data_to_world``), so they sit on the image whatever its
scale, translation or affine; each carries the study in its metadata, so it shows and hides with the study.
A radiograph's location is drawn on the layer of the radiograph it is in (its ``image_index``), in that
radiograph's pixels. One box layer and one heatmap layer per finding name ("nodule (location)"); showing
another sentence of the same finding replaces them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_radreport.grounding.geometry import affine_of, box_corners
from napari_radreport.grounding.location import Location, peak_words
from napari_radreport.viewer import LOCATION_KEY

BOX_COLOUR = "#ffd400"
SUFFIX = " (location)"
HEATMAP_SUFFIX = " (heatmap)"
QUOTED_CHARACTERS = 90  # a long sentence is shortened where the status line quotes it (the dock stays usable)


def study_to_world(layer, dims: int = 3) -> np.ndarray:
    """(dims + 1)-square: an array index of the image (a volume's, or one radiograph's with ``dims`` 2) ->
    the viewer's world coordinates (the image layer's own transform)."""
    return affine_of(lambda index: layer.data_to_world(index), dims=dims)


def _world(layer, index) -> np.ndarray:
    dims = len(index)
    return (study_to_world(layer, dims) @ np.append(np.asarray(index, float), 1.0))[:dims]


def go_to(viewer, layer, study, peak_lps_mm) -> None:
    """Move the viewer's sliders to the slice of ``peak_lps_mm``, and centre the view on it when it lies
    outside the middle 80 % of what the canvas shows (otherwise the framing stays as the reader left it)."""
    go_to_index(viewer, layer, study.image.patient_to_index(peak_lps_mm))


def go_to_index(viewer, layer, index) -> None:
    """``go_to`` an array index of ``layer``'s image (a volume's, or one radiograph's (row, column))."""
    world = _world(layer, index)
    dims = len(world)
    axes = list(range(viewer.dims.ndim - dims, viewer.dims.ndim))
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


def pixel_rectangle(box_pixel_rc) -> np.ndarray:
    """A radiograph box (first and last pixel, (row, column)) as the rectangle around those pixels."""
    (r0, c0), (r1, c1) = box_pixel_rc
    top, left, bottom, right = r0 - 0.5, c0 - 0.5, r1 + 0.5, c1 + 0.5
    return np.array([[top, left], [top, right], [bottom, right], [bottom, left]], float)


def _rectangles(layer, study, where: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray]:
    """A location's rectangles in its image layer's array index, and that layer's transform to the world."""
    if "image_index" in where:
        return [pixel_rectangle(where["box_pixel_rc"])], study_to_world(layer, 2)
    return box_rectangles(study, where["box_lps_mm"]), study_to_world(layer)


def image_layer(layers: list, where: dict[str, Any]) -> Any | None:
    """The layer of the image a location is on: a volume's, or the radiograph's of its ``image_index``."""
    index = int(where.get("image_index", 0))
    return next((layer for layer in layers if layer.metadata.get("radreport_image_index", 0) == index), None)


def _replace(viewer, name: str, add) -> Any:
    if name in viewer.layers:
        viewer.layers.remove(name)
    return add()


def show_location(viewer, layer, study, finding: str, sentence: str, location: dict[str, Any] | Location,
                  heatmap: Location | None = None) -> list[Any]:
    """Go to the location and draw it: its box (labelled with the finding), and the heatmap when the
    in-memory ``Location`` has one. Returns the layers added."""
    data = location.as_dict() if isinstance(location, Location) else location
    if "image_index" in data:
        go_to_index(viewer, layer, data["peak_pixel_rc"])
    else:
        go_to(viewer, layer, study, data["peak_lps_mm"])
    meta = {"study": study, LOCATION_KEY: sentence}
    added = []
    rectangles, transform = _rectangles(layer, study, data)
    name = f"{finding}{SUFFIX}"
    if rectangles:
        added.append(_replace(viewer, name, lambda: viewer.add_shapes(
            rectangles, shape_type="rectangle", edge_color=BOX_COLOUR, face_color="transparent",
            edge_width=2, name=name, affine=transform, metadata=meta, units=layer.units,
            features={"finding": [finding] * len(rectangles)},
            text={"string": "{finding}", "color": BOX_COLOUR, "anchor": "upper_left", "size": 10})))
    if heatmap is not None and heatmap.model_heatmap is not None and heatmap.grid is not None:
        dims = len(heatmap.grid.model_shape)
        if hasattr(heatmap.grid, "matrix"):  # an affine grid: the model's map, placed by its transform
            heat, to_study = heatmap.model_heatmap, affine_of(heatmap.grid.study_index, dims=dims)
        else:  # slices kept unevenly (grounding/slice_stack.py): the map resampled on the study's grid
            heat, to_study = heatmap.heatmap, np.eye(dims + 1)
        heat_name = f"{finding}{HEATMAP_SUFFIX}"
        added.append(_replace(viewer, heat_name, lambda: viewer.add_image(
            heat, name=heat_name, colormap="inferno", blending="additive", opacity=0.5,
            contrast_limits=(0.0, 1.0), affine=study_to_world(layer, dims) @ to_study, metadata=meta,
            units=layer.units, interpolation2d="linear")))
    viewer.layers.selection.active = layer  # the study stays the active one
    return added


def show_all(viewer, layers: list, study, grounded: list[dict[str, Any]]) -> Any | None:
    """Every located sentence's box on one layer, each labelled with its finding; None when none is.
    ``layers``: the study's image layers (a radiograph set's in its order); the boxes are placed in the
    world, each through the layer of the image it is on."""
    rectangles, findings = [], []
    for entry in grounded:
        where = entry.get("location")
        if where:
            layer = image_layer(layers, where)
            if layer is None:
                continue
            drawn, transform = _rectangles(layer, study, where)
            for rectangle in drawn:
                corners = np.c_[rectangle, np.ones(len(rectangle))]
                rectangles.append((corners @ transform.T)[:, :-1])
                findings.append(entry.get("finding") or "finding")
    if not rectangles:
        return None
    name = f"all findings{SUFFIX}"
    shapes = _replace(viewer, name, lambda: viewer.add_shapes(
        rectangles, shape_type="rectangle", edge_color=BOX_COLOUR, face_color="transparent", edge_width=2,
        name=name, metadata={"study": study, LOCATION_KEY: "all"},
        units=layers[0].units,
        features={"finding": findings},
        text={"string": "{finding}", "color": BOX_COLOUR, "anchor": "upper_left", "size": 10}))
    viewer.layers.selection.active = layers[0]
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
    layer = image_layer(layers, where)
    if layer is None:
        return ""
    import textwrap

    show_location(viewer, layer, study, finding, sentence.get("text", ""), where, location)
    quoted = textwrap.shorten(sentence.get("text", ""), QUOTED_CHARACTERS, placeholder=" …")
    return (f"Showing where “{html.escape(quoted)}” is: peak at {peak_words(where)}, "
            f"box on layer “{html.escape(finding)}{SUFFIX}”.")
