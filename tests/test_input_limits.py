"""Input limits: lying headers refused before any voxel is read, picture bombs, library errors as one line,
NaN/inf voxels and invalid geometry or rescale never silent, strict JSON, a bounded sibling scan."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_radreport import StudyReadError, load_study
from napari_radreport.io import limits, loader

HUGE = 10**15  # a budget no test reaches: isolates the header-against-file checks
AS_LIMIT = 1536 * 2**20  # the address-space limit the lying headers are read under


# -- files with lying headers -----------------------------------------------------------------------------

def _lying_nifti(path: Path, shape, dtype=np.float32, data_bytes: int = 1024) -> Path:
    """A NIfTI-1 header claiming ``shape`` voxels followed by only ``data_bytes`` bytes of data."""
    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352  # 348-byte header, 4 bytes of no extension, then the data
    raw = header.binaryblock + b"\0" * 4 + bytes(data_bytes)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _run_limited(code: str, *, env: dict | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose address space is capped at AS_LIMIT (torch is never imported)."""
    script = (f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({AS_LIMIT}, {AS_LIMIT}))\n"
              + textwrap.dedent(code))
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "PYTHONWARNINGS": "ignore"}
    child_env.pop(limits.MAX_VOLUME_ENV, None)
    child_env.update(env or {})
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env,
                          timeout=120)


_LOAD_AND_REPORT = """
    from napari_radreport import StudyReadError, load_study
    try:
        study = load_study({path!r}{kwargs})
    except StudyReadError as exc:
        print("REFUSED", exc)
    else:
        print("OPENED", study.array.shape)
"""


def _load_limited(path: Path, kwargs: str = "", env: dict | None = None) -> str:
    result = _run_limited(_LOAD_AND_REPORT.format(path=str(path), kwargs=kwargs), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.parametrize("name", ["claims.nii", "claims.nii.gz"])
def test_a_1kb_nifti_claiming_2000_cubed_voxels_is_refused_against_its_file(tmp_path, name):
    path = _lying_nifti(tmp_path / name, (2000, 2000, 2000))
    with pytest.raises(StudyReadError) as info:
        load_study(path, max_bytes=HUGE)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: the header claims 2000 x 2000 x 2000 float32")
    assert "(30,518 MB)" in message
    expected = "holds 1,024 bytes of voxel data" if name.endswith(".nii") else "unpacks to at most"
    assert expected in message


@pytest.mark.parametrize(("name", "shape"), [("claims.nii", (2000,) * 3), ("claims.nii.gz", (2000,) * 3),
                                             ("claims500.nii", (500,) * 3), ("claims500.nii.gz", (500,) * 3)])
def test_lying_nifti_headers_are_refused_under_an_address_space_limit(tmp_path, name, shape):
    path = _lying_nifti(tmp_path / name, shape)
    # No budget to hide behind: the header-against-file check alone must refuse it, before any allocation.
    out = _load_limited(path, kwargs=f", max_bytes={HUGE}")
    claim = f"REFUSED {path}: the header claims {shape[0]} x {shape[1]} x {shape[2]} float32"
    assert out.startswith(claim), out
    assert ("holds 1,024 bytes" if name.endswith(".nii") else "unpacks to at most") in out
    assert "MemoryError" not in out and "out of memory" not in out


def test_a_consistent_gzip_nifti_over_the_budget_is_refused_before_it_is_unpacked(tmp_path):
    """300^3 float32 zeros (103 MB) gzip to ~100 KB: the file is honest, the budget must refuse it."""
    path = tmp_path / "zeros.nii.gz"
    header = nibabel.Nifti1Header()
    header.set_data_shape((300, 300, 300))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(header.binaryblock + b"\0" * 4)
        for _ in range(300):
            handle.write(bytes(300 * 300 * 4))
    out = _load_limited(path, env={limits.MAX_VOLUME_ENV: "50"})
    assert out.startswith(f"REFUSED {path}: the header describes a volume of 300 x 300 x 300 float32 "
                          "(103 MB), over the memory budget of 50 MB (RADREPORT_MAX_VOLUME_MB=50)"), out
    assert "raise it with RADREPORT_MAX_VOLUME_MB=<MB> or load_study(..., max_bytes=...)" in out


def test_the_default_budget_is_half_of_the_memory_left_under_an_address_space_limit():
    result = _run_limited("""
        import resource
        from napari_radreport.io.limits import MemoryBudget, available_memory
        room, what = available_memory()
        budget = MemoryBudget.resolve()
        print(room, what, budget.limit, budget.source, sep="|")
    """)
    room, what, limit, source = result.stdout.strip().split("|")
    assert what == "address space left under RLIMIT_AS" and 0 < int(room) < AS_LIMIT
    assert int(limit) == int(int(room) * 0.5) and source.startswith("half of the")


def test_budget_counts_the_array_after_rescale_and_names_how_to_raise_it(tmp_path, monkeypatch):
    monkeypatch.delenv(limits.MAX_VOLUME_ENV, raising=False)
    data = np.arange(64**3, dtype=np.int16).reshape(64, 64, 64) % 1000
    plain, scaled = tmp_path / "plain.nii.gz", tmp_path / "scaled.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(plain))
    img = nibabel.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -1000.0)
    nibabel.save(img, str(scaled))
    assert load_study(plain, max_bytes=600_000).array.dtype == np.int16  # 512 KB as int16
    with pytest.raises(StudyReadError) as info:  # 1 MB once scaled to float32
        load_study(scaled, max_bytes=600_000)
    assert str(info.value) == (
        f"{scaled}: the header describes a volume of 64 x 64 x 64 float32 (1.0 MB), over the memory budget "
        "of 600,000 bytes (max_bytes=600000); raise it with RADREPORT_MAX_VOLUME_MB=<MB> or "
        "load_study(..., max_bytes=...)")
    monkeypatch.setenv(limits.MAX_VOLUME_ENV, "0.5")
    with pytest.raises(StudyReadError, match=r"over the memory budget of 524,288 bytes "
                                             r"\(RADREPORT_MAX_VOLUME_MB=0\.5\)"):
        load_study(scaled)
    monkeypatch.setenv(limits.MAX_VOLUME_ENV, "2")
    assert load_study(scaled).array.dtype == np.float32
    monkeypatch.setenv(limits.MAX_VOLUME_ENV, "lots")
    with pytest.raises(StudyReadError, match="RADREPORT_MAX_VOLUME_MB='lots': give a positive number"):
        load_study(scaled)


