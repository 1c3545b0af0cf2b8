"""The prior study (issue 22, item 7): may it be compared, how its slices link (frame of reference, patient
coordinates, a manual offset), its Comparison line; pure tests on synthetic volumes of known geometry and the
real CTs, then the Study dock's Prior row and side by side in a real napari viewer (under Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from napari_radreport import load_study
from napari_radreport import report_templates as rt
from napari_radreport.io.prior_link import (
    FRAME_OF_REFERENCE,
    PATIENT_COORDINATES,
    PriorLink,
    PriorRefused,
    check_prior,
    choose_link,
    comparison_text,
    prior_index,
    prior_slice,
    prior_slice_of_point,
    prior_translate,
    slice_centre,
)
from napari_radreport.io.study import ImageData, Study, StudyTags

CANONICAL = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # I, P, L: the display target
WAIT_MS = 60_000
PRIOR_DATE = "20060315"


def _volume(shape=(10, 4, 4), spacing=(5.0, 1.0, 1.0), origin=(0.0, 0.0, 100.0), direction=CANONICAL, *,
            patient_id: str = "", frame: str = "", date: str = "", series: str = "",
            kind: str = "ct") -> Study:
    """A synthetic study of known geometry (each voxel's value is its flat index)."""
    tags = StudyTags(patient_id=patient_id, frame_of_reference_uid=frame, study_date=date,
                     series_description=series, series_uid=generate_uid())
    array = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    image = ImageData(array=array, spacing=tuple(spacing), modality="CT", tags=tags, origin=tuple(origin),
                      direction=np.asarray(direction, dtype=float), label=series or "synthetic")
    return Study(kind=kind, images=[image], source=(f"synthetic-{tags.series_uid}",))


def _tilted(degrees: float) -> np.ndarray:
    """The canonical axes turned about the patient's left-right axis (a tilted stack of slices)."""
    a = np.radians(degrees)
    turn = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    return CANONICAL @ turn.T


def _copy_series(src: Path, dst: Path, numbers, **changes) -> Path:
    """Copy slices 1-NN.dcm of a real series as another study: new study and series UIDs, an earlier date,
    then ``changes`` (``PatientID``, ``FrameOfReferenceUID``, ``shift_mm``: ImagePositionPatient z raised)."""
    dst.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    shift = changes.pop("shift_mm", 0.0)
    for n in numbers:
        ds = pydicom.dcmread(src / f"1-{n:02d}.dcm")
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, generate_uid()
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = PRIOR_DATE
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        if shift:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + shift]
        ds.save_as(dst / f"prior_{n:02d}.dcm")
    return dst


# -- the link (pure) --------------------------------------------------------------------------------------
def test_the_link_is_the_frame_of_reference_when_both_share_one_else_patient_coordinates():
    current = _volume(frame="1.2.3")
    assert choose_link(current, _volume(frame="1.2.3")).mode == FRAME_OF_REFERENCE
    assert choose_link(current, _volume(frame="1.2.9")).mode == PATIENT_COORDINATES
    assert choose_link(current, _volume()).mode == PATIENT_COORDINATES
    assert choose_link(_volume(), _volume()).mode == PATIENT_COORDINATES  # two empty UIDs are no frame
    patient = choose_link(current, _volume(), offset_mm=12.5)
    assert patient.offset_mm == 12.5 and "offset +12.5 mm" in patient.describe()
    assert "assumes the two scanners' heights are comparable" in patient.describe()
    assert "FrameOfReferenceUID" in choose_link(current, _volume(frame="1.2.3")).describe()


@pytest.mark.parametrize("mode", [FRAME_OF_REFERENCE, PATIENT_COORDINATES])
def test_a_slice_maps_to_the_prior_slice_at_the_same_height_plus_the_offset(mode):
    current = _volume().image  # slice k at z = 100 - 5k
    prior = _volume((30, 6, 6), (2.0, 1.0, 1.0), (3.0, -7.0, 90.6)).image  # slice j at z = 90.6 - 2j
    link = PriorLink(mode)
    wanted = [None, None, 0, 3, 5, 8, 10, 13, 15, 18]  # nearest to (90.6 - z) / 2
    assert [prior_slice(current, prior, k, link) for k in range(10)] == wanted
    assert prior_slice(current, prior, 0, link, clamp=True) == 0
    assert prior_slice(current, prior, 4, link.with_offset(10.0)) == 0  # z 80 + 10 mm: the prior's first
    assert prior_slice(current, prior, 9, link.with_offset(-50.0)) is None  # z 5: below its 30 slices
    assert prior_slice(current, prior, 9, link.with_offset(-50.0), clamp=True) == 29
    point = slice_centre(current, 4) + np.array([20.0, -15.0, 0.0])  # anywhere on slice 4: the same height
    assert prior_slice_of_point(prior, point, link) == 5


