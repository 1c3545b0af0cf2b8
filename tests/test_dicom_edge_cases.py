"""Real chest slices rewritten with one thing changed: localizers, gaps, tilt, several series, enhanced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_radreport import StudyReadError, load_study


def _copy_slices(src: Path, dst: Path, numbers, edit=None) -> list[Path]:
    """Copy chosen slices 1-NN.dcm, optionally editing each dataset (edit(ds, position_in_list))."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for i, n in enumerate(numbers):
        ds = pydicom.dcmread(src / f"1-{n:02d}.dcm")
        if edit is not None:
            edit(ds, i)
        path = dst / f"slice_{n:02d}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


def test_missing_slices_are_reported_as_a_gap(chest_series, tmp_path):
    _copy_slices(chest_series, tmp_path, [20, 21, 22, 25, 26, 27])
    study = load_study(tmp_path)
    assert study.array.shape[0] == 6
    assert any(w.startswith("gap: about 2 slice(s) missing") for w in study.warnings)


def test_variable_spacing_is_reported(chest_series, tmp_path):
    def shift(ds, i):
        if i == 3:
            ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 1.5

    _copy_slices(chest_series, tmp_path, range(20, 28), shift)
    study = load_study(tmp_path)
    assert any(w.startswith("variable slice spacing") for w in study.warnings)


def test_gantry_tilt_is_detected(chest_series, tmp_path):
    tilt = np.radians(12.0)

    def shear(ds, i):
        z = float(ds.ImagePositionPatient[2])
        ds.ImagePositionPatient[1] = float(ds.ImagePositionPatient[1]) + (z + 124.0) * np.tan(tilt)
        ds.GantryDetectorTilt = 12

    _copy_slices(chest_series, tmp_path, range(10, 20), shear)
    study = load_study(tmp_path)
    assert any(w.startswith("gantry tilt of 12.0 deg") for w in study.warnings)


def test_localizer_is_excluded_and_listed(chest_series, tmp_path):
    _copy_slices(chest_series, tmp_path, range(30, 40))

    def scout(ds, i):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
        ds.SOPInstanceUID = generate_uid()

    _copy_slices(chest_series, tmp_path / "scout", [1], scout)
    study = load_study(tmp_path)
    assert study.array.shape == (10, 512, 512)
    roles = sorted(s.role for s in study.series)
    assert roles == ["localizer", "volume"]
    assert study.chosen_series.role == "volume"


def test_two_series_in_one_folder_are_never_merged(chest_series, j2k_series, tmp_path):
    _copy_slices(chest_series, tmp_path / "chest", range(1, 65))
    for f in j2k_series.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    study = load_study(tmp_path)
    assert study.array.shape == (64, 512, 512)  # the CT series with most slices
    assert len(study.series) == 2
    assert any("1 other series" in n for n in study.notes)
    other = next(s for s in study.series if not s.chosen)
    second = load_study(tmp_path, series=other.index)
    assert second.array.shape == (20, 512, 512)
    with pytest.raises(StudyReadError, match="series index 7 out of range"):
        load_study(tmp_path, series=7)


def test_images_at_the_same_positions_open_as_four_d(chest_series, tmp_path):
    _copy_slices(chest_series, tmp_path / "t0", range(20, 24),
                 lambda ds, i: setattr(ds, "AcquisitionNumber", 1))

    def second_phase(ds, i):
        ds.AcquisitionNumber = 2
        ds.SOPInstanceUID = generate_uid()

    _copy_slices(chest_series, tmp_path / "t1", range(20, 24), second_phase)
    study = load_study(tmp_path)
    assert study.array.shape == (2, 4, 512, 512)
    assert any("opened as 4-D" in n for n in study.notes)


def test_non_image_objects_are_refused_by_name():
    from pydicom.data import get_testdata_file

    for name, what in [("test-SR.dcm", "structured report"), ("rtdose.dcm", "RT dose"),
                       ("waveform_ecg.dcm", "ECG"), ("rtstruct.dcm", "RT structure set"),
                       ("liver_1frame.dcm", "segmentation")]:
        with pytest.raises(StudyReadError) as info:
            load_study(get_testdata_file(name))
        message = str(info.value)
        assert name in message and what in message and "\n" not in message


def test_truncated_pixel_data_names_the_file():
    from pydicom.data import get_testdata_file

    # The header's PixelData length runs past the end of the file: refused before decoding.
    with pytest.raises(StudyReadError, match=r"MR_truncated\.dcm: truncated: PixelData claims 8,192 bytes "
                                             r"from byte 1,500 but the file ends 62 bytes short"):
        load_study([get_testdata_file("MR_truncated.dcm")])


def _enhanced_from_slices(files: list[Path], out: Path) -> None:
    """An Enhanced CT object (one file, per-frame positions) built from real single-frame slices."""
    slices = [pydicom.dcmread(f) for f in files]
    first = slices[0]
    ds = Dataset()
    for keyword in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Rows", "Columns",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                    "PhotometricInterpretation"):
        setattr(ds, keyword, getattr(first, keyword))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(slices)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation = Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    transform = Dataset()
    transform.RescaleSlope = first.RescaleSlope
    transform.RescaleIntercept = first.RescaleIntercept
    transform.RescaleType = "HU"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for s in reversed(slices):  # frame order deliberately not the anatomical order
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = s.ImagePositionPatient
        item.PlanePositionSequence = Sequence([plane])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = b"".join(s.pixel_array.tobytes() for s in reversed(slices))
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out, enforce_file_format=True)


def test_enhanced_multiframe_ct_equals_the_same_slices_as_a_series(chest_series, tmp_path):
    files = [chest_series / f"1-{n:02d}.dcm" for n in range(24, 32)]
    _enhanced_from_slices(files, tmp_path / "enhanced.dcm")
    enhanced = load_study(tmp_path / "enhanced.dcm")
    series = load_study(files)
    assert any("enhanced multi-frame" in n for n in enhanced.notes)
    np.testing.assert_array_equal(enhanced.array, series.array)
    np.testing.assert_allclose(enhanced.origin, series.origin)
    assert enhanced.spacing == pytest.approx(series.spacing)


def test_multiframe_without_positions_is_refused():
    from pydicom.data import get_testdata_file

    with pytest.raises(StudyReadError, match="without per-frame positions"):
        load_study(get_testdata_file("SC_rgb_rle_2frame.dcm"))