def test_default_budget_is_a_share_of_the_available_memory(monkeypatch):
    monkeypatch.delenv(limits.MAX_VOLUME_ENV, raising=False)
    monkeypatch.setattr(limits, "available_memory", lambda: (1000 * 2**20, "available memory"))
    budget = limits.MemoryBudget.resolve()
    assert budget.limit == 500 * 2**20 and budget.source == "half of the 1,000 MB of available memory"


# -- pictures ---------------------------------------------------------------------------------------------

def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1x1 1-bit PNG whose IHDR (CRC recomputed) claims ``width`` x ``height`` pixels."""
    from PIL import Image

    Image.new("1", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"IHDR")
    raw[start + 4:start + 12] = struct.pack(">II", width, height)
    raw[start + 17:start + 21] = struct.pack(">I", zlib.crc32(bytes(raw[start:start + 17])))
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (10000, 9000)])
def test_a_png_decompression_bomb_is_one_line_naming_the_file_and_its_pixels(tmp_path, width, height):
    """20000^2 is over twice Pillow's limit (it raises in Image.open); 10000 x 9000 is between 1x and 2x
    (Pillow only warns): both are refused at PIL.Image.MAX_IMAGE_PIXELS."""
    from PIL import Image

    path = _png_claiming(tmp_path / "bomb.png", width, height)
    with pytest.raises(StudyReadError) as info:
        load_study(path, max_bytes=HUGE)
    assert str(info.value).startswith(f"{path}: {width * height:,} pixels, over the "
                                      f"{Image.MAX_IMAGE_PIXELS:,}-pixel limit for one picture")


def test_a_png_whose_rows_cannot_fit_in_its_file_is_refused(tmp_path):
    path = _png_claiming(tmp_path / "forged.png", 9000, 9000)  # under the pixel limit, 10 MB of rows at least
    with pytest.raises(StudyReadError) as info:
        load_study(path, max_bytes=HUGE)
    size = path.stat().st_size
    assert str(info.value) == (f"{path}: the header claims 9000 x 9000 pixels (10,134,000 bytes of rows at "
                               f"least) but {size:,} bytes of PNG unpack to at most {1032 * size:,}: "
                               "corrupt or forged header")


def test_a_picture_counts_against_the_budget(shared_data):
    png = shared_data / "xray" / "nih_00000001_000_cardiomegaly.png"
    with pytest.raises(StudyReadError, match=r"describes an image of 512 x 512 uint8 \(262,144 bytes\), over "
                                             r"the memory budget of 100,000 bytes"):
        load_study(png, max_bytes=100_000)


# -- DICOM ------------------------------------------------------------------------------------------------

def _ct_slice(path: Path, z: float = 0.0, edit=None) -> Path:
    """pydicom's CT_small.dcm (128 x 128 int16) at height ``z`` with its own SOP instance, then ``edit``."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.ImagePositionPatient = [-158.0, -179.0, z]
    ds.SOPInstanceUID = generate_uid()
    if edit is not None:
        edit(ds)
    ds.save_as(path)
    return path