def test_a_tilted_prior_in_the_same_frame_follows_the_point_itself():
    current = _volume((20, 8, 8)).image
    prior = _volume((40, 8, 8), (2.5, 1.0, 1.0), (0.0, 0.0, 95.0), _tilted(10.0)).image
    frame, patient = PriorLink(FRAME_OF_REFERENCE), PriorLink(PATIENT_COORDINATES)
    for k in (4, 10, 15):
        point = slice_centre(current, k)
        index = prior_index(current, prior, k, frame)
        assert np.isclose(prior.patient_to_index(point)[0], index)  # the prior's slice through the point
        # by height alone: the prior's slice whose centre is at the point's height
        assert np.isclose(slice_centre(prior, prior_index(current, prior, k, patient))[2], point[2])


def test_the_prior_translate_puts_the_linked_slice_at_the_current_slice_world_position():
    current = _volume((20, 8, 8), (5.0, 0.8, 0.8), (-10.0, 4.0, 100.0), frame="1.2")
    prior = _volume((50, 6, 6), (2.0, 1.2, 1.2), (30.0, -50.0, 120.0), frame="1.2")
    translates = [np.asarray(study.to_layer_data()[0][1]["translate"]) for study in (current, prior)]
    scale_c, scale_p = (np.asarray(study.spacing) for study in (current, prior))
    for mode, offset in ((FRAME_OF_REFERENCE, 0.0), (PATIENT_COORDINATES, 0.0), (PATIENT_COORDINATES, 7.0)):
        link = PriorLink(mode, offset)
        moved = [prior_translate(current.image, prior.image, link, k) for k in range(20)]
        assert np.allclose(moved, moved[0])  # parallel axial axes: one translate links every slice
        for k in range(20):
            world = translates[0][0] + k * scale_c[0]
            linked = prior_index(current.image, prior.image, k, link)
            assert np.isclose((world - moved[k][0]) / scale_p[0], linked)
        if mode == FRAME_OF_REFERENCE:  # in-plane: the prior keeps its patient position
            assert np.allclose(moved[0][1:], translates[1][1:])
        else:  # in-plane: the prior is centred on the current study
            centre_c = translates[0][1:] + (np.array([8, 8]) - 1) / 2 * scale_c[1:]
            assert np.allclose(moved[0][1:] + (np.array([6, 6]) - 1) / 2 * scale_p[1:], centre_c)
    tilted = _volume((40, 8, 8), (2.5, 1.0, 1.0), (0.0, 0.0, 95.0), _tilted(10.0), frame="1.2")
    link = PriorLink(FRAME_OF_REFERENCE)
    for k in (3, 12):  # not parallel: the translate follows the slice, still exact there
        moved = prior_translate(current.image, tilted.image, link, k)
        world = translates[0][0] + k * scale_c[0]
        assert np.isclose((world - moved[0]) / 2.5, prior_index(current.image, tilted.image, k, link))


# -- may it be the prior? (pure) --------------------------------------------------------------------------
def test_a_prior_of_another_patient_is_refused_and_an_unidentified_one_noted():
    current = _volume(patient_id="P-1", date="20240301")
    with pytest.raises(PriorRefused) as refused:
        check_prior(current, _volume(patient_id="P-2", date="20230101"))
    assert str(refused.value) == ("Not a prior of this patient: patient ID 'P-2' differs from the current "
                                  "study's 'P-1'.")
    with pytest.raises(PriorRefused, match="the current study itself"):
        check_prior(current, current)
    assert check_prior(current, _volume(patient_id="P-1", date="20230101")) == []
    (note,) = check_prior(current, _volume(date="20230101"))  # NIfTI: no patient to compare
    assert note == "patient not identified in the prior: not checked to be the same patient"
    assert "the prior (2025-01-01) is dated after the current study (2024-03-01)" in check_prior(
        current, _volume(patient_id="P-1", date="20250101"))
    radiographs = _volume((1, 4, 4), kind="xray_set", patient_id="P-1")
    assert check_prior(current, radiographs) == [
        "slices not linked: the prior: a radiograph set has no slices to link"]


