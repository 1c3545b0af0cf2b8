"""Radiograph locations in a real napari viewer: a Findings row of a radiograph model is located on the
radiograph it is in, its box and heatmap drawn on that radiograph's layer; a sentence's location is drawn
on the right radiograph of a set, and Show all places every box on its own radiograph."""

from __future__ import annotations

import numpy as np
import pytest

WAIT_MS = 120_000


@pytest.fixture()
def radiograph_pair(shared_data):
    from napari_radreport import load_study

    folder = shared_data / "xray"
    return load_study([folder / "nih_00000001_000_cardiomegaly.png",
                       folder / "nih_00027426_000_no_finding.png"])


def _inside_layer(layer, world_points) -> bool:
    """Whether world points lie on ``layer``'s image (within its pixels' outer edges)."""
    index = np.array([layer.world_to_data(p) for p in world_points])
    return bool(np.all(index >= -0.5 - 1e-6) and np.all(index <= np.asarray(layer.data.shape) - 0.5 + 1e-6))


def test_a_findings_row_of_a_radiograph_model_shows_where_on_its_radiograph(docked, qtbot, tiny_xray_model,
                                                                           radiograph_pair):
    from napari_radreport.viewer import add_study, study_image_layers

    viewer, session, findings = docked["viewer"], docked["session"], docked["Findings"]
    session.update_settings(model_folder=str(tiny_xray_model))
    add_study(viewer, radiograph_pair)
    docked["Report"].load_model()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)
    findings.render()
    assert findings.table.rowCount() > 0 and findings.where_button.isEnabled()
    label = findings.table.item(0, 0).text()
    findings.table.cellDoubleClicked.emit(0, 0)
    box_layers = lambda: [n for n in (layer.name for layer in viewer.layers) if n.endswith(" (location)")]  # noqa: E731
    qtbot.waitUntil(lambda: bool(box_layers()) and not session.busy, timeout=WAIT_MS)
    assert "Showing where" in findings.status.text() and "of radiograph" in findings.status.text(), label
    (name,) = box_layers()
    box, heat = viewer.layers[name], viewer.layers[name.replace("(location)", "(heatmap)")]
    index = int(findings.status.text().split("of radiograph ")[1].split(",")[0]) - 1
    layer = study_image_layers(viewer, radiograph_pair)[index]
    assert layer.metadata["radreport_image_index"] == index
    corners = [box._data_to_world(point) for point in box.data[0]]
    assert _inside_layer(layer, corners)  # the box lies on the radiograph the status names
    assert box.metadata["study"] is radiograph_pair and heat.metadata["study"] is radiograph_pair
    # where the heatmap is brightest (in the world) lies inside the drawn box
    brightest = heat.data_to_world(np.unravel_index(int(np.argmax(heat.data)), heat.data.shape))
    low, high = np.min(corners, axis=0), np.max(corners, axis=0)
    assert np.all(brightest >= low - 1e-6) and np.all(brightest <= high + 1e-6), (brightest, low, high)


def test_each_location_is_drawn_on_its_own_radiograph(docked, radiograph_pair):
    from napari_radreport.viewer import add_study, study_image_layers
    from napari_radreport.widgets.location_layers import show_all, show_sentence

    viewer, session = docked["viewer"], docked["session"]
    add_study(viewer, radiograph_pair)
    first, second = study_image_layers(viewer, radiograph_pair)
    height, width = radiograph_pair.images[1].array.shape
    sentence = {"section": "findings", "text": "Right pleural effusion.", "finding": "pleural effusion",
                "location": {"method": "test", "image_index": 1, "peak_pixel_rc": [height - 200.0, 150.0],
                             "box_pixel_rc": [[height - 300.0, 100.0], [height - 101.0, 259.0]]}}
    viewer.camera.center = first.data_to_world(np.asarray(first.data.shape) / 2)  # zoomed in on the first
    viewer.camera.zoom = 4.0
    said = show_sentence(session, sentence)
    assert f"row {height - 200}, column 150 of radiograph 2" in said
    box = viewer.layers["pleural effusion (location)"]
    corners = np.array([box._data_to_world(p) for p in box.data[0]])
    np.testing.assert_allclose(corners.min(axis=0), second.data_to_world((height - 300.5, 99.5)), atol=1e-6)
    np.testing.assert_allclose(corners.max(axis=0), second.data_to_world((height - 100.5, 259.5)), atol=1e-6)
    assert not _inside_layer(first, corners)
    np.testing.assert_allclose(viewer.camera.center[-2:], second.data_to_world((height - 200.0, 150.0)),
                               atol=1e-6)  # the view moved there: it was off screen
    other = {"section": "findings", "text": "Enlarged heart.", "finding": "cardiomegaly",
             "location": {"method": "test", "image_index": 0, "peak_pixel_rc": [250.0, 250.0],
                          "box_pixel_rc": [[200.0, 150.0], [350.0, 360.0]]}}  # its radiograph is 512 x 512
    everything = show_all(viewer, study_image_layers(viewer, radiograph_pair), radiograph_pair,
                          [sentence, other, {"text": "No pneumothorax.", "location": None}])
    assert list(everything.features["finding"]) == ["pleural effusion", "cardiomegaly"]
    assert _inside_layer(second, everything.data[0]) and _inside_layer(first, everything.data[1])


def test_a_long_sentence_is_shortened_where_the_status_quotes_it(docked, radiograph_pair):
    from napari_radreport.viewer import add_study
    from napari_radreport.widgets.location_layers import QUOTED_CHARACTERS, show_sentence

    add_study(docked["viewer"], radiograph_pair)
    text = "The heart is enlarged " + "and the lungs are clear " * 30 + "today."
    sentence = {"section": "findings", "text": text, "finding": "cardiomegaly",
                "location": {"method": "test", "image_index": 0, "peak_pixel_rc": [250.0, 250.0],
                             "box_pixel_rc": [[200.0, 150.0], [350.0, 360.0]]}}
    said = show_sentence(docked["session"], sentence)
    quoted = said.split("“")[1].split("”")[0]
    assert quoted.startswith("The heart is enlarged") and quoted.endswith("…")
    assert len(quoted) <= QUOTED_CHARACTERS
