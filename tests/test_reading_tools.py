"""Reading tools on the canvas (issue 22, item 6): orientation letters, window/slice overlay, planes with a
linked cursor, interpolation, ruler and ROI in patient mm/HU, report lines; pure tests with known affines,
then a real napari viewer (under Xvfb) on the real chest CT."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from napari_events import press_and_release

from napari_radreport.io.measurements import (
    Distance,
    MeasurementError,
    RoiStats,
    distance,
    distance_text,
    location_text,
    roi_mask,
    roi_statistics,
    roi_text,
    series_label,
)
from napari_radreport.io.orientation_letters import (
    EdgeLetters,
    direction_letters,
    edge_letters,
    opposite,
    plane_axes,
    plane_of_axis,
    view_letters,
)
from napari_radreport.io.study import ImageData, Study

CANONICAL = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # I, P, L: the display target
# The same axes, each flipped: superior, anterior, patient right (neurological display).
FLIPPED = -CANONICAL
# A sagittal acquisition kept in its own axis order: rows run S->I... columns A->P, slices R->L.
SAGITTAL_ORDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # L, I, P


# -- orientation letters (pure) -----------------------------------------------------------------------------
def test_direction_letters_name_the_nearest_patient_axes_in_order_of_significance():
    assert [direction_letters(v) for v in np.eye(3)] == ["L", "P", "S"]
    assert [direction_letters(-v) for v in np.eye(3)] == ["R", "A", "I"]
    assert direction_letters((-0.8, -0.6, 0.0)) == "RA"
    assert direction_letters((0.3, 0.0, -0.95)) == "IL"
    assert direction_letters((1.0, 0.001, 0.0)) == "L"  # within the obliquity tolerance: one letter
    assert direction_letters((0.0, 0.0, 0.0)) == ""
    assert opposite("RA") == "LP" and opposite("IL") == "SR"


def test_canonical_volume_reads_radiologically_in_all_three_planes():
    spacing = (5.0, 0.7, 0.7)
    # napari's 2D view: displayed = (axis running down, axis running right)
    assert view_letters(CANONICAL, spacing, (1, 2)) == EdgeLetters(left="R", right="L", top="A", bottom="P")
    assert view_letters(CANONICAL, spacing, (0, 2)) == EdgeLetters(left="R", right="L", top="S", bottom="I")
    assert view_letters(CANONICAL, spacing, (0, 1)) == EdgeLetters(left="A", right="P", top="S", bottom="I")
    assert plane_axes(CANONICAL) == {"axial": 0, "coronal": 1, "sagittal": 2}
    assert [plane_of_axis(CANONICAL, a) for a in range(3)] == ["axial", "coronal", "sagittal"]


def test_flipped_axes_flip_the_letters_in_each_plane():
    spacing = (5.0, 0.7, 0.7)
    axial = view_letters(FLIPPED, spacing, (1, 2))
    coronal = view_letters(FLIPPED, spacing, (0, 2))
    sagittal = view_letters(FLIPPED, spacing, (0, 1))
    assert axial == EdgeLetters(left="L", right="R", top="P", bottom="A")
    assert coronal == EdgeLetters(left="L", right="R", top="I", bottom="S")
    assert sagittal == EdgeLetters(left="P", right="A", top="I", bottom="S")
    # a camera flipping the vertical axis puts S back on top
    assert view_letters(FLIPPED, spacing, (0, 1), vertical_up=True).top == "S"
    assert view_letters(FLIPPED, spacing, (0, 1), horizontal_left=True).left == "A"


def test_a_volume_in_sagittal_acquisition_order_shows_each_plane_by_its_geometry():
    spacing = (1.0, 0.5, 0.5)
    assert plane_axes(SAGITTAL_ORDER) == {"axial": 1, "coronal": 2, "sagittal": 0}
    # slicing axis 0 (L) shows rows I... down and columns P right: a sagittal view
    assert view_letters(SAGITTAL_ORDER, spacing, (1, 2)) == EdgeLetters(left="A", right="P", top="S",
                                                                         bottom="I")
    assert plane_of_axis(SAGITTAL_ORDER, 0) == "sagittal"
    # slicing axis 2 (P): rows I down, slices L right: a coronal view
    assert view_letters(SAGITTAL_ORDER, spacing, (1, 0)) == EdgeLetters(left="R", right="L", top="S",
                                                                         bottom="I")


def test_oblique_axes_get_two_letters_and_anisotropic_steps_weigh_by_spacing():
    angle = np.radians(30)
    oblique = CANONICAL.copy()
    oblique[2] = (np.cos(angle), np.sin(angle), 0.0)  # columns run to the left, 30 degrees towards posterior
    oblique[1] = (-np.sin(angle), np.cos(angle), 0.0)
    letters = view_letters(oblique, (5.0, 0.7, 0.7), (1, 2))
    assert (letters.left, letters.right, letters.top, letters.bottom) == ("RA", "LP", "AL", "PR")
    # a screen diagonal over anisotropic voxels: one step of 5 mm down (I) and one of 0.7 mm right (L)
    diagonal = edge_letters(CANONICAL, (5.0, 0.7, 0.7), right=(1, 0, 1), down=(0, 1, 0))
    assert diagonal.right == "IL"


# -- measurements (pure) ------------------------------------------------------------------------------------
def _volume(spacing=(5.0, 0.7, 0.7), direction=CANONICAL, shape=(8, 40, 50), modality="CT") -> ImageData:
    array = np.arange(np.prod(shape), dtype=np.int16).reshape(shape) % 997 - 300
    return ImageData(array=array, spacing=spacing, modality=modality, origin=(10.0, -20.0, 30.0),
                     direction=np.asarray(direction, dtype=float), label="test volume")


@pytest.mark.parametrize("direction", [CANONICAL, FLIPPED, SAGITTAL_ORDER])
def test_distance_is_in_mm_for_anisotropic_voxels(direction):
    image = _volume(direction=direction)
    measured = distance(image, (2, 3, 4), (5, 7, 4))
    assert measured.mm == pytest.approx(np.hypot(3 * 5.0, 4 * 0.7))
    assert (measured.slice_axis, measured.slice_index) == (2, 4)
    # a ruler in an axial slice along a row shares two coordinates: the view says which one it slices
    across = distance(image, (3, 10, 5), (3, 10, 25), slice_axis=0)
    assert across.mm == pytest.approx(20 * 0.7)
    assert (across.slice_axis, across.slice_index) == (0, 3)
    # patient positions agree with the study's own geometry
    ends = [image.index_to_patient(p) for p in ((2, 3, 4), (5, 7, 4))]
    assert measured.mm == pytest.approx(float(np.linalg.norm(ends[1] - ends[0])))


def test_distance_on_a_radiograph_uses_its_pixel_spacing_and_refuses_without_one():
    xray = ImageData(array=np.zeros((100, 80)), spacing=(0.2, 0.1), modality="DX")
    measured = distance(xray, (10, 10), (40, 50))
    assert measured.mm == pytest.approx(np.hypot(30 * 0.2, 40 * 0.1))
    assert measured.slice_index is None
    unknown = ImageData(array=np.zeros((100, 80)), spacing=(None, None), modality="DX", label="photo.png")
    with pytest.raises(MeasurementError, match="spacing unknown"):
        distance(unknown, (0, 0), (1, 1))


def test_rectangle_roi_statistics_equal_numpy_on_the_same_voxels():
    image = _volume()
    corners = [(3, 2, 3), (3, 2, 9), (3, 6, 9), (3, 6, 3)]  # rows 2..6, columns 3..9 of slice 3
    stats = roi_statistics(image, corners, "rectangle")
    voxels = image.array[3, 2:7, 3:10].astype(float)
    assert stats.n == voxels.size == 35
    assert (stats.mean, stats.sd, stats.min, stats.max) == pytest.approx(
        (voxels.mean(), voxels.std(), voxels.min(), voxels.max()))
    assert stats.area_mm2 == pytest.approx((4 * 0.7) * (6 * 0.7))  # the shape's own area
    assert (stats.unit, stats.slice_axis, stats.slice_index) == ("HU", 0, 3)


def test_ellipse_roi_takes_the_voxels_whose_centres_lie_inside():
    image = _volume()
    corners = np.array([(5, 10.0, 20.0), (5, 10.0, 32.0), (5, 18.0, 32.0), (5, 18.0, 20.0)])
    stats = roi_statistics(image, corners, "ellipse")
    rows, cols = np.mgrid[0:40, 0:50]
    inside = ((rows - 14) / 4.0) ** 2 + ((cols - 26) / 6.0) ** 2 <= 1
    voxels = image.array[5][inside].astype(float)
    assert stats.n == inside.sum()
    assert (stats.mean, stats.sd, stats.min, stats.max) == pytest.approx(
        (voxels.mean(), voxels.std(), voxels.min(), voxels.max()))
    assert stats.area_mm2 == pytest.approx(np.pi * (4 * 0.7) * (6 * 0.7))
    # an ROI in a sagittal slice (constant column): area from the 5 mm and 0.7 mm spacings
    sagittal = roi_statistics(image, [(1, 4, 7), (1, 12, 7), (3, 12, 7), (3, 4, 7)], "rectangle")
    assert sagittal.slice_axis == 2 and sagittal.area_mm2 == pytest.approx((2 * 5.0) * (8 * 0.7))
    assert sagittal.n == 3 * 9
    box, mask = roi_mask(np.array([(0.0, 0.0), (0.0, 2.0), (2.0, 2.0), (2.0, 0.0)]), (5, 5), "rectangle")
    assert box == (slice(0, 3), slice(0, 3)) and mask.all()


def test_roi_refuses_shapes_across_slices_or_outside_the_image():
    image = _volume()
    with pytest.raises(MeasurementError, match="one slice"):
        roi_statistics(image, [(1, 2, 3), (2, 2, 9), (3, 6, 9), (1, 6, 3)], "rectangle")
    with pytest.raises(MeasurementError, match="outside"):
        roi_statistics(image, [(3, 100, 100), (3, 100, 120), (3, 110, 120), (3, 110, 100)], "ellipse")
    mr = roi_statistics(_volume(modality="MR"), [(3, 2, 3), (3, 2, 9), (3, 6, 9), (3, 6, 3)], "rectangle")
    assert mr.unit == ""  # HU only for CT


def test_report_lines_read_as_a_radiologist_cites_them():
    assert location_text("series 3", 18) == "series 3, image 18"
    assert location_text("series 3", 120, "coronal") == "series 3, coronal image 120"
    assert location_text("CXR 1/1 PA", None) == "CXR 1/1 PA"
    assert distance_text(Distance(mm=12.44), "series 3, image 18") == "12.4 mm (series 3, image 18)"
    stats = RoiStats(area_mm2=52.08, mean=34.21, sd=12.04, min=-5.0, max=80.0, n=70, unit="HU")
    assert roi_text(stats, "series 3, image 18") == \
        "ROI 52.1 mm²: mean 34.2 HU, SD 12.0, min -5, max 80 (series 3, image 18)"


def test_series_label_is_the_dicom_series_number_else_the_fallback(chest_study):
    assert series_label(chest_study) == "series 3"
    plain = Study(kind="ct", images=[_volume()])
    assert series_label(plain, fallback="CT volume") == "CT volume"


# -- a real viewer on the real chest CT ----------------------------------------------------------------------
@pytest.fixture()
def reading(make_napari_viewer, chest_study):
    """A viewer showing the chest CT (64 x 512 x 512, spacing 5 x 0.84 x 0.84 mm), with the tools docked."""
    from napari_radreport.viewer import add_study
    from napari_radreport.widgets.reading_tools import ReadingTools
    from napari_radreport.widgets.session import session_for

    viewer = make_napari_viewer(show=True)
    session = session_for(viewer)
    (layer,) = add_study(viewer, chest_study)
    tools = ReadingTools(viewer, session)
    viewer.window.add_dock_widget(tools, name="Reading tools", area="right")
    return SimpleNamespace(viewer=viewer, session=session, layer=layer, tools=tools, study=chest_study)


def _z_of_slice(study, index: int) -> float:
    return float(study.image.index_to_patient((index, 255.5, 255.5))[2])


@pytest.mark.viewer
def test_overlay_shows_letters_window_and_slice_and_follows_changes(reading):
    viewer, tools, layer, study = reading.viewer, reading.tools, reading.layer, reading.study
    viewer.dims.set_current_step(0, 17)
    layer.contrast_limits = (-1350, 150)
    text = tools.overlay_text()
    assert (text["left"], text["right"], text["top"], text["bottom"]) == ("R", "L", "A", "P")
    assert text["info"] == f"W 1500 L -600\nslice 18/64 · z {_z_of_slice(study, 17):.1f} mm"
    assert text["info"].endswith("z -209.0 mm")  # origin z -124 mm, 5 mm slices running inferior
    overlays = viewer.canvas.overlays
    assert overlays["radreport_left"].position == "middle_left" and overlays["radreport_left"].visible
    viewer.dims.set_current_step(0, 40)  # a slice change alone updates it
    assert tools.overlay_text()["info"] == f"W 1500 L -600\nslice 41/64 · z {_z_of_slice(study, 40):.1f} mm"
    layer.contrast_limits = (-110, 240)  # so does a window change alone
    assert tools.overlay_text()["info"] == f"W 350 L 65\nslice 41/64 · z {_z_of_slice(study, 40):.1f} mm"
    viewer.scene.camera.orientation2d = ("up", "right")  # a flipped camera flips the letters
    assert (tools.overlay_text()["top"], tools.overlay_text()["bottom"]) == ("P", "A")
    viewer.scene.camera.orientation2d = ("down", "right")
    tools.overlay_button.click()  # off
    assert tools.overlay_text() == {} and not overlays["radreport_info"].visible
    tools.overlay_button.click()
    assert tools.overlay_text()["left"] == "R"


@pytest.mark.viewer
def test_plane_buttons_switch_planes_with_letters_and_keep_the_clicked_point(reading):
    viewer, tools, layer = reading.viewer, reading.tools, reading.layer
    voxel = np.array([20.0, 300.0, 150.0])
    tools.set_cursor(layer.data_to_world(voxel))
    assert viewer.dims.current_step[0] == 20
    tools.plane_buttons["coronal"].click()
    assert tools.current_plane() == "coronal" and viewer.dims.displayed == (0, 2)
    text = tools.overlay_text()
    assert (text["left"], text["right"], text["top"], text["bottom"]) == ("R", "L", "S", "I")
    assert "slice 301/512 · y " in text["info"]
    tools.plane_buttons["sagittal"].click()
    text = tools.overlay_text()
    assert (text["left"], text["right"], text["top"], text["bottom"]) == ("A", "P", "S", "I")
    assert "slice 151/512 · x " in text["info"]
    assert tools.plane_buttons["sagittal"].isChecked() and not tools.plane_buttons["coronal"].isChecked()
    tools.plane_buttons["axial"].click()
    assert tools.current_plane() == "axial"
    assert tools.overlay_text()["info"].split("\n")[1].split(" · ")[0] == "slice 21/64"
    # napari's own dims roll updates the buttons too
    viewer.dims.order = (1, 0, 2)
    assert tools.plane_buttons["coronal"].isChecked()


@pytest.mark.viewer
def test_a_click_without_dragging_sets_the_linked_cursor(reading):
    viewer, tools, layer = reading.viewer, reading.tools, reading.layer
    tools.plane_buttons["coronal"].click()
    clicked = layer.data_to_world(np.array([30.0, 256.0, 100.0]))

    def click(moves: int) -> None:
        press_and_release(tools._cursor_click, viewer, clicked, moves)

    assert tools._cursor_click in viewer.mouse_drag_callbacks
    click(moves=3)  # a drag pans: no cursor
    assert tools.cursor is None
    click(moves=0)
    assert tools.cursor is not None
    tools.plane_buttons["axial"].click()
    assert viewer.dims.current_step[0] == 30
    tools.plane_buttons["sagittal"].click()
    assert tools.overlay_text()["info"].split("\n")[1].split(" · ")[0] == "slice 101/512"


@pytest.mark.viewer
def test_linear_interpolation_toggles_on_the_study_layers(reading):
    tools, layer = reading.tools, reading.layer
    assert str(layer.interpolation2d) == "nearest" and not tools.linear_button.isChecked()
    tools.linear_button.click()
    assert str(layer.interpolation2d) == "linear"
    tools.linear_button.click()
    assert str(layer.interpolation2d) == "nearest"


@pytest.mark.viewer
def test_ruler_measures_mm_between_voxel_centres_and_inserts_its_line(reading, qtbot):
    viewer, tools, layer = reading.viewer, reading.tools, reading.layer
    viewer.dims.set_current_step(0, 17)
    tools.ruler_button.click()
    ruler = tools.measurement_layer("ruler")
    assert viewer.layers.selection.active is ruler and ruler.mode == "add_line"
    # the ruler's data coordinates are the CT's voxel indices (same scale and translate)
    a, b = np.array([17.0, 100.0, 100.0]), np.array([17.0, 160.0, 180.0])
    assert np.allclose(ruler.world_to_data(layer.data_to_world(b)), b)
    ruler.add_lines(np.array([a, b]))
    expected = np.hypot(60, 80) * 0.841796875
    assert tools.last_text == f"{expected:.1f} mm (series 3, image 18)"
    assert ruler.features["measure"].iloc[-1] == f"{expected:.1f} mm"
    with qtbot.waitSignal(tools.measurement_text, timeout=2000) as signal:
        tools.insert_button.click()
    assert signal.args == [f"{expected:.1f} mm (series 3, image 18)"]
    # in the sagittal plane a ruler spans 5 mm slices and 0.84 mm rows
    tools.plane_buttons["sagittal"].click()
    ruler.add_lines(np.array([[10.0, 100.0, 250.0], [20.0, 180.0, 250.0]]))
    tall = np.hypot(10 * 5.0, 80 * 0.841796875)
    assert tools.last_text == f"{tall:.1f} mm (series 3, sagittal image 251)"
    ruler.selected_data = {0}  # the selected measurement is the one inserted
    with qtbot.waitSignal(tools.measurement_text, timeout=2000) as signal:
        tools.insert_button.click()
    assert signal.args == [f"{expected:.1f} mm (series 3, image 18)"]
    tools.ruler_button.click()  # off: back to the CT layer, panning
    assert ruler.mode == "pan_zoom" and viewer.layers.selection.active is layer


@pytest.mark.viewer
@pytest.mark.parametrize("kind", ["ellipse", "rectangle"])
def test_roi_statistics_in_hu_equal_numpy_on_the_real_ct(reading, kind):
    viewer, tools, study = reading.viewer, reading.tools, reading.study
    viewer.dims.set_current_step(0, 30)
    tools.roi_button.click()
    roi = tools.measurement_layer("roi")
    assert roi.mode == "add_ellipse"
    corners = np.array([[30, 240, 180], [30, 240, 260], [30, 300, 260], [30, 300, 180]], dtype=float)
    (roi.add_ellipses if kind == "ellipse" else roi.add_rectangles)(corners)
    rows, cols = np.mgrid[0:512, 0:512]
    if kind == "ellipse":
        inside = ((rows - 270) / 30) ** 2 + ((cols - 220) / 40) ** 2 <= 1
        area = np.pi * (30 * 0.841796875) * (40 * 0.841796875)
    else:
        inside = (rows >= 240) & (rows <= 300) & (cols >= 180) & (cols <= 260)
        area = (60 * 0.841796875) * (80 * 0.841796875)
    hu = study.array[30][inside].astype(float)
    expected = (f"ROI {area:.1f} mm²: mean {hu.mean():.1f} HU, SD {hu.std():.1f}, min {hu.min():.0f}, "
                f"max {hu.max():.0f} (series 3, image 31)")
    assert tools.last_text == expected
    line = r"ROI [\d.]+ mm²: mean -?[\d.]+ HU, SD [\d.]+, min -?\d+, max -?\d+ \(series 3, image 31\)"
    assert re.fullmatch(line, tools.last_text)
    stats = roi_statistics(study.image, corners, kind)
    assert (stats.mean, stats.sd, stats.min, stats.max, stats.n) == pytest.approx(
        (hu.mean(), hu.std(), hu.min(), hu.max(), hu.size))


@pytest.mark.viewer
def test_tools_follow_the_study_radiographs_without_spacing_and_fit_two_rows(reading, shared_data):
    from napari_radreport import load_study
    from napari_radreport.viewer import add_study

    viewer, tools, session = reading.viewer, reading.tools, reading.session
    assert tools.isEnabled() and tools.plane_buttons["axial"].isVisibleTo(tools)
    tools.resize(360, tools.sizeHint().height())
    assert tools.minimumSizeHint().width() <= 360 and tools.sizeHint().height() <= 70  # two rows of buttons
    png = load_study(shared_data / "xray" / "nih_00000001_000_cardiomegaly.png")
    add_study(viewer, png)
    assert session.study is png
    assert not tools.plane_buttons["axial"].isVisibleTo(tools)  # no planes on a radiograph
    assert not tools.ruler_button.isEnabled() and tools.status.text() == "spacing unknown"
    assert set(tools.overlay_text()) == {"info"}  # window/level only: no letters without a direction
    # no radiograph in the shared data has its pixel spacing: one with 0.2 x 0.15 mm pixels
    dx = Study(kind="xray_set", images=[ImageData(array=np.zeros((400, 500), np.uint16), spacing=(0.2, 0.15),
                                                  modality="DX", label="synthetic", view_position="PA")])
    (dx_layer,) = add_study(viewer, dx)
    assert session.study is dx and tools.ruler_button.isEnabled() and tools.status.text() == ""
    tools.ruler_button.click()
    ruler = tools.measurement_layer("ruler")
    ruler.add_lines(np.array([[100.0, 100.0], [160.0, 180.0]]))
    assert tools.last_text == f"{np.hypot(60 * 0.2, 80 * 0.15):.1f} mm ({dx_layer.name})"
    session.set_study(reading.study)  # back to the CT: the radiograph's ruler hides with it
    assert not ruler.visible and tools.plane_buttons["axial"].isVisibleTo(tools)
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    assert session.study is None and not tools.isEnabled()


@pytest.mark.viewer
def test_closing_the_tools_removes_their_canvas_texts_and_callbacks(reading):
    viewer, tools = reading.viewer, reading.tools
    assert "radreport_info" in viewer.canvas.overlays
    tools.teardown()
    assert "radreport_info" not in viewer.canvas.overlays
    assert tools._cursor_click not in viewer.mouse_drag_callbacks
    viewer.dims.set_current_step(0, 5)  # no callback left to fail


@pytest.mark.viewer
def test_measurements_go_with_their_image_and_a_new_widget_keeps_measuring(reading, qtbot):
    from napari_radreport.viewer import add_study
    from napari_radreport.widgets.reading_tools import ReadingTools

    viewer, tools, layer, session = reading.viewer, reading.tools, reading.layer, reading.session
    viewer.dims.set_current_step(0, 17)
    tools.ruler_button.click()
    ruler = tools.measurement_layer("ruler")
    tools.ruler_button.click()
    tools.teardown()  # the dock closed; a new one finds the ruler layer and measures on it
    again = ReadingTools(viewer, session)
    viewer.window.add_dock_widget(again, name="Reading tools again", area="right")
    ruler.add_lines(np.array([[17.0, 100.0, 100.0], [17.0, 100.0, 200.0]]))
    assert again.last_text == f"{100 * 0.841796875:.1f} mm (series 3, image 18)"
    # a second volume far above this one widens the slider: past the chest CT the overlay says so
    far = Study(kind="ct", images=[ImageData(array=np.zeros((4, 8, 8), np.int16), spacing=(5.0, 1.0, 1.0),
                                             modality="CT", origin=(0.0, 0.0, 500.0), direction=CANONICAL,
                                             label="far")])
    (far_layer,) = add_study(viewer, far)
    viewer.dims.set_point(0, far_layer.data_to_world((1, 0, 0))[0])
    session.set_study(reading.study)
    assert again.overlay_text()["info"].split("\n")[1].split(" · ")[0] == "outside the 64 slices"
    viewer.layers.remove(layer)  # closing the CT takes its measurements (and lets go of its data)
    qtbot.waitUntil(lambda: ruler not in viewer.layers, timeout=2000)
    assert session.study is far
