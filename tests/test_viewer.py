"""A real napari viewer (under Xvfb): layers, windows, the Study dock, screenshots."""

from __future__ import annotations

import numpy as np
import pytest

from napari_radreport import load_study
from napari_radreport.io.windows import CT_WINDOWS

pytestmark = pytest.mark.viewer


def _not_blank(image: np.ndarray) -> bool:
    rgb = image[..., :3].astype(float)
    return rgb.std() > 10 and len(np.unique(rgb.reshape(-1, 3)[::97], axis=0)) > 20


def test_chest_series_opens_through_the_plugin_reader(make_napari_viewer, chest_series, tmp_path):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(chest_series), plugin="napari-radreport")
    assert len(layers) == 1
    layer = layers[0]
    assert tuple(layer.scale) == pytest.approx((5.0, 0.841796875, 0.841796875))
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    assert tuple(layer.contrast_limits) == pytest.approx(CT_WINDOWS["soft_tissue"].limits)
    assert layer.metadata["study"].kind == "ct"
    assert viewer.dims.axis_labels[0] == "S->I"
    viewer.dims.set_current_step(0, 20)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert _not_blank(shot)


def test_radiograph_set_opens_side_by_side(make_napari_viewer, shared_data):
    from napari_radreport.viewer import add_study

    viewer = make_napari_viewer(show=True)
    study = load_study(shared_data / "xray")
    layers = add_study(viewer, study)
    assert len(layers) == len(study.images) == 8
    assert [layer.metadata["radreport_image_index"] for layer in layers] == list(range(8))
    xs = [layer.translate[1] for layer in layers]
    assert xs == sorted(xs) and len(set(xs)) == 8
    cr = layers[-1]  # the folder's last file in path order
    assert cr.name.startswith("CXR 8/8 PA wg04")
    # MONOCHROME1 CR: contrast from its (inverted) file window, slider spanning the data
    assert tuple(cr.contrast_limits) == pytest.approx((2767.0, 32767.0))
    assert cr.contrast_limits_range[0] <= study.images[-1].value_range()[0]
    assert _not_blank(viewer.screenshot(canvas_only=True, flash=False))


def test_study_dock_switches_windows_and_reports_errors(make_napari_viewer, qtbot, chest_series):
    from pydicom.data import get_testdata_file

    from napari_radreport.viewer import add_docks

    viewer = make_napari_viewer(show=True)
    dock = add_docks(viewer)["Study"]
    dock.open_study(str(chest_series))
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=30000)
    layer = viewer.layers[0]
    assert dock.current_study.kind == "ct" and not dock.window_box.isHidden()
    assert "64 x 512 x 512" in dock.info.text()
    assert layer.contrast_limits_range[0] <= -1024 and layer.contrast_limits_range[1] >= 2976

    lung = dock.findChild(type(dock.window_buttons.buttons()[0]), "window_lung")
    lung.click()
    assert tuple(layer.contrast_limits) == pytest.approx((-1350.0, 150.0))
    assert layer.metadata["radreport_window"] == "lung" and lung.isChecked()
    dock.apply_window("bone")
    assert tuple(layer.contrast_limits) == pytest.approx((-500.0, 1300.0))

    dock.open_study(get_testdata_file("test-SR.dcm"))
    qtbot.waitUntil(lambda: dock._worker is None, timeout=10000)
    qtbot.waitUntil(lambda: "Could not open" in dock.status.text(), timeout=5000)
    assert "test-SR.dcm" in dock.status.text() and "structured report" in dock.status.text()
    assert len(viewer.layers) == 1  # the open study is untouched


def test_study_dock_offers_the_other_series(make_napari_viewer, qtbot, chest_series, j2k_series, tmp_path):
    from napari_radreport.viewer import add_docks

    for f in list(chest_series.glob("1-0*.dcm")) + list(j2k_series.iterdir()):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    viewer = make_napari_viewer(show=True)
    dock = add_docks(viewer)["Study"]
    dock.open_study(str(tmp_path))
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=30000)
    assert viewer.layers[0].data.shape[0] == 20  # the larger series is the main one
    assert dock.series_combo.count() == 1
    dock.open_series_button.click()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=30000)
    assert viewer.layers[-1].data.shape[0] == 9


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open_sample("napari-radreport", "abdomen_ct")
    assert layers[0].data.shape == (112, 101, 122)
    assert layers[0].metadata["study"].extra["attribution"].startswith("TotalSegmentator")
    layers = viewer.open_sample("napari-radreport", "chest_xray")
    assert layers[0].metadata["study"].kind == "xray_set"
    phantom = viewer.open_sample("napari-radreport", "chest_phantom")[0].metadata["study"]  # made, cached
    assert phantom.kind == "ct" and phantom.extra["description"] == "napari-radreport synthetic phantom"
