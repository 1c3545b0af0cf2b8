"""DICOM series on the real chest and J2K abdominal CTs, checked against SimpleITK and raw pydicom."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pydicom
import pytest

from napari_radreport import load_study


def _sitk_volume(folder):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _check_against_simpleitk(study, folder, n_points=400, seed=0):
    """HU at sampled voxels equals SimpleITK's value at the same LPS position."""
    import SimpleITK as sitk

    image = _sitk_volume(folder)
    reference = sitk.GetArrayFromImage(image)  # (k, j, i)
    rng = np.random.default_rng(seed)
    for _ in range(n_points):
        index = tuple(int(rng.integers(0, n)) for n in study.array.shape)
        lps = study.image.index_to_patient(index)
        i, j, k = np.rint(image.TransformPhysicalPointToContinuousIndex(tuple(lps))).astype(int)
        assert study.array[index] == reference[k, j, i]
    return image


def test_chest_series_geometry_and_hu_match_simpleitk(chest_series, chest_study):
    study = chest_study
    assert study.kind == "ct" and study.modality == "CT"
    assert study.array.shape == (64, 512, 512)
    assert study.spacing == pytest.approx((5.0, 0.841796875, 0.841796875))
    assert study.image.orientation == ("I", "P", "L")
    assert study.array.dtype == np.int16
    image = _check_against_simpleitk(study, chest_series)
    assert sorted(image.GetSpacing()) == pytest.approx(sorted(study.spacing))
    assert study.warnings == []
    assert study.tags.patient_id == "Lung_Dx-A0001"
    assert study.tags.study_date == "20070404"
    assert study.tags.series_uid.endswith("485641315")


def test_hounsfield_units_at_named_voxels(chest_series, chest_study):
    """Raw stored value + RescaleIntercept -1024 at a voxel found through the file's own position."""
    ds = pydicom.dcmread(chest_series / "1-30.dcm")
    raw = ds.pixel_array
    z = float(ds.ImagePositionPatient[2])
    slice_index = next(k for k in range(64)
                       if abs(chest_study.image.index_to_patient((k, 0, 0))[2] - z) < 1e-3)
    for row, col in [(256, 256), (100, 400), (300, 150)]:
        assert chest_study.array[slice_index, row, col] == int(raw[row, col]) - 1024
    # air outside the body and the dense spine: a sanity check on the HU scale
    assert chest_study.array[slice_index, 5, 5] <= -900


def test_slices_run_superior_to_inferior_whatever_the_file_names(chest_series, chest_study, tmp_path):
    z = [chest_study.image.index_to_patient((k, 0, 0))[2] for k in range(64)]
    assert z[0] == pytest.approx(-124.0) and z[-1] == pytest.approx(-439.0)
    assert np.all(np.diff(z) < 0)
    # names that sort the wrong way, lexicographically and numerically
    rng = np.random.default_rng(3)
    for k, f in enumerate(sorted(chest_series.glob("*.dcm"))):
        (tmp_path / f"{rng.integers(1e9):09d}_{63 - k}").write_bytes(f.read_bytes())
    shuffled = load_study(tmp_path)
    np.testing.assert_array_equal(shuffled.array, chest_study.array)


def test_tumour_box_centre_lands_at_the_same_world_point(shared_data, chest_series, chest_study):
    """Left-lower-lobe adenocarcinoma: the annotated box centre maps to one LPS point in every frame."""
    boxes = sorted((shared_data / "ct" / "lung_dx_a0001_tumour_boxes").glob("*.xml"))
    assert boxes
    by_uid = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f
              for f in chest_series.glob("*.dcm")}
    # Some boxes belong to slices of other series of the study: keep those of this series.
    matched = [b for b in boxes if b.stem in by_uid]
    assert len(matched) >= 5
    _, kwargs, _ = chest_study.to_layer_data()[0]
    image = _sitk_volume(chest_series)
    for box_file in matched:
        bndbox = ET.parse(box_file).getroot().find("object/bndbox")
        x = (int(bndbox.find("xmin").text) + int(bndbox.find("xmax").text)) // 2  # centre pixel
        y = (int(bndbox.find("ymin").text) + int(bndbox.find("ymax").text)) // 2
        ds = pydicom.dcmread(by_uid[box_file.stem])
        # DICOM PS3.3 C.7.6.2.1.1: P = S + col * dx * X + row * dy * Y
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        expected = ipp + x * dx * iop[:3] + y * dy * iop[3:]

        # the same point through the Study's geometry
        index = np.linalg.solve((chest_study.direction * np.array(chest_study.spacing)[:, None]).T,
                                expected - np.array(chest_study.origin))
        assert np.allclose(index, np.rint(index), atol=1e-3)
        k, row, col = np.rint(index).astype(int)
        assert chest_study.array[k, row, col] == int(ds.pixel_array[int(y), int(x)]) - 1024
        assert expected[0] > 0  # patient's left in LPS
        assert col > 256  # ... and on the right half of the screen (radiological convention)

        # through napari's world coordinates (translate + index * scale along each displayed axis)
        world = np.array(kwargs["translate"]) + index * np.array(kwargs["scale"])
        np.testing.assert_allclose(world @ chest_study.direction, expected, atol=1e-6)

        # and through SimpleITK
        i, j, kk = np.rint(image.TransformPhysicalPointToContinuousIndex(tuple(expected))).astype(int)
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((int(i), int(j), int(kk))),
                                   chest_study.image.index_to_patient((k, row, col)), atol=1e-4)


def test_j2k_series_with_empty_uids_matches_simpleitk(j2k_series):
    study = load_study(j2k_series)
    assert study.kind == "ct"
    assert study.array.shape == (20, 512, 512)
    assert study.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))  # position step, not SliceThickness 3
    assert any("SliceThickness 3 mm differs" in n for n in study.notes)
    assert any("SeriesInstanceUID is empty" in n for n in study.notes)
    assert len(study.series) == 1 and study.series[0].uid == ""
    _check_against_simpleitk(study, j2k_series)


def test_one_file_opens_its_whole_series(chest_series, chest_study):
    study = load_study(chest_series / "1-17.dcm")
    np.testing.assert_array_equal(study.array, chest_study.array)


def test_a_list_of_files_opens_only_those_slices(chest_series):
    files = [chest_series / f"1-{k:02d}.dcm" for k in (12, 10, 11)]
    study = load_study(files)
    assert study.array.shape == (3, 512, 512)
