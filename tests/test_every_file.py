"""Every file in shared/data and in the pydicom and nibabel wheels opens or fails with one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from napari_radreport import StudyReadError, load_study
from napari_radreport._reader import get_reader


def _wheel_files() -> list[Path]:
    import nibabel.testing
    import pydicom.data

    pydicom_dir = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    files = [p for p in pydicom_dir.rglob("*") if p.is_file()]
    files += [p for p in Path(nibabel.testing.data_path).iterdir() if p.is_file() and p.suffix != ".pyc"]
    return sorted(files)


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _open_or_explain(path: Path) -> str:
    try:
        study = load_study(path)
    except StudyReadError as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert path.name in message or path.parent.name in message, message
        return "refused"
    assert study.images, path
    for image in study.images:
        assert image.array.size > 0
    assert study.to_layer_data()
    return "opened"


def test_wheel_test_files(tmp_path):
    files = _wheel_files()
    assert len(files) > 150
    outcomes = {}
    for path in files:
        assert get_reader(str(path)) in (None,) or callable(get_reader(str(path)))
        outcomes[path.name] = _open_or_explain(path)
    # Spot checks that the loop really opens and refuses what it should.
    assert outcomes["CT_small.dcm"] == "opened"
    assert outcomes["MR_small_jp2klossless.dcm"] == "opened"
    assert outcomes["MR_small_jpeg_ls_lossless.dcm"] == "opened"
    assert outcomes["MR_small_RLE.dcm"] == "opened"
    assert outcomes["example_nifti2.nii.gz"] == "opened"
    assert outcomes["test-SR.dcm"] == "refused"
    assert outcomes["MR_truncated.dcm"] == "refused"
    assert sum(o == "opened" for o in outcomes.values()) > 60


def test_shared_data_files_and_folders(shared_data):
    before = _listing(shared_data)
    entries = sorted(shared_data.rglob("*"))
    outcomes = {}
    for path in entries:
        reader = get_reader(str(path))
        outcomes[str(path.relative_to(shared_data))] = (_open_or_explain(path), reader is not None)
    assert _listing(shared_data) == before  # nothing written next to the user's files
    assert outcomes["ct/lung_dx_a0001_chest_kernelB"] == ("opened", True)
    assert outcomes["ct/totalseg_abdomen_dicom_j2k"] == ("opened", True)
    assert outcomes["ct/totalseg_abdomen_pelvis.nii.gz"] == ("opened", True)
    assert outcomes["xray/wg04_rg1_chest_cr_monochrome1.dcm"] == ("opened", True)
    assert outcomes["README.md"] == ("refused", False)
    assert outcomes["ct/lung_dx_a0001_tumour_boxes"] == ("refused", False)


@pytest.mark.parametrize("probe", [None, 3, "", "/no/such/path", ["/no/such/a", "/no/such/b"], [], b"\x00"])
def test_get_reader_never_raises(probe):
    assert get_reader(probe) is None


def test_reader_returns_layer_data_with_mm_geometry(chest_series):
    reader = get_reader(str(chest_series))
    assert reader is not None
    [(data, kwargs, layer_type)] = reader(str(chest_series))
    assert layer_type == "image" and data.shape == (64, 512, 512)
    assert kwargs["units"] == ("mm", "mm", "mm")
    assert kwargs["scale"] == pytest.approx([5.0, 0.841796875, 0.841796875])
    assert kwargs["contrast_limits"] == (-160.0, 240.0)  # soft-tissue window
    assert kwargs["metadata"]["study"].kind == "ct"


def test_unreadable_file_is_reported_not_crashing(tmp_path):
    secret = tmp_path / "locked.dcm"
    secret.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    if os.geteuid() != 0:
        secret.chmod(0)
    with pytest.raises(StudyReadError) as info:
        load_study(secret)
    assert "locked.dcm" in str(info.value)
