"""One patient per study: files whose PatientID, PatientName or PatientBirthDate differ are refused as one
study unless the user allows it, and no export puts one patient's identity on another patient's images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_radreport import StudyReadError, load_study
from napari_radreport.export import ExportError, export_report
from napari_radreport.export.record import ReportRecord, StudyReference
from napari_radreport.io.dicom_headers import person_name
from napari_radreport.io.study import MixedPatients

DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage, for presentation
JANE = ("A001", "Doe^Jane", "19500101")
RICK = ("B002", "Roe^Rick", "19600202")


def radiograph(path: Path, patient_id: str, name: str, birth_date: str, *,
               study_uid: str | None = None) -> Path:
    """A small DX chest radiograph of one patient, written as a DICOM Part 10 file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DX, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.Modality, ds.ViewPosition, ds.StudyDate = "DX", "PA", "20240105"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient_id, name, birth_date
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture()
def two_patients(tmp_path) -> tuple[Path, Path]:
    return radiograph(tmp_path / "jane.dcm", *JANE), radiograph(tmp_path / "rick.dcm", *RICK)


def _mixed_record(two_patients) -> ReportRecord:
    study = load_study(list(two_patients), allow_mixed_patients=True)
    return ReportRecord(final_text="Findings: Clear lungs.\nImpression: Normal.",
                        study=StudyReference.from_study(study))


# -- reading ------------------------------------------------------------------------------------------------

def test_radiographs_of_two_patients_are_refused_naming_the_files_and_what_differs(two_patients):
    with pytest.raises(MixedPatients) as info:
        load_study(list(two_patients))
    message = str(info.value)
    assert isinstance(info.value, StudyReadError) and "\n" not in message  # one line, like every refusal
    assert "the files come from 2 patients" in message
    assert "PatientID, PatientName, PatientBirthDate differ" in message
    assert "'A001' in jane.dcm" in message and "'B002' in rick.dcm" in message
    assert not any(secret in message for secret in ("Doe", "Roe", "1950", "1960"))  # no names or birth dates
    assert info.value.patients == 2 and info.value.differs == ("PatientID", "PatientName", "PatientBirthDate")


def test_allowed_they_open_as_one_study_that_says_it_mixes_patients(two_patients):
    jane, rick = two_patients
    study = load_study([jane, rick], allow_mixed_patients=True)
    assert len(study.images) == 2
    assert study.extra["patients"] == [{"patient_id": "A001", "files": [str(jane)]},
                                       {"patient_id": "B002", "files": [str(rick)]}]
    assert study.warnings[0].startswith("MIXED PATIENTS: the files come from 2 patients")


def test_only_the_name_differing_is_refused_without_showing_the_names(tmp_path):
    a = radiograph(tmp_path / "a.dcm", "A001", "Doe^Jane", "")
    b = radiograph(tmp_path / "b.dcm", "A001", "Roe^Rick", "")
    with pytest.raises(MixedPatients, match=r"PatientName differs: 'A001' in a.dcm; 'A001' in b.dcm") as info:
        load_study([a, b])
    assert "Doe" not in str(info.value) and "Roe" not in str(info.value)


@pytest.mark.parametrize("variant", [("A001", "DOE^JANE  ", "19500101"), ("A001 ", "Doe^Jane^^^", "19500101"),
                                     ("A001", "doe jane", ""), ("", "Doe^Jane", "19500101")])
def test_one_patient_written_differently_is_one_patient(tmp_path, variant):
    a = radiograph(tmp_path / "a.dcm", *JANE)
    b = radiograph(tmp_path / "b.dcm", *variant)
    study = load_study([a, b])
    assert "patients" not in study.extra and not any("MIXED" in w for w in study.warnings)


def test_a_middle_name_or_another_birth_date_is_another_patient(tmp_path):
    a = radiograph(tmp_path / "a.dcm", *JANE)
    with pytest.raises(MixedPatients, match="PatientName differs"):
        load_study([a, radiograph(tmp_path / "b.dcm", "A001", "Doe^Jane^Ann", "19500101")])
    with pytest.raises(MixedPatients, match="PatientBirthDate differs"):
        load_study([a, radiograph(tmp_path / "c.dcm", "A001", "Doe^Jane", "19500102")])


def test_person_names_compare_as_words():
    assert person_name("Doe^Jane") == person_name("DOE^JANE ") == person_name("Doe^Jane^^^") == "doe jane"
    assert person_name("Doe^Jane=ドウ^ジェーン") == "doe jane"  # the alphabetic group is the one compared
    assert person_name("=ドウ^ジェーン") == "ドウ ジェーン"  # ... unless only another group is written
    assert person_name(None) == person_name("^^") == ""


