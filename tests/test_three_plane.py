"""Three planes at once (issue 22, item 6): the Study dock's "3 planes" button shows the coronal and sagittal
planes of the active study in two extra canvases under the axial main canvas, on the array the main canvas
shows, linked both ways through one crosshair; real napari windows (under Xvfb) on the real chest DICOM series
and abdomen NIfTI."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
from napari_events import press_and_release

pytestmark = pytest.mark.viewer


def _settle() -> None:
    from qtpy.QtCore import QCoreApplication, QEvent
    from qtpy.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)


@pytest.fixture()
def planes(docked, chest_study):
    """The reading layout with the chest CT (64 x 512 x 512, 5 x 0.84 x 0.84 mm) open."""
    from napari_radreport.viewer import add_study

    viewer = docked["viewer"]
    (layer,) = add_study(viewer, chest_study)
    study_dock = docked["Study"]
    return SimpleNamespace(viewer=viewer, session=docked["session"], layer=layer, study=chest_study,
                           dock=study_dock, tools=study_dock.tools, docks=docked)


def _click(view, world_position, moves: int = 0) -> None:
    """A press and release in a side canvas at ``world_position`` (its own world coordinates)."""
    press_and_release(view._click, view.model, world_position, moves)


def _slice(view) -> int:
    return view.shown_slice()[0]


def test_the_button_shows_coronal_and_sagittal_under_the_axial_canvas_on_the_same_array(planes):
    viewer, tools, layer = planes.viewer, planes.tools, planes.layer
    button = tools.three_button
    assert button.objectName() == "radreport-three-planes" and button.isEnabled()
    tools.plane_buttons["sagittal"].click()  # from the sagittal plane: 3 planes puts the main canvas on axial
    button.click()
    three = tools.three_planes
    assert three.shown and button.isChecked()
    assert tools.current_plane() == "axial" and viewer.dims.displayed == (1, 2)
    assert set(three.views) == {"coronal", "sagittal"}
    coronal, sagittal = three.views["coronal"], three.views["sagittal"]
    assert coronal.model.dims.displayed == (0, 2) and sagittal.model.dims.displayed == (0, 1)
    for view in (coronal, sagittal):
        assert view.layer.data is layer.data is planes.study.image.array  # shared, never copied
        assert np.allclose(view.layer.scale, layer.scale)
        assert np.allclose(view.layer.translate, layer.translate)
        assert view.isVisible() and view.qt_viewer.canvas.native.isVisible()
    assert three.panel.parent() is viewer.window._qt_viewer  # in napari's central splitter, under the canvas
    coronal_text, sagittal_text = coronal.texts(), sagittal.texts()
    assert [coronal_text[k] for k in ("left", "right", "top", "bottom")] == ["R", "L", "S", "I"]
    assert [sagittal_text[k] for k in ("left", "right", "top", "bottom")] == ["A", "P", "S", "I"]
    assert coronal_text["plane"].startswith("Coronal\n") and coronal_text["plane"].endswith("/512")
    assert sagittal_text["plane"].startswith("Sagittal\n")
    # the main canvas keeps its letters, and gets the crosshair
    assert tools.overlay_text()["left"] == "R"
    assert three.main_crosshair in viewer.layers and viewer.layers.selection.active is layer
    # the main canvas shows another plane: the panel shows the two others
    tools.plane_buttons["sagittal"].click()
    assert {view.plane for view in three.views.values()} == {"axial", "coronal"}
    assert three.views["axial"].model.dims.displayed == (1, 2)
    tools.plane_buttons["axial"].click()
    assert set(three.views) == {"coronal", "sagittal"} and coronal.model.dims.displayed == (0, 2)


def _segments_through(layer, data_point, displayed) -> bool:
    """The crosshair's lines run along the ``displayed`` data axes through ``data_point`` (its other
    coordinates), with a gap around it."""
    lines = [np.asarray(line) for line in layer.data]
    assert len(lines) == 4
    for k, along in enumerate(displayed):
        for line in lines[2 * k:2 * k + 2]:
            fixed = [a for a in range(layer.ndim) if a != along]
            if not np.allclose(line[:, fixed], np.asarray(data_point)[fixed], atol=1e-6):
                return False
        before, after = lines[2 * k][:, along], lines[2 * k + 1][:, along]
        if not before.max() < data_point[along] < after.min():  # the gap around the point
            return False
    return True


def test_a_click_in_a_side_canvas_moves_the_main_slice_and_the_other_plane(planes):
    viewer, tools, layer = planes.viewer, planes.tools, planes.layer
    tools.three_button.click()
    coronal, sagittal = tools.three_planes.views["coronal"], tools.three_planes.views["sagittal"]
    tools.set_cursor(layer.data_to_world(np.array([20.0, 300.0, 150.0])))
    target = np.array([30.0, 300.0, 100.0])  # in the coronal plane on screen: row 300
    _click(coronal, layer.data_to_world(target), moves=3)  # a drag pans: nothing moves
    assert viewer.dims.current_step[0] == 20 and _slice(sagittal) == 150
    _click(coronal, layer.data_to_world(target))
    assert viewer.dims.current_step[0] == 30  # the main canvas's axial slice
    assert _slice(sagittal) == 100 and _slice(coronal) == 300  # the other plane; its own slice unchanged
    assert np.allclose(tools.cursor, layer.data_to_world(target))  # the reading tools' linked cursor
    assert _segments_through(tools.three_planes.main_crosshair, target, (1, 2))
    assert _segments_through(sagittal.crosshair, target, (0, 1))
    assert tools.overlay_text()["info"].split("\n")[1].startswith("slice 31/64")
    assert sagittal.texts()["plane"] == "Sagittal\n101/512"
    # a click in the sagittal canvas moves the coronal plane and the axial slice
    _click(sagittal, layer.data_to_world(np.array([45.0, 200.0, 100.0])))
    assert viewer.dims.current_step[0] == 45 and _slice(coronal) == 200 and _slice(sagittal) == 100


def test_the_main_cursor_and_slider_move_the_side_planes_and_their_crosshairs(planes):
    viewer, tools, layer = planes.viewer, planes.tools, planes.layer
    tools.three_button.click()
    coronal, sagittal = tools.three_planes.views["coronal"], tools.three_planes.views["sagittal"]
    point = np.array([20.0, 300.0, 150.0])
    tools.set_cursor(layer.data_to_world(point))  # a click on the main canvas sets it
    assert _slice(coronal) == 300 and _slice(sagittal) == 150
    assert _segments_through(coronal.crosshair, point, (0, 2))  # across at slice 20, down at column 150
    assert _segments_through(sagittal.crosshair, point, (0, 1))
    assert _segments_through(tools.three_planes.main_crosshair, point, (1, 2))
    viewer.dims.set_current_step(0, 40)  # the main slider: both side crosshairs move down, their slices stay
    point[0] = 40
    assert _slice(coronal) == 300 and _slice(sagittal) == 150
    assert _segments_through(coronal.crosshair, point, (0, 2))
    assert _segments_through(sagittal.crosshair, point, (0, 1))
    assert coronal.texts()["plane"] == "Coronal\n301/512"


def test_scrolling_a_side_plane_moves_that_plane_only(planes):
    viewer, tools, layer = planes.viewer, planes.tools, planes.layer
    tools.three_button.click()
    coronal, sagittal = tools.three_planes.views["coronal"], tools.three_planes.views["sagittal"]
    tools.set_cursor(layer.data_to_world(np.array([20.0, 300.0, 150.0])))
    coronal.model.dims.set_current_step(1, 200)  # the coronal canvas's own slider (or Ctrl+wheel)
    assert _slice(coronal) == 200
    assert viewer.dims.current_step[0] == 20 and _slice(sagittal) == 150  # the other planes stay
    assert np.isclose(viewer.dims.point[1], layer.data_to_world(np.array([0.0, 200.0, 0.0]))[1])
    assert _segments_through(sagittal.crosshair, np.array([20.0, 200.0, 150.0]), (0, 1))
    sagittal.model.dims.set_current_step(2, 90)
    assert _slice(sagittal) == 90 and _slice(coronal) == 200 and viewer.dims.current_step[0] == 20
    tools.plane_buttons["coronal"].click()  # the main canvas's planes keep the scrolled positions
    assert tools.overlay_text()["info"].split("\n")[1].startswith("slice 201/512")


def test_the_window_colormap_and_interpolation_follow_the_main_layer(planes):
    tools, layer = planes.tools, planes.layer
    tools.three_button.click()
    views = list(tools.three_planes.views.values())
    planes.dock.apply_window("bone")  # the Study dock's CT window
    assert tuple(layer.contrast_limits) == (-500.0, 1300.0)
    for view in views:
        assert tuple(view.layer.contrast_limits) == tuple(layer.contrast_limits)
    layer.contrast_limits = (-1350, 150)
    layer.colormap = "viridis"
    tools.linear_button.click()
    for view in views:
        assert tuple(view.layer.contrast_limits) == (-1350.0, 150.0)
        assert view.layer.colormap.name == "viridis"
        assert str(view.layer.interpolation2d) == "linear"


def test_the_planes_follow_the_active_study_and_a_radiograph_switches_them_off(planes, abdomen_nifti,
                                                                             shared_data):
    from napari_radreport import load_study
    from napari_radreport.viewer import add_study

    viewer, tools, session = planes.viewer, planes.tools, planes.session
    tools.three_button.click()
    three = tools.three_planes
    abdomen = load_study(abdomen_nifti)
    (abdomen_layer,) = add_study(viewer, abdomen)  # a newly opened study becomes the active one
    assert session.study is abdomen and three.shown
    for view in three.views.values():
        assert view.layer.data is abdomen_layer.data is abdomen.image.array
        assert [layer.data is planes.layer.data for layer in view.model.layers].count(True) == 0
    crosshairs = [layer for layer in viewer.layers if "radreport_crosshair" in layer.metadata]
    assert crosshairs == [three.main_crosshair]
    assert np.allclose(three.main_crosshair.scale, abdomen_layer.scale)
    session.set_study(planes.study)  # the picker chooses the chest CT again
    assert all(view.layer.data is planes.layer.data for view in three.views.values())
    png = load_study(shared_data / "xray" / "nih_00000001_000_cardiomegaly.png")
    add_study(viewer, png)
    assert session.study is png
    assert not three.shown and not tools.three_button.isChecked() and not tools.three_button.isEnabled()
    assert "radiograph" in tools.three_button.toolTip()
    assert not any("radreport_crosshair" in layer.metadata for layer in viewer.layers)
    session.set_study(planes.study)
    assert tools.three_button.isEnabled() and not tools.three_button.isChecked()


def test_switching_off_closes_the_canvases_and_leaves_no_layer_behind(planes):
    from napari._qt.qt_viewer import QtViewer

    viewer, tools = planes.viewer, planes.tools
    splitter = viewer.window._qt_viewer
    before, sizes = list(viewer.layers), splitter.sizes()
    tools.three_button.click()
    three = tools.three_planes
    models = [weakref.ref(view.model) for view in three.views.values()]
    canvases = [weakref.ref(view.qt_viewer) for view in three.views.values()]
    assert splitter.count() == 2 and len(viewer.layers) == len(before) + 1
    tools.three_button.click()
    assert not three.shown and three.views == {} and three.main_crosshair is None
    assert list(viewer.layers) == before and splitter.count() == 1 and splitter.sizes() == sizes
    _settle()
    gc.collect()
    assert all(ref() is None for ref in models + canvases)  # the viewer models, canvases, layers released
    assert list(QtViewer._instances) == [splitter]
    tools.three_button.click()  # and on again
    assert three.shown and splitter.count() == 2


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_three_planes_fit_the_reading_layout_and_never_grow_the_window(planes, size):
    from qtpy.QtWidgets import QApplication

    from napari_radreport.widgets.layout import reset

    viewer, tools = planes.viewer, planes.tools
    main = viewer.window._qt_window
    main.resize(*size)
    reset(viewer)
    _settle()
    viewer.reset_view()  # the axial plane framed in the whole column, as a reader leaves it
    tools.three_button.click()
    _settle()
    assert (main.width(), main.height()) == size
    assert main.minimumSizeHint().height() <= 768 - 40  # a 1366 x 768 screen less a title bar
    screen = QApplication.primaryScreen().availableGeometry()
    assert main.frameGeometry().height() <= max(screen.height(), size[1] + 40)
    assert planes.docks["Report"].editor.editor.height() >= size[1] / 2
    main_canvas = viewer.window._qt_viewer.canvas.native
    assert _whole_plane_on_screen(viewer, planes.layer)  # the main canvas reframed for its new height
    for view in tools.three_planes.views.values():
        canvas = view.qt_viewer.canvas.native
        assert canvas.isVisible() and canvas.width() >= 150 and canvas.height() >= 120
        assert canvas.height() < main_canvas.height()
        corner = canvas.mapTo(main, canvas.rect().bottomRight())
        assert corner.y() <= main.height() and corner.x() <= main.width()  # inside the window
        assert _whole_plane_on_screen(view.model, view.layer)


def _whole_plane_on_screen(model, layer) -> bool:
    """The layer's plane fits the canvas at the camera's zoom."""
    extent = np.asarray(layer.extent.world, dtype=float)[:, list(model.dims.displayed)]
    shown = (extent[1] - extent[0]) * model.scene.camera.zoom
    return bool(np.all(shown <= np.asarray(model.canvas.size, dtype=float) + 1))


def test_three_planes_and_side_by_side_take_turns(planes, abdomen_nifti):
    from napari_radreport import load_study
    from napari_radreport.viewer import add_study

    viewer, tools, session, row = planes.viewer, planes.tools, planes.session, planes.dock.prior
    add_study(viewer, load_study(abdomen_nifti))
    prior = session.study
    session.set_study(planes.study)
    session.set_prior(planes.study, prior)
    row.side_button.click()
    assert row.side.pair is not None and viewer.canvas.grid.enabled
    tools.three_button.click()  # its crosshair would take a grid cell: side by side ends first
    assert tools.three_planes.shown and row.side.pair is None and not viewer.canvas.grid.enabled
    crosshair = tools.three_planes.main_crosshair
    row.side_button.click()  # side by side hides the crosshair while it lasts, the extra canvases stay
    assert row.side.pair is not None and not crosshair.visible and tools.three_planes.shown
    viewer.dims.set_current_step(0, 30)  # moving the point keeps it hidden, and side by side on
    assert row.side.pair is not None and not crosshair.visible
    row.side_button.click()
    assert crosshair.visible and tools.three_planes.shown