def test_the_comparison_line_names_the_prior_from_its_headers(chest_study, abdomen_nifti, j2k_series):
    assert comparison_text(chest_study) == "CT chest 2007-04-04 (series '5mm'), prior study."
    assert comparison_text(load_study(abdomen_nifti)) == "CT, date not recorded, prior study."
    assert comparison_text(load_study(j2k_series)) == "CT 2022-12-08 (series 'CT Body 3.0'), prior study."
    text = rt.fill(rt.load("chest_ct"), chest_study, comparison=comparison_text(chest_study))
    assert "\n\nCOMPARISON:\nCT chest 2007-04-04 (series '5mm'), prior study.\n\nFINDINGS:" in text


# -- real series (pure) -----------------------------------------------------------------------------------
def test_a_prior_in_the_same_frame_of_reference_links_slice_for_slice(chest_series, chest_study, tmp_path):
    prior = load_study(_copy_series(chest_series, tmp_path / "prior", range(21, 41)))
    current = chest_study
    assert check_prior(current, prior) == []  # the same patient, dated before
    link = choose_link(current, prior)
    assert link.mode == FRAME_OF_REFERENCE
    matched = 0
    for j in range(prior.array.shape[0]):  # each prior slice is one of the current's, found by its pixels
        (k,) = [k for k in range(current.array.shape[0]) if np.array_equal(current.array[k], prior.array[j])]
        assert prior_slice(current.image, prior.image, k, link) == j
        matched += 1
    assert matched == 20
    assert prior_slice(current.image, prior.image, 0, link) is None  # above the prior's 20 slices


def test_patient_coordinates_link_the_chest_and_the_abdomen_by_height(chest_study, abdomen_nifti):
    prior = load_study(abdomen_nifti)
    assert check_prior(chest_study, prior) == [
        "patient not identified in the prior: not checked to be the same patient"]
    link = choose_link(chest_study, prior, offset_mm=830.0)
    assert link.mode == PATIENT_COORDINATES
    found = 0
    for k in range(chest_study.array.shape[0]):
        j = prior_slice(chest_study.image, prior.image, k, link)
        if j is not None:  # the prior's slice is the one at the current height plus 830 mm
            found += 1
            wanted = slice_centre(chest_study.image, k)[2] + 830.0
            assert abs(slice_centre(prior.image, j)[2] - wanted) <= 1.5 + 1e-6
    assert found == 8  # the chest's lowest 8 slices, z -404..-439 mm + 830 mm: the abdomen's top (427 mm)


# -- in napari ----------------------------------------------------------------------------------------------
def _settle() -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()


def _go_to(viewer, layer, k: int) -> None:
    """Put the slider on the layer's axial slice ``k``."""
    data = np.asarray(layer.world_to_data(np.asarray(viewer.dims.point)), dtype=float)
    data[-3] = k
    viewer.dims.set_point(0, float(layer.data_to_world(data)[0]))
    _settle()


def _shown(viewer, layer) -> int:
    """The axial slice napari draws of ``layer`` (the slider's world position in its data, rounded)."""
    return int(np.rint(layer.world_to_data(np.asarray(viewer.dims.point))[-3]))


def _drawn(layer) -> np.ndarray | None:
    """What napari drew of ``layer`` (None when its slice is empty: the slider is outside it)."""
    return None if layer._slice.empty else np.asarray(layer._slice.image.raw)


@pytest.fixture()
def reading(docked, chest_series, chest_study, tmp_path):
    """(viewer, session, Prior row, current study and layer, prior study and layer): the real chest CT and a
    copy of 20 of its slices dated a year earlier as the prior (same patient, same frame of reference)."""
    from napari_radreport.viewer import add_study

    viewer, session = docked["viewer"], docked["session"]
    prior = load_study(_copy_series(chest_series, tmp_path / "prior", range(21, 41)))
    (prior_layer,) = add_study(viewer, prior)
    (current_layer,) = add_study(viewer, chest_study)
    assert session.study is chest_study
    return viewer, session, docked["Study"].prior, chest_study, current_layer, prior, prior_layer