def test_files_without_identity_beside_files_with_one_are_said_to_be_unchecked(tmp_path):
    from PIL import Image

    a = radiograph(tmp_path / "a.dcm", *JANE)
    picture = tmp_path / "b.png"
    Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(picture)
    blank = radiograph(tmp_path / "c.dcm", "", "", "")
    study = load_study([a, picture, blank])
    assert len(study.images) == 3 and "patients" not in study.extra
    assert ("patient identity unknown for 2 of 3 files (e.g. b.png: PNG/JPEG files carry none): not checked "
            "to be the same patient as the others") in study.warnings
    assert not any("identity unknown" in w for w in load_study([picture, blank]).warnings)  # nothing known


def test_a_ct_series_with_one_slice_of_another_patient_is_refused(chest_series, tmp_path):
    for name in ("1-01.dcm", "1-02.dcm", "1-03.dcm", "1-04.dcm"):
        ds = pydicom.dcmread(chest_series / name)
        if name == "1-04.dcm":  # the same series UID: it would be stacked into the volume
            ds.PatientID, ds.PatientName = "Lung_Dx-B0002", "Lung_Dx-B0002"
        ds.save_as(tmp_path / name)
    with pytest.raises(MixedPatients) as info:
        load_study(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path} (4 files of series 0): the files come from 2 patients")
    assert "'Lung_Dx-A0001' in 1-01.dcm (+2 more); 'Lung_Dx-B0002' in 1-04.dcm" in message
    with pytest.raises(MixedPatients):
        load_study(tmp_path / "1-01.dcm")  # one file opens its series, and that series mixes patients
    study = load_study(tmp_path, allow_mixed_patients=True)
    assert study.array.shape[0] == 4
    assert [(p["patient_id"], len(p["files"])) for p in study.extra["patients"]] == [("Lung_Dx-A0001", 3),
                                                                                    ("Lung_Dx-B0002", 1)]


def test_another_patient_in_another_series_is_not_opened_so_not_refused(chest_series, tmp_path):
    for name in ("1-01.dcm", "1-02.dcm", "1-03.dcm", "1-04.dcm"):
        ds = pydicom.dcmread(chest_series / name)
        if name == "1-04.dcm":
            ds.PatientID, ds.SeriesInstanceUID, ds.SeriesNumber = "Lung_Dx-B0002", generate_uid(), 99
        ds.save_as(tmp_path / name)
    study = load_study(tmp_path)
    assert study.array.shape[0] == 3 and len(study.series) == 2 and "patients" not in study.extra


# -- exports ------------------------------------------------------------------------------------------------

def test_no_dicom_sr_is_written_for_a_study_of_two_patients(two_patients, tmp_path):
    record = _mixed_record(two_patients)
    assert record.study.mixed_patients == 2 and record.study.patient_id == "" and record.study.study_uid == ""
    with pytest.raises(ExportError) as info:
        export_report(record, tmp_path / "report.dcm")
    message = str(info.value)
    assert "\n" not in message and message.startswith("DICOM SR not written: the report is about the images "
                                                      "of 2 patients")
    assert not (tmp_path / "report.dcm").exists()


def test_the_sr_checks_the_source_files_itself(two_patients, tmp_path):
    """A record that does not say it mixes patients (built by hand, or from an older draft) is refused by the
    source headers; the same patient written differently still gets its SR, with that identity."""
    jane, rick = two_patients
    record = ReportRecord(final_text="Normal.", study=StudyReference(dicom_files=[str(jane), str(rick)]))
    with pytest.raises(ExportError, match=r"2 patients \(PatientID, PatientName, PatientBirthDate differ: "
                                          r"'A001' in jane.dcm; 'B002' in rick.dcm\)"):
        export_report(record, tmp_path / "mixed.dcm")
    assert not (tmp_path / "mixed.dcm").exists()

    same_study = pydicom.dcmread(jane).StudyInstanceUID
    again = radiograph(tmp_path / "jane_lateral.dcm", "A001", "DOE^JANE", "19500101", study_uid=same_study)
    record.study.dicom_files = [str(jane), str(again)]
    ds = pydicom.dcmread(export_report(record, tmp_path / "one.dcm"))
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate) == JANE
    (current,) = ds.CurrentRequestedProcedureEvidenceSequence
    referenced = {i.ReferencedSOPInstanceUID for s in current.ReferencedSeriesSequence
                  for i in s.ReferencedSOPSequence}
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in (jane, again)}


@pytest.mark.parametrize("suffix", [".txt", ".md", ".json", ".pdf"])
def test_every_other_format_says_mixed_patients_and_names_no_patient(two_patients, tmp_path, suffix):
    from test_export import pdf_text

    out = export_report(_mixed_record(two_patients), tmp_path / f"report{suffix}")
    text = pdf_text(out.read_bytes()) if suffix == ".pdf" else out.read_text(encoding="utf-8")
    assert "MIXED PATIENTS: the images come from 2 patients" in text
    assert not any(value in text for value in (*JANE, *RICK, "Doe", "Roe", "Patient ID"))
    if suffix == ".json":
        data = json.loads(text)
        assert data["study"]["mixed_patients"] == 2 and data["study"]["patient_id"] == ""
        assert "MIXED PATIENTS" in data["status"]


