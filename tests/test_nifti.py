"""NIfTI reader against nibabel's own affine arithmetic, on the real abdominal CT and variants of it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_radreport import StudyReadError, load_study

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _check_against_nibabel(study, nifti_path, n_points=300, seed=0):
    """Every sampled voxel of the study holds the value nibabel finds at the same patient position."""
    import nibabel

    img = nibabel.load(str(nifti_path))
    reference = np.asarray(img.dataobj)
    inverse = np.linalg.inv(img.affine)
    rng = np.random.default_rng(seed)
    shape = study.array.shape
    for _ in range(n_points):
        index = tuple(int(rng.integers(0, n)) for n in shape)
        lps = study.image.index_to_patient(index)
        ras = RAS_TO_LPS @ lps
        ijk = np.rint(inverse[:3, :3] @ ras + inverse[:3, 3]).astype(int)
        assert study.array[index] == pytest.approx(float(reference[tuple(ijk)]), rel=1e-6, abs=1e-4)


def test_abdominal_ct_geometry_matches_nibabel(abdomen_nifti):
    study = load_study(abdomen_nifti)
    assert study.kind == "ct"
    assert study.array.shape == (112, 101, 122)  # S->I, A->P, R->L
    assert study.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert study.image.orientation == ("I", "P", "L")
    assert study.array.dtype == np.int32
    assert study.image.value_range() == (-1207.0, 3382.0)
    assert len(study.extra["original_affine_ras"]) == 4
    assert any("assumed CT" in n for n in study.notes)
    _check_against_nibabel(study, abdomen_nifti)


def test_first_slice_is_the_most_superior_and_first_column_the_patient_right(abdomen_nifti):
    study = load_study(abdomen_nifti)
    top = study.image.index_to_patient((0, 50, 60))
    bottom = study.image.index_to_patient((111, 50, 60))
    assert top[2] > bottom[2]  # LPS z is superior
    right = study.image.index_to_patient((50, 50, 0))
    left = study.image.index_to_patient((50, 50, 121))
    assert left[0] > right[0]  # LPS x grows toward the patient's left
    front = study.image.index_to_patient((50, 0, 60))
    back = study.image.index_to_patient((50, 100, 60))
    assert back[1] > front[1]  # LPS y grows posteriorly


@pytest.mark.parametrize("axcodes", [("L", "P", "I"), ("P", "S", "R"), ("I", "A", "L"), ("R", "A", "S")])
def test_any_stored_orientation_opens_as_the_same_canonical_volume(abdomen_nifti, tmp_path, axcodes):
    import nibabel
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    img = nibabel.load(str(abdomen_nifti))
    moved = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(axcodes)))
    path = tmp_path / f"reoriented_{''.join(axcodes)}.nii.gz"
    nibabel.save(moved, str(path))
    reference = load_study(abdomen_nifti)
    study = load_study(path)
    np.testing.assert_array_equal(study.array, reference.array)
    np.testing.assert_allclose(study.origin, reference.origin, atol=1e-4)
    np.testing.assert_allclose(study.direction, reference.direction, atol=1e-6)


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_any_numeric_dtype_and_byte_order(tmp_path, dtype, byteorder):
    import nibabel

    rng = np.random.default_rng(1)
    data = (rng.random((6, 7, 8)) * 100).astype(dtype)
    header = nibabel.Nifti1Header()
    header.set_data_dtype(np.dtype(dtype).newbyteorder(byteorder))
    header = header.as_byteswapped(byteorder) if byteorder == ">" else header
    img = nibabel.Nifti1Image(data, np.diag([-2.0, -2.0, 2.0, 1.0]), header=header)
    path = tmp_path / f"volume_{dtype}_{'be' if byteorder == '>' else 'le'}.nii"
    nibabel.save(img, str(path))
    study = load_study(path)
    assert study.array.dtype.isnative
    assert study.array.dtype == np.dtype(dtype)
    # RAS diag(-2, -2, 2): i runs toward the left and j posteriorly (as displayed), k superiorly (flipped).
    np.testing.assert_array_equal(study.array, np.flip(np.transpose(data, (2, 1, 0)), axis=0))


def test_scaled_voxels_become_float_hu(tmp_path):
    import nibabel

    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nibabel.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -1000.0)
    path = tmp_path / "scaled.nii.gz"
    nibabel.save(img, str(path))
    study = load_study(path)
    assert study.array.dtype == np.float32
    assert sorted(study.array.ravel().tolist()) == sorted((data * 2.0 - 1000.0).ravel().tolist())


def test_oblique_volume_is_flagged_and_positions_stay_exact(abdomen_nifti, tmp_path):
    import nibabel

    img = nibabel.load(str(abdomen_nifti))
    angle = np.radians(15.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    path = tmp_path / "oblique.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.asarray(img.dataobj), rotation @ img.affine), str(path))
    study = load_study(path)
    assert any(w.startswith("oblique volume") and "15.0 deg" in w for w in study.warnings)
    _check_against_nibabel(study, path, n_points=100)


def test_four_d_volume_opens_with_a_note():
    from nibabel.testing import data_path

    study = load_study(f"{data_path}/example4d.nii.gz")
    assert study.array.ndim == 4
    assert any("4-D volume" in n for n in study.notes)
    layer_kwargs = study.to_layer_data()[0][1]
    assert len(layer_kwargs["scale"]) == 4 and layer_kwargs["units"][1:] == ("mm", "mm", "mm")


def test_header_only_nifti_names_the_missing_image_file():
    from nibabel.testing import data_path

    with pytest.raises(StudyReadError,
                       match=r"nifti1\.hdr: header only, its voxel data file nifti1\.img is missing"):
        load_study(f"{data_path}/nifti1.hdr")


def test_corrupt_nifti_gives_one_line(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(StudyReadError) as info:
        load_study(path)
    message = str(info.value)
    assert "broken.nii.gz" in message and "\n" not in message
