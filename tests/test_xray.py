"""Chest radiograph sets: PNG/JPEG and DICOM CR, MONOCHROME1, spacing, view position, order."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from napari_radreport import StudyReadError, load_study


def test_monochrome1_cr_is_inverted_and_spacing_is_unknown(cr_monochrome1):
    study = load_study(cr_monochrome1)
    assert study.kind == "xray_set"
    image = study.images[0]
    raw = pydicom.dcmread(cr_monochrome1).pixel_array
    np.testing.assert_array_equal(image.array.astype(np.int64), (2**15 - 1) - raw.astype(np.int64))
    assert image.spacing == (None, None)  # PixelSpacing 0\0 means unknown, never 0
    assert image.view_position == "PA"
    assert image.file_window == (32767 - 15000, 30000)
    assert any("MONOCHROME1 inverted" in n for n in study.notes)
    _, kwargs, _ = study.to_layer_data()[0]
    assert kwargs["units"] == ("pixel", "pixel") and kwargs["scale"] == (1.0, 1.0)
    assert kwargs["contrast_limits"] == (32767 - 15000 - 15000, 32767 - 15000 + 15000)


def test_imager_pixel_spacing_is_used_when_pixel_spacing_is_missing(cr_monochrome1, tmp_path):
    ds = pydicom.dcmread(cr_monochrome1)
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.143, 0.143]
    ds.ViewPosition = "LL"
    path = tmp_path / "lateral.dcm"
    ds.save_as(path)
    image = load_study(path).images[0]
    assert image.spacing == pytest.approx((0.143, 0.143))
    assert image.view_position == "LATERAL"
    _, kwargs, _ = load_study(path).to_layer_data()[0]
    assert kwargs["units"] == ("mm", "mm")


def test_a_set_keeps_the_given_order_and_images_stay_separate(shared_data):
    a = shared_data / "xray" / "nih_00027426_000_no_finding.png"
    b = shared_data / "xray" / "nih_00000001_000_cardiomegaly.png"
    study = load_study([a, b])
    assert [im.label for im in study.images] == [a.name, b.name]
    layers = study.to_layer_data()
    assert len(layers) == 2
    x0, x1 = layers[0][1]["translate"][1], layers[1][1]["translate"][1]
    assert x1 >= x0 + 512  # side by side, left to right in set order
    assert layers[0][1]["metadata"]["study"] is study


def test_colour_figure_crops_become_grayscale_with_a_note(shared_data):
    folder = shared_data / "xray" / "open_access_cc_by"
    study = load_study(folder)
    assert len(study.images) == 5
    assert all(im.array.ndim == 2 for im in study.images)
    assert any("converted to grayscale" in n for n in study.notes)
    assert any("use the first 4" in n for n in study.notes)


def test_sixteen_bit_png_keeps_its_depth(tmp_path):
    from PIL import Image

    data = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 13).astype(np.uint16)
    Image.fromarray(data).save(tmp_path / "cxr16.png")
    image = load_study(tmp_path / "cxr16.png").images[0]
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, data)


def test_truncated_jpeg_gives_one_line_naming_the_file(shared_data, tmp_path):
    source = shared_data / "xray" / "open_access_cc_by" / "41182_2020_203_Fig3_HTML.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(source.read_bytes()[:2000])
    with pytest.raises(StudyReadError) as info:
        load_study(broken)
    assert "broken.jpg" in str(info.value) and "\n" not in str(info.value)


def test_mixing_ct_slices_and_pictures_is_refused(chest_series, shared_data):
    with pytest.raises(StudyReadError, match="mixes CT/MR slices with PNG/JPEG"):
        load_study([chest_series / "1-01.dcm", shared_data / "xray" / "nih_00000001_000_cardiomegaly.png"])


def test_dicom_and_png_radiographs_keep_the_given_order(shared_data, cr_monochrome1):
    png = shared_data / "xray" / "nih_00000001_000_cardiomegaly.png"
    assert [im.label for im in load_study([png, cr_monochrome1]).images] == [png.name, cr_monochrome1.name]
    assert [im.label for im in load_study([cr_monochrome1, png]).images] == [cr_monochrome1.name, png.name]


def test_a_folder_set_is_in_path_order(shared_data):
    folder = shared_data / "xray"
    expected = [p.name for p in sorted((p for p in folder.rglob("*") if p.is_file()), key=str)
                if p.suffix in (".png", ".jpg", ".dcm")]
    labels = [im.label for im in load_study(folder).images]
    assert labels == expected
    assert labels[-1] == "wg04_rg1_chest_cr_monochrome1.dcm"  # the DICOM is not put first