@pytest.mark.viewer
def test_side_by_side_shows_the_prior_at_the_linked_slice(reading):
    viewer, session, row, current, current_layer, prior, prior_layer = reading
    assert row.combo.itemText(0) == "None" and row.combo.count() == 2
    row.combo.setCurrentIndex(1)
    row.combo.activated.emit(1)  # the user picks the prior
    assert session.prior_of(current) is prior
    assert "Linked by frame of reference" in row.status.text()
    own_translate = np.array(prior_layer.translate)
    row.side_button.click()
    _settle()
    grid = viewer.canvas.grid
    assert grid.enabled and grid.shape == (1, 2) and row.side_button.isChecked()
    assert [layer for layer in viewer.layers if layer.visible] == [prior_layer, current_layer]
    cells = [grid.position(viewer.layers.index(la), viewer.layers) for la in (current_layer, prior_layer)]
    assert cells == [(0, 0), (0, 1)]  # the current study on the left
    for k in (20, 27, 39):
        _go_to(viewer, current_layer, k)
        assert _shown(viewer, current_layer) == k
        j = _shown(viewer, prior_layer)
        z = slice_centre(current.image, k)[2]
        assert abs(slice_centre(prior.image, j)[2] - z) <= prior.spacing[0] / 2  # the same height
        assert np.array_equal(_drawn(prior_layer), current.array[k])  # the same anatomy, drawn
        assert row.side.labels() == {"current": "CURRENT\n2007-04-04",
                                     "prior": f"PRIOR 2006-03-15\nslice {j + 1}/20"}
    _go_to(viewer, current_layer, 5)  # above the prior's slices: its cell is empty
    assert _drawn(prior_layer) is None and "outside its slices" in row.side.labels()["prior"]

    _go_to(viewer, current_layer, 30)
    row.offset.setValue(10.0)  # the prior's slice 10 mm higher: two 5 mm slices up
    _settle()
    assert session.prior_link(current).offset_mm == 10.0
    j = _shown(viewer, prior_layer)
    assert abs(slice_centre(prior.image, j)[2] - (slice_centre(current.image, 30)[2] + 10.0)) <= 2.5
    assert np.array_equal(_drawn(prior_layer), current.array[28])

    row.side_button.click()  # off: the grid, the prior's translate and the layers as they were
    _settle()
    assert not grid.enabled and np.allclose(prior_layer.translate, own_translate)
    assert current_layer.visible and not prior_layer.visible
    assert row.side.labels() == {}


@pytest.mark.viewer
def test_without_a_shared_frame_the_offset_lines_up_a_shifted_scan(docked, chest_series, chest_study,
                                                                   tmp_path):
    from napari_radreport.viewer import add_study

    viewer, session, row = docked["viewer"], docked["session"], docked["Study"].prior
    # the same slices from another "scanner": its own frame, the table 100 mm lower (heights 100 mm higher)
    prior = load_study(_copy_series(chest_series, tmp_path / "shifted", range(21, 41),
                                    FrameOfReferenceUID=generate_uid(), shift_mm=100.0))
    (prior_layer,) = add_study(viewer, prior)
    (current_layer,) = add_study(viewer, chest_study)
    assert row.choose(prior) and session.prior_link(chest_study).mode == PATIENT_COORDINATES
    assert "assumes the two scanners' heights are comparable" in row.status.text()
    row.set_side_by_side(True)
    _go_to(viewer, current_layer, 10)
    assert np.array_equal(_drawn(prior_layer), chest_study.array[30])  # by height alone: 100 mm lower anatomy
    row.offset.setValue(100.0)
    _settle()
    assert _drawn(prior_layer) is None  # slice 10's anatomy is not in the prior's 20 slices
    for k in (20, 25, 39):  # lined up again
        _go_to(viewer, current_layer, k)
        assert np.array_equal(_drawn(prior_layer), chest_study.array[k])


@pytest.mark.viewer
def test_a_prior_of_another_patient_is_refused_with_the_reason(reading, chest_series, tmp_path, qtbot):
    viewer, session, row, current, *_ = reading
    other = _copy_series(chest_series, tmp_path / "other", range(30, 34), PatientID="OTHER-7")
    from napari_radreport.viewer import add_study

    add_study(viewer, load_study(other))
    session.set_study(current)
    assert not row.choose(row._choices[-1])
    assert "Not a prior of this patient: patient ID 'OTHER-7' differs" in row.status.text()
    assert session.prior_of(current) is None and row.combo.currentIndex() == 0
    layers = len(viewer.layers)
    row.open_prior(str(other))  # from a file dialog: read, checked, never added
    qtbot.waitUntil(lambda: "Not opened" in row.status.text(), timeout=WAIT_MS)
    assert "patient ID 'OTHER-7' differs" in row.status.text()
    assert len(viewer.layers) == layers and session.study is current