def test_a_dicom_header_claiming_more_pixels_than_its_data_holds_is_refused(tmp_path):
    def grow(ds):
        ds.Rows = ds.Columns = 30000  # 1.7 GB claimed, 32 KB stored

    path = _ct_slice(tmp_path / "huge.dcm", edit=grow)
    out = _load_limited(path, kwargs=f", max_bytes={HUGE}")
    assert out == (f"REFUSED {path}: PixelData holds 32,768 bytes but 30000 x 30000 x 1 frame(s) x "
                   "1 sample(s) at 16 bits claim 1,800,000,000")


def test_a_dicom_series_counts_against_the_budget(tmp_path):
    for i in range(8):
        _ct_slice(tmp_path / f"s{i:02d}.dcm", z=5.0 * i)
    with pytest.raises(StudyReadError) as info:
        load_study(tmp_path, max_bytes=200_000)
    assert str(info.value).startswith(f"{tmp_path} (8 files of series 0): the header describes a volume of "
                                      "8 x 128 x 128 ")
    assert "over the memory budget of 200,000 bytes (max_bytes=200000)" in str(info.value)
    assert load_study(tmp_path, max_bytes=600_000).array.shape == (8, 128, 128)


@pytest.mark.parametrize("slope", ["0", "nan", "inf", "abc"])
def test_an_invalid_rescale_slope_is_a_warning_naming_the_tag(tmp_path, slope):
    def bad_slope(ds):
        ds.add_new(0x00281053, "LO", slope)  # RescaleSlope, written as text so any value survives

    path = _ct_slice(tmp_path / "slope.dcm", edit=bad_slope)
    study = load_study(path)
    assert (f"RescaleSlope '{slope}' is not a valid nonzero number: 1 used in 1 of 1 image(s) "
            "(e.g. slope.dcm); values may not be in HU") in study.warnings
    raw = pydicom.dcmread(path).pixel_array.astype(np.int64)
    np.testing.assert_array_equal(np.sort(study.array.ravel()), np.sort((raw - 1024).ravel()))