# -- command line and napari ------------------------------------------------------------------------------

def test_radreport_info_refuses_two_patients_in_one_line_unless_allowed(two_patients, capsys):
    from napari_radreport.cli import main

    paths = [str(p) for p in two_patients]
    assert main(["info", *paths]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("radreport: error: ")
    assert "jane.dcm" in err and "rick.dcm" in err and "--allow-mixed-patients opens them" in err
    assert main(["info", *paths, "--allow-mixed-patients"]) == 0
    assert "warning: MIXED PATIENTS: the files come from 2 patients" in capsys.readouterr().out


def test_model_commands_refuse_two_patients_and_their_sr_before_the_model_loads(two_patients, tiny_xray_model,
                                                                              tmp_path, capsys, monkeypatch):
    from napari_radreport.cli import main
    from napari_radreport.engine.engine import Engine

    def no_load(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Engine, "start", no_load)
    report = ["report", *map(str, two_patients), "--model", str(tiny_xray_model)]
    assert main(report) == 1
    assert "--allow-mixed-patients opens them" in capsys.readouterr().err
    out = tmp_path / "r.dcm"
    assert main([*report, "--allow-mixed-patients", "--format", "sr", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "DICOM SR not written: the report is about the images of 2 patients" in err
    assert not out.exists()


def test_the_napari_reader_refuses_unless_the_setting_allows(two_patients, tmp_path, monkeypatch):
    from napari_radreport._reader import get_reader
    from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH, UserSettings

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    paths = [str(p) for p in two_patients]
    reader = get_reader(paths)
    with pytest.raises(MixedPatients) as info:
        reader(paths)
    assert "\n" not in str(info.value) and f"switch on '{MIXED_PATIENTS_SWITCH}'" in str(info.value)
    UserSettings(allow_mixed_patients=True).save()
    layers = reader(paths)
    assert len(layers) == 2 and len(layers[0][1]["metadata"]["study"].extra["patients"]) == 2


@pytest.mark.viewer
def test_the_settings_switch_is_there_and_remembered(make_napari_viewer, tmp_path, monkeypatch):
    from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH, UserSettings
    from napari_radreport.viewer import add_docks

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    settings = add_docks(make_napari_viewer())["Settings"]
    switch = settings.allow_mixed_patients
    assert switch.text == MIXED_PATIENTS_SWITCH and switch.value is False
    assert UserSettings().allow_mixed_patients is False  # off unless the user switches it on
    switch.value = True
    assert UserSettings.load().allow_mixed_patients is True
    assert json.loads((tmp_path / "settings.json").read_text())["allow_mixed_patients"] is True
    again = add_docks(make_napari_viewer())["Settings"]
    assert again.allow_mixed_patients.value is True


@pytest.mark.viewer
def test_the_study_dock_asks_before_opening_two_patients(make_napari_viewer, qtbot, two_patients, tmp_path,
                                                         monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    from napari_radreport.viewer import add_docks
    from napari_radreport.widgets.session import session_for

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    viewer = make_napari_viewer()
    dock = add_docks(viewer)["Study"]
    paths = [str(p) for p in two_patients]
    asked: list[MixedPatients] = []
    dock.ask_mixed_patients = lambda exc: asked.append(exc) or False  # No
    dock.open_study(paths)
    qtbot.waitUntil(lambda: "Could not open" in dock.status.text(), timeout=10_000)
    assert len(asked) == 1 and asked[0].patients == 2 and len(viewer.layers) == 0

    box = dock.mixed_patients_box(asked[0])
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)
    assert "2 patients: PatientID, PatientName, PatientBirthDate differ" in box.text()
    assert "Doe" not in box.text() + box.detailedText() and "'A001' in jane.dcm" in box.detailedText()

    dock.ask_mixed_patients = lambda exc: asked.append(exc) or True  # Yes
    dock.open_study(paths)
    qtbot.waitUntil(lambda: len(viewer.layers) == 2 and dock._worker is None, timeout=10_000)
    assert len(asked) == 2 and len(dock.current_study.extra["patients"]) == 2
    assert "MIXED PATIENTS" in dock.info.text()

    viewer.layers.clear()
    session_for(viewer).update_settings(allow_mixed_patients=True)  # the Settings switch: no question
    dock.open_study(paths)
    qtbot.waitUntil(lambda: len(viewer.layers) == 2 and dock._worker is None, timeout=10_000)
    assert len(asked) == 2
