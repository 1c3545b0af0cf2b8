"""Radiographs opened together are one set; a set's views can be added and removed (io, the Views widget)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_one_patient import JANE, RICK, radiograph

from napari_radreport import StudyReadError, load_study
from napari_radreport.io.study import MixedPatients
from napari_radreport.io.xray import add_views, remove_view

PLUGIN = "napari-radreport"
REAL_XRAYS = ("nih_00000001_000_cardiomegaly.png", "nih_00027426_000_no_finding.png",
              "wg04_rg1_chest_cr_monochrome1.dcm")
WAIT_MS = 30_000


@pytest.fixture()
def real_xrays(shared_data) -> list[Path]:
    paths = [shared_data / "xray" / name for name in REAL_XRAYS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"real radiographs missing from {shared_data / 'xray'}: {', '.join(missing)}")
    return paths


def picture(path: Path, value: int = 90) -> Path:
    """A small grayscale PNG radiograph (no patient identity, as every PNG)."""
    from PIL import Image

    ramp = (np.arange(48 * 40).reshape(48, 40) % 200 + value) % 256
    Image.fromarray(ramp.astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def small_ct(chest_series, tmp_path) -> Path:
    """Four real CT slices in a folder of their own (a small series that opens fast)."""
    folder = tmp_path / "ct"
    folder.mkdir()
    for name in ("1-01.dcm", "1-02.dcm", "1-03.dcm", "1-04.dcm"):
        shutil.copy(chest_series / name, folder / name)
    return folder


def studies_of(viewer) -> list:
    from napari_radreport.widgets.session import studies_in

    return [study for _, study in studies_in(viewer)]


def files_of(study) -> list[str]:
    return [Path(image.source_files[0]).name for image in study.images]


# -- add_views / remove_view --------------------------------------------------------------------------------

def test_add_views_reads_the_new_files_into_a_new_set_in_order(real_xrays):
    first = load_study(real_xrays[0])
    study = add_views(first, real_xrays[1:])
    assert study is not first and study.kind == "xray_set" and files_of(study) == list(REAL_XRAYS)
    assert len(first.images) == 1  # the old study is left as it was
    # load_study's rules, notes and warnings, for the whole new set
    assert any(w.startswith("patient identity unknown for 2 of 3 files") for w in study.warnings)
    assert "wg04_rg1_chest_cr_monochrome1.dcm: MONOCHROME1 inverted for display" in study.notes
    # a file already in the set is not added twice; nothing new at all is refused
    assert files_of(add_views(first, [real_xrays[0], real_xrays[1]])) == list(REAL_XRAYS[:2])
    with pytest.raises(StudyReadError, match="no new view to add"):
        add_views(study, [real_xrays[2]])


def test_add_views_refuses_another_patient_and_what_is_not_a_radiograph(tmp_path, small_ct):
    jane = load_study(radiograph(tmp_path / "jane_pa.dcm", *JANE))
    lateral = radiograph(tmp_path / "jane_lat.dcm", *JANE)
    assert files_of(add_views(jane, [lateral])) == ["jane_pa.dcm", "jane_lat.dcm"]
    rick = radiograph(tmp_path / "rick.dcm", *RICK)
    with pytest.raises(MixedPatients, match="the files come from 2 patients") as info:
        add_views(jane, [lateral, rick])
    assert "\n" not in str(info.value)
    mixed = add_views(jane, [rick], allow_mixed_patients=True)
    assert len(mixed.extra["patients"]) == 2 and mixed.warnings[0].startswith("MIXED PATIENTS")
    # a set the user opened with two patients may take more of their views without asking again
    assert files_of(add_views(mixed, [lateral])) == ["jane_pa.dcm", "rick.dcm", "jane_lat.dcm"]
    with pytest.raises(StudyReadError, match=r"1-01.dcm: a slice of a CT series, not a radiograph"):
        add_views(jane, [small_ct / "1-01.dcm"])
    with pytest.raises(StudyReadError, match="a folder; add radiograph files"):
        add_views(jane, [small_ct])
    with pytest.raises(StudyReadError, match="a ct study is not a set of radiographs"):
        add_views(load_study(small_ct), [lateral])


def test_remove_view_keeps_the_others_and_refuses_the_last(real_xrays):
    study = load_study(real_xrays)
    two = remove_view(study, 1)
    assert files_of(two) == [REAL_XRAYS[0], REAL_XRAYS[2]] and files_of(study) == list(REAL_XRAYS)
    one = remove_view(two, 1)
    assert files_of(one) == [REAL_XRAYS[0]] and not one.warnings  # the identity warning left with the DICOM
    with pytest.raises(StudyReadError, match=r"is the only view of the set: it cannot be removed") as info:
        remove_view(one, 0)
    assert "\n" not in str(info.value)
    with pytest.raises(StudyReadError, match="no view 4: the set has 3 view"):
        remove_view(study, 3)


def test_removing_the_other_patient_leaves_a_set_of_one_patient(tmp_path):
    jane, rick = radiograph(tmp_path / "jane.dcm", *JANE), radiograph(tmp_path / "rick.dcm", *RICK)
    mixed = load_study([jane, rick, radiograph(tmp_path / "jane2.dcm", *JANE)], allow_mixed_patients=True)
    left = remove_view(mixed, 1)
    assert files_of(left) == ["jane.dcm", "jane2.dcm"]
    assert "patients" not in left.extra and not any("MIXED" in w for w in left.warnings)


# -- opening several radiographs in napari -------------------------------------------------------------------

@pytest.mark.viewer
def test_radiographs_opened_together_become_one_set(make_napari_viewer, qtbot, real_xrays, small_ct):
    from napari_radreport.widgets.radiograph_sets import gather_radiograph_sets

    viewer = make_napari_viewer()
    gatherer = gather_radiograph_sets(viewer)
    assert gather_radiograph_sets(viewer) is gatherer  # one per viewer
    gathered = []
    gatherer.gathered.connect(gathered.append)
    # napari reads them one file at a time, as File > Open does
    viewer.window._qt_viewer._qt_open([str(p) for p in real_xrays], stack=False, plugin=PLUGIN)
    qtbot.waitUntil(lambda: not gatherer.busy and len(studies_of(viewer)) == 1, timeout=WAIT_MS)
    (study,) = studies_of(viewer)
    assert study.kind == "xray_set" and files_of(study) == list(REAL_XRAYS) and gathered == [study]
    assert [layer.metadata["radreport_image_index"] for layer in viewer.layers] == [0, 1, 2]
    assert any(w.startswith("patient identity unknown for 2 of 3 files") for w in study.warnings)

    # a CT opened afterwards is its own study; so is a radiograph opened by itself later
    viewer.open(str(small_ct), plugin=PLUGIN)
    viewer.open(str(real_xrays[0]), plugin=PLUGIN)
    qtbot.wait(200)
    qtbot.waitUntil(lambda: not gatherer.busy, timeout=WAIT_MS)
    assert [s.kind for s in studies_of(viewer)] == ["xray_set", "ct", "xray_set"]
    assert [len(s.images) for s in studies_of(viewer)] == [3, 1, 1] and gatherer.last_message == ""


@pytest.mark.viewer
def test_two_opens_in_a_row_stay_two_studies_and_docks_studies_are_left_alone(make_napari_viewer, qtbot,
                                                                             tmp_path):
    from napari_radreport.viewer import add_study
    from napari_radreport.widgets.radiograph_sets import gather_radiograph_sets

    viewer = make_napari_viewer()
    gatherer = gather_radiograph_sets(viewer)
    a, b, c = (picture(tmp_path / f"{name}.png", i * 40) for i, name in enumerate("abc"))
    viewer.open(str(a), plugin=PLUGIN)  # two separate actions before Qt gets a turn
    viewer.open(str(b), plugin=PLUGIN)
    add_study(viewer, load_study(c))  # the Study dock's way: not an open of files
    add_study(viewer, load_study(a))
    qtbot.wait(200)
    qtbot.waitUntil(lambda: not gatherer.busy, timeout=WAIT_MS)
    assert [files_of(s) for s in studies_of(viewer)] == [["a.png"], ["b.png"], ["c.png"], ["a.png"]]
    viewer.open([str(a), str(b), str(c)], plugin=PLUGIN)
    qtbot.waitUntil(lambda: not gatherer.busy and len(studies_of(viewer)) == 5, timeout=WAIT_MS)
    assert files_of(studies_of(viewer)[-1]) == ["a.png", "b.png", "c.png"]
    # File > Open Files as Stack... hands the reader the whole list: one set without the gatherer's help
    viewer.layers.clear()
    viewer.open([str(c), str(a)], stack=True, plugin=PLUGIN)
    assert [files_of(s) for s in studies_of(viewer)] == [["c.png", "a.png"]] and not gatherer.busy


@pytest.mark.viewer
def test_a_ct_opened_with_radiographs_is_left_alone(make_napari_viewer, qtbot, tmp_path, small_ct):
    from napari_radreport.widgets.radiograph_sets import gather_radiograph_sets

    viewer = make_napari_viewer()
    gatherer = gather_radiograph_sets(viewer)
    a, b = picture(tmp_path / "a.png"), picture(tmp_path / "b.png", 60)
    viewer.open([str(a), str(small_ct), str(b)], plugin=PLUGIN)
    qtbot.waitUntil(lambda: not gatherer.busy and len(studies_of(viewer)) == 2, timeout=WAIT_MS)
    ct, xrays = studies_of(viewer)
    assert ct.kind == "ct" and ct.array.shape[0] == 4 and files_of(xrays) == ["a.png", "b.png"]


@pytest.mark.viewer
def test_radiographs_of_two_patients_opened_together_stay_apart_with_a_message(make_napari_viewer, qtbot,
                                                                              tmp_path, monkeypatch):
    from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH, UserSettings
    from napari_radreport.widgets.radiograph_sets import gather_radiograph_sets

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    viewer = make_napari_viewer()
    gatherer = gather_radiograph_sets(viewer)
    messages: list[str] = []
    gatherer.message.connect(messages.append)
    jane, rick = radiograph(tmp_path / "jane.dcm", *JANE), radiograph(tmp_path / "rick.dcm", *RICK)
    viewer.open([str(jane), str(rick)], plugin=PLUGIN)
    qtbot.waitUntil(lambda: len(messages) == 1, timeout=WAIT_MS)
    assert [files_of(s) for s in studies_of(viewer)] == [["jane.dcm"], ["rick.dcm"]]  # both images kept
    (text,) = messages
    assert text == gatherer.last_message and "\n" not in text
    assert text.startswith("The 2 radiographs opened together come from 2 patients (PatientID, PatientName, "
                           "PatientBirthDate differ): kept as 2 separate studies")
    assert f"switch on '{MIXED_PATIENTS_SWITCH}'" in text and "Doe" not in text and "Roe" not in text

    UserSettings(allow_mixed_patients=True).save()  # the Settings switch: one set that says it mixes patients
    viewer.layers.clear()
    viewer.open([str(jane), str(rick)], plugin=PLUGIN)
    qtbot.waitUntil(lambda: not gatherer.busy and len(studies_of(viewer)) == 1, timeout=WAIT_MS)
    assert len(studies_of(viewer)[0].extra["patients"]) == 2 and len(messages) == 1


# -- the Views widget ----------------------------------------------------------------------------------------

@pytest.mark.viewer
def test_the_views_widget_adds_and_removes_views_in_the_viewer(make_napari_viewer, qtbot, tmp_path,
                                                               real_xrays):
    from napari_radreport.viewer import add_study
    from napari_radreport.widgets.radiograph_views import RadiographViews

    viewer = make_napari_viewer()
    widget = RadiographViews(viewer)
    qtbot.addWidget(widget)
    replaced = []
    widget.study_replaced.connect(lambda old, new: replaced.append((old, new)))
    ct = load_study(radiograph(tmp_path / "jane.dcm", *JANE))
    ct.kind = "ct"  # what the widget is given decides: not a set, so no Views
    widget.show_study(ct)
    assert widget.isHidden()

    first = load_study(real_xrays[0])
    add_study(viewer, first)
    widget.show_study(first)
    assert not widget.isHidden() and widget.views.count() == 1
    assert not widget.remove_button.isEnabled()  # the only view

    widget.add_views([str(p) for p in real_xrays[1:]])
    qtbot.waitUntil(lambda: len(replaced) == 1 and not widget.busy, timeout=WAIT_MS)
    old, study = replaced[0]
    assert old is first and files_of(study) == list(REAL_XRAYS)
    assert studies_of(viewer) == [study] and len(viewer.layers) == 3  # the old layer is gone
    assert [widget.views.item(i).text() for i in range(3)] == [
        "1. — nih_00000001_000_cardiomegaly.png", "2. — nih_00027426_000_no_finding.png",
        "3. PA wg04_rg1_chest_cr_monochrome1.dcm"]

    widget.views.setCurrentRow(1)
    assert widget.remove_button.isEnabled()
    widget.remove_button.click()
    qtbot.waitUntil(lambda: len(replaced) == 2 and not widget.busy, timeout=WAIT_MS)
    study = replaced[1][1]
    assert files_of(study) == [REAL_XRAYS[0], REAL_XRAYS[2]] and studies_of(viewer) == [study]
    assert len(viewer.layers) == 2 and widget.views.count() == 2

    rick = radiograph(tmp_path / "rick.dcm", *RICK)  # refused in one line; the set stays as it was
    widget.add_views([str(rick)])
    qtbot.waitUntil(lambda: "Could not add" in widget.status.text() and not widget.busy, timeout=WAIT_MS)
    assert "the files come from" in widget.status.text() and studies_of(viewer) == [study]
    widget.remove_view(0)
    qtbot.waitUntil(lambda: len(replaced) == 3 and not widget.busy, timeout=WAIT_MS)
    assert widget.status.text() == "" and files_of(studies_of(viewer)[0]) == [REAL_XRAYS[2]]
    widget.remove_view(0)  # the last view: refused, nothing read
    assert "only view of the set" in widget.status.text() and len(replaced) == 3