@pytest.mark.viewer
def test_open_prior_adds_it_and_the_current_study_stays_active(docked, chest_series, chest_study, tmp_path,
                                                               qtbot):
    from napari_radreport.viewer import add_study

    viewer, session, row = docked["viewer"], docked["session"], docked["Study"].prior
    add_study(viewer, chest_study)
    folder = _copy_series(chest_series, tmp_path / "prior", range(21, 41))
    row.open_prior(str(next(folder.glob("*.dcm"))))  # one file of the series, as the dialog gives it
    qtbot.waitUntil(lambda: session.prior_of(chest_study) is not None, timeout=WAIT_MS)
    assert session.study is chest_study and len(session.studies()) == 2
    assert row.combo.currentIndex() == 1
    assert session.comparison(chest_study) == "CT chest 2006-03-15 (series '5mm'), prior study."


@pytest.mark.viewer
def test_side_by_side_follows_the_active_study_and_ends_with_the_prior(reading, docked, abdomen_nifti):
    from napari_radreport.viewer import add_study

    viewer, session, row, current, current_layer, prior, prior_layer = reading
    abdomen = load_study(abdomen_nifti)
    (abdomen_layer,) = add_study(viewer, abdomen)  # a third study, without a prior
    session.set_study(current)
    row.choose(prior)
    row.set_side_by_side(True)
    viewer.layers.selection.active = prior_layer  # to window the prior: the pair stays
    assert session.study is prior and viewer.canvas.grid.enabled and row.side_button.isChecked()
    assert "as its prior" in row.status.text() and not abdomen_layer.visible
    session.set_study(abdomen)  # from a study picker: side by side ends, the abdomen alone on screen
    assert not viewer.canvas.grid.enabled and not row.side_button.isChecked()
    assert abdomen_layer.visible and not current_layer.visible and not prior_layer.visible
    session.set_study(current)
    own_translate = np.array(prior_layer.translate)
    row.offset.setValue(50.0)
    row.set_side_by_side(True)
    assert not np.allclose(prior_layer.translate, own_translate)
    viewer.canvas.grid.enabled = False  # napari's own grid button: side by side ends, all put back
    assert not row.side_button.isChecked() and row.side.pair is None
    assert np.allclose(prior_layer.translate, own_translate) and not prior_layer.visible
    row.set_side_by_side(True)
    tools = docked["Study"].tools
    tools.set_tool("ruler")  # a ruler would take a cell of its own: side by side ends first
    ruler = tools.measurement_layer("ruler", create=False)
    assert ruler.visible and not viewer.canvas.grid.enabled and not row.side_button.isChecked()
    assert current_layer.visible and not prior_layer.visible
    tools.set_tool(None)
    row.set_side_by_side(True)
    assert viewer.canvas.grid.enabled and not ruler.visible
    viewer.layers.remove(prior_layer)  # the prior closed: the pair and side by side end
    _settle()
    assert session.prior_of(current) is None and not viewer.canvas.grid.enabled
    assert session.comparison(current) == "" and current_layer.visible


@pytest.mark.viewer
def test_the_prior_row_has_stable_object_names(docked):
    from qtpy.QtWidgets import QWidget

    root = docked["Study"].window()
    for name in ("radreport-prior", "radreport-prior-open", "radreport-prior-offset",
                 "radreport-side-by-side", "radreport-prior-status"):
        assert root.findChild(QWidget, name) is not None, name


@pytest.mark.viewer
def test_the_comparison_line_is_in_the_generated_draft(docked, qtbot, tiny_ct_model, abdomen_nifti,
                                                      chest_study):
    pytest.importorskip("torch")
    from napari_radreport.viewer import add_study

    viewer, session, report = docked["viewer"], docked["session"], docked["Report"]
    session.update_settings(model_folder=str(tiny_ct_model), max_new_tokens=4)
    add_study(viewer, chest_study)
    current = load_study(abdomen_nifti)  # no patient named: any prior is allowed, with a note
    add_study(viewer, current)
    row = docked["Study"].prior
    assert row.choose(chest_study)
    assert "Patient not identified in the current study" in row.status.text()
    report.generate()  # loads the model, then generates
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy and
                    report.draft_for(current).stop_reason != "generating", timeout=WAIT_MS)
    text = report.draft_for(current).text
    assert "\n\nCOMPARISON:\nCT chest 2007-04-04 (series '5mm'), prior study.\n\nFINDINGS:" in text