@pytest.mark.parametrize(("keyword", "tag", "value", "expected"), [
    ("ImagePositionPatient", 0x00200032, ["abc", "1", "2"], "ImagePositionPatient 'abc\\1\\2' is not three"),
    ("ImageOrientationPatient", 0x00200037, ["0"] * 6,
     "ImageOrientationPatient '0\\0\\0\\0\\0\\0' is not two perpendicular unit vectors"),
])
def test_a_slice_that_cannot_be_placed_is_refused_not_shown_flat(tmp_path, keyword, tag, value, expected):
    path = _ct_slice(tmp_path / "unplaced.dcm", edit=lambda ds: ds.add_new(tag, "LO", value))
    with pytest.raises(StudyReadError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {expected}") and message.endswith("; the image cannot be placed")


def test_a_misplaced_slice_beside_a_series_is_left_out_with_a_warning(tmp_path):
    for i in range(4):
        _ct_slice(tmp_path / f"s{i:02d}.dcm", z=5.0 * i)
    _ct_slice(tmp_path / "s99.dcm", z=20.0, edit=lambda ds: ds.add_new(0x00200037, "LO", ["0"] * 6))
    study = load_study(tmp_path)
    assert study.array.shape == (4, 128, 128) and study.kind == "ct"
    assert any(w.startswith("1 image(s) with an invalid position or orientation not opened (e.g. s99.dcm")
               for w in study.warnings)


def _enhanced(path: Path, *, position=None, orientation=None, slope=None, frames: int = 4) -> Path:
    """A small Enhanced CT object (8 x 8 int16 frames 2 mm apart); frame 2 gets ``position``/``orientation``
    (stored as text) when given, the shared rescale ``slope`` likewise."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.NumberOfFrames, ds.Rows, ds.Columns = "CT", frames, 8, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    measures, plane_orientation, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 2.0
    plane_orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform.RescaleIntercept = -1024
    transform.add_new(0x00281053, "LO", slope if slope is not None else "1")
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane_orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for i in range(frames):
        item, plane = Dataset(), Dataset()
        if i == 1 and position is not None:
            plane.add_new(0x00200032, "LO", position)
        else:
            plane.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        item.PlanePositionSequence = Sequence([plane])
        if i == 1 and orientation is not None:
            own = Dataset()
            own.add_new(0x00200037, "LO", orientation)
            item.PlaneOrientationSequence = Sequence([own])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    ds.PixelData = np.arange(frames * 64, dtype=np.int16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_enhanced_ct_with_text_in_a_frame_position_is_one_line_naming_the_file(tmp_path):
    assert load_study(_enhanced(tmp_path / "good.dcm")).array.shape == (4, 8, 8)
    path = _enhanced(tmp_path / "text.dcm", position=["left", "0", "0"])
    with pytest.raises(StudyReadError) as info:
        load_study(path)
    assert str(info.value) == (f"{path} frame 2: ImagePositionPatient 'left\\0\\0' is not three finite "
                               "numbers; the frame cannot be placed")


def test_an_enhanced_ct_with_a_zero_orientation_is_refused(tmp_path):
    path = _enhanced(tmp_path / "zero.dcm", orientation=["0"] * 6)
    with pytest.raises(StudyReadError, match=r"zero\.dcm frame 2: ImageOrientationPatient '0\\0\\0\\0\\0\\0' "
                                             r"is not two perpendicular unit vectors"):
        load_study(path)


def test_an_enhanced_ct_with_rescale_slope_zero_warns_per_frame(tmp_path):
    study = load_study(_enhanced(tmp_path / "slope0.dcm", slope="0"))
    assert ("RescaleSlope '0' is not a valid nonzero number: 1 used in 4 of 4 image(s) (e.g. slope0.dcm "
            "frame 1); values may not be in HU") in study.warnings
    assert study.image.value_range() == (-1024.0, -1024.0 + 255)


def test_opening_one_file_reads_a_bounded_number_of_siblings(tmp_path, monkeypatch):
    for i in range(9):
        _ct_slice(tmp_path / f"s{i:02d}.dcm", z=5.0 * i)
    read = []
    original = loader.read_header
    monkeypatch.setattr(loader, "read_header", lambda p: read.append(Path(p).name) or original(p))
    monkeypatch.setattr(loader, "MAX_SIBLING_HEADERS", 4)
    study = load_study(tmp_path / "s04.dcm")
    assert study.array.shape == (5, 128, 128)  # the file and its 4 nearest siblings by name
    assert sorted(Path(s).name for s in study.source) == [f"s{i:02d}.dcm" for i in range(2, 7)]
    assert ("the folder holds 9 files: only the 4 nearest to s04.dcm by name were read; open the folder to "
            "read them all") in study.notes


# -- values and geometry ----------------------------------------------------------------------------------

def test_nan_voxels_in_a_ct_nifti_are_counted_in_a_warning(tmp_path):
    data = np.full((20, 20, 20), -1000.0, dtype=np.float32)
    data[5:15, 5:15, 5:15] = 40.0
    data[0, 0, :3] = 1500.0
    data[19, 19, :10] = np.nan
    data[19, 18, 0] = np.inf
    path = tmp_path / "nan.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(path))
    study = load_study(path)
    assert ("11 of 8,000 voxels (0.14%) are NaN or infinite (no value): kept as they are, left out of the "
            "value range and contrast") in study.warnings
    assert study.kind == "ct" and study.image.value_range() == (-1000.0, 1500.0)
    assert int(np.isnan(study.array).sum()) == 10  # the voxels themselves are not altered
    volume = load_study(path, modality="MR")
    assert np.all(np.isfinite(volume.to_layer_data()[0][1]["contrast_limits"]))


def test_a_nifti_of_nan_only_is_refused(tmp_path):
    path = tmp_path / "void.nii"
    nibabel.save(nibabel.Nifti1Image(np.full((4, 4, 4), np.nan, dtype=np.float32), np.eye(4)), str(path))
    with pytest.raises(StudyReadError, match=r"void\.nii: all 64 voxels are NaN or infinite; nothing to "):
        load_study(path)


def _nifti(path: Path, affine, *, sform: int = 1, qform: int = 0, zooms=None, slope=None) -> Path:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    header = nibabel.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.int16)
    header.set_sform(np.asarray(affine, dtype=float), code=sform)
    header.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=qform)
    if zooms is not None:
        header["pixdim"][1:4] = zooms
    if slope is not None:
        header["scl_slope"], header["scl_inter"] = slope, 0.0
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\0" * 4 + data.tobytes(order="F"))
    return path


def test_a_zero_orientation_affine_is_refused(tmp_path):
    path = _nifti(tmp_path / "zero.nii", np.diag([0.0, 0.0, 0.0, 1.0]), sform=2)
    with pytest.raises(StudyReadError) as info:
        load_study(path)
    assert str(info.value) == (f"{path}: the sform (code 2) has a zero orientation matrix: the volume cannot "
                               "be placed in patient space")


def test_an_invalid_sform_falls_back_to_a_valid_qform_with_a_warning(tmp_path):
    affine = np.eye(4)
    affine[0, 0] = np.nan
    study = load_study(_nifti(tmp_path / "nan_sform.nii", affine, sform=2, qform=1))
    assert "sform (code 2) holds NaN or infinite values: the qform (code 1) is used" in study.warnings
    assert study.spacing == pytest.approx((2.0, 2.0, 2.0))


def test_zero_voxel_sizes_without_a_form_become_1_mm_with_a_warning(tmp_path):
    study = load_study(_nifti(tmp_path / "pixdim.nii", np.eye(4), sform=0, qform=0, zooms=(0.0, np.nan, 3.0)))
    assert "header: pixdim[1,2,3] should be non-zero; opened with nibabel's fix" in study.warnings
    assert any(w.startswith("pixdim voxel size (0.0, nan, 3.0) has zero or invalid entries: 1 mm used")
               for w in study.warnings)
    assert sorted(study.spacing) == pytest.approx([1.0, 1.0, 3.0])


def test_an_infinite_nifti_scale_factor_is_a_warning(tmp_path):
    study = load_study(_nifti(tmp_path / "inf.nii", np.eye(4), slope=np.inf))
    assert "scl_slope inf is not a valid scale factor: voxels shown unscaled" in study.warnings
    assert study.array.dtype == np.int16


# -- errors and JSON --------------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [ValueError("bad value"), KeyError("Rows"), struct.error("unpack requires"),
                                   zlib.error("Error -3 while decompressing")])
def test_a_library_error_on_a_malformed_file_becomes_one_line_naming_the_file(tmp_path, monkeypatch, error):
    path = _nifti(tmp_path / "any.nii", np.eye(4))

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(loader, "read_nifti", fail)
    with pytest.raises(StudyReadError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}: could not be read ({type(error).__name__}: ")
    assert "\n" not in str(info.value) and info.value.__cause__ is error


def test_a_programming_error_is_not_disguised_as_a_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "read_nifti", lambda *a, **k: None.shape)
    with pytest.raises(AttributeError):
        load_study(_nifti(tmp_path / "any.nii", np.eye(4)))


def test_summary_maps_nan_and_inf_to_null_for_strict_json():
    from napari_radreport.io import ImageData, Study

    image = ImageData(array=np.zeros((2, 3, 4), dtype=np.float32), spacing=(np.nan, 1.0, np.float32(np.inf)),
                      modality="CT", origin=(0.0, float("nan"), 0.0), direction=np.eye(3))
    study = Study(kind="ct", images=[image], extra={"original_affine_ras": [[np.nan, 0], [0, 1]]})
    text = json.dumps(study.summary(), allow_nan=False)
    summary = json.loads(text)
    assert summary["spacing_mm"] == [None, 1.0, None] and summary["origin_mm_lps"] == [0.0, None, 0.0]
    assert summary["original_affine_ras"] == [[None, 0], [0, 1]]


def test_info_json_is_strict_for_a_volume_with_nan_voxels(tmp_path, capsys):
    from napari_radreport.cli import main

    data = np.linspace(-1000, 1000, 8000, dtype=np.float32).reshape(20, 20, 20)
    data[10, 10, 10] = np.nan
    path = tmp_path / "nan.nii"
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(path))
    assert main(["info", str(path), "--json"]) == 0

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON")

    info = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert info["value_range"] == [-1000.0, 1000.0]
    assert any("1 of 8,000 voxels" in w for w in info["warnings"])
