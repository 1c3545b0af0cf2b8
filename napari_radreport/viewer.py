"""Putting studies and the plugin's docks into a napari viewer (used by the CLI, the docks and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari

    from napari_radreport.io import Study

PLUGIN = "napari-radreport"
SAMPLES = {"phantom": "chest_phantom", "ct": "abdomen_ct", "xray": "chest_xray"}


LOCATION_KEY = "radreport_location"  # metadata of the layers drawn for a located sentence (box, heatmap)


def study_image_layers(viewer, study) -> list:
    """The layers showing ``study``'s images, in layer order (not the boxes, heatmaps or measurements drawn
    on them)."""
    return [layer for layer in viewer.layers
            if layer.metadata.get("study") is study and layer.__class__.__name__ == "Image"
            and LOCATION_KEY not in layer.metadata]


def widen_contrast_range(layer) -> None:
    """Let the contrast slider span the data, not just the window it opened with (napari narrows it)."""
    study = layer.metadata.get("study")
    drawn_on = LOCATION_KEY in layer.metadata  # a location's box or heatmap, not the study's image
    if study is None or drawn_on or getattr(layer, "rgb", False) or not hasattr(layer, "contrast_limits"):
        return
    index = layer.metadata.get("radreport_image_index", 0)
    lo, hi = study.images[index].value_range()
    c_lo, c_hi = layer.contrast_limits
    if hi > lo:
        layer.contrast_limits_range = (min(lo, c_lo), max(hi, c_hi))
        layer.contrast_limits = (c_lo, c_hi)


def add_study(viewer: napari.Viewer, study: Study) -> list:
    """Add a study's layers (scale, translate and units in mm) and frame them."""
    layers = [viewer.add_image(data, **kwargs) for data, kwargs, _ in study.to_layer_data()]
    for layer in layers:
        widen_contrast_range(layer)
    viewer.reset_view()
    return layers


def add_docks(viewer: napari.Viewer, *, restore: bool = True) -> dict:
    """Dock the plugin's widgets in the reading layout (``widgets.layout``); returns them by name."""
    from napari_radreport.widgets.layout import add_docks as dock_in_reading_layout

    return dock_in_reading_layout(viewer, restore=restore)


def open_viewer(
    paths: Sequence[str] | None, *, sample: str = "phantom", series: str | None = None,
    allow_mixed_patients: bool = False, run: bool = True
):
    """A napari window with the plugin's docks and a study (a sample when no paths are given). The study is
    read before the window opens, so a refusal (e.g. files of two patients) opens nothing."""
    import napari

    from napari_radreport.io import load_study

    study = None
    if paths:
        study = load_study(list(paths) if len(paths) > 1 else paths[0], series=series,
                           allow_mixed_patients=allow_mixed_patients)
    viewer = napari.Viewer(title="napari-radreport")
    add_docks(viewer)
    if study is not None:
        add_study(viewer, study)
    else:
        viewer.open_sample(PLUGIN, SAMPLES[sample])
    if run:
        napari.run()
    return viewer
