"""Warnings grouped and ranked: one line for all the gaps, tilt and obliquity first, repeats collapsed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_radreport import load_study
from napari_radreport.cli import main
from napari_radreport.io.dicom_volume import rescale_warnings
from napari_radreport.io.study import nonfinite_warning
from napari_radreport.io.warning_groups import KINDS, OTHER, RANKS, collapsed, kind_of, ranked

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STEP_MM = 2.5
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # slices stack along -x (toward the patient's right)
# 48 positions with 15 left out: twelve gaps of one slice and one of three (k 41-43), 13 gaps in all.
THIRTEEN_GAPS = [k for k in range(48) if k not in {3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 41, 42, 43}]


def _ct_series(folder: Path, ks: Iterable[int], *, orientation=AXIAL, tilt_deg: float = 0.0,
               edit: Callable[[Dataset, int], None] | None = None) -> Path:
    """One 8 x 8 CT slice per ``k`` at ``k * STEP_MM`` along the slice normal, every pixel storing ``k``;
    ``tilt_deg`` shears the positions as a tilted gantry does; ``edit(ds, k)`` changes a slice."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    for k in ks:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_IMAGE, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "GAPS01", k + 1
        height = k * STEP_MM
        position = normal * height + col * height * np.tan(np.radians(tilt_deg))
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], STEP_MM
        if tilt_deg:
            ds.GantryDetectorTilt = tilt_deg
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.full((8, 8), k, dtype=np.int16).tobytes()
        if edit is not None:
            edit(ds, k)
        ds.save_as(folder / f"k{k:03d}.dcm", enforce_file_format=True)
    return folder


def _value_problems(ds: Dataset, k: int) -> None:
    """Warnings that rank below geometry: a zero RescaleSlope on one slice, no patient identity on two."""
    if k == 0:
        ds.RescaleSlope = 0
    if k in (1, 2):
        del ds.PatientID


GAP_LINE = ("13 gaps in slice positions (about 15 slices missing in all), largest 10.00 mm between slices "
            "3 and 4 (usual 2.50 mm); napari shows the slices adjacent")


@pytest.fixture()
def tilted_with_gaps(tmp_path) -> Path:
    return _ct_series(tmp_path / "tilted", THIRTEEN_GAPS, tilt_deg=15.0, edit=_value_problems)


# -- a real series on disk ----------------------------------------------------------------------------------

def test_thirteen_gaps_and_a_tilt_give_the_tilt_first_then_one_gap_line(tilted_with_gaps):
    study = load_study(tilted_with_gaps)
    assert study.array.shape == (33, 8, 8)
    warnings = study.summary()["warnings"]
    assert warnings[0] == ("gantry tilt of 15.0 deg (GantryDetectorTilt 15): slices are sheared; "
                           "napari stacks them without the shear")
    assert warnings[1] == GAP_LINE
    assert [kind_of(w) for w in warnings] == ["tilt", "gaps", "rescale", "identity"]
    assert sum("gap" in w for w in warnings) == 1
    # The source order is unchanged; only the summary ranks.
    assert [kind_of(w) for w in study.warnings] == ["identity", "rescale", "tilt", "gaps"]


def test_the_gap_line_numbers_the_slices_as_napari_shows_them(tilted_with_gaps):
    study = load_study(tilted_with_gaps)  # superior (k 47) first: the largest gap is between k 44 and k 40
    assert (int(study.array[3, 0, 0]), int(study.array[4, 0, 0])) == (44, 40)
    assert "between slices 3 and 4 " in study.summary()["warnings"][1]


def test_radreport_info_prints_the_ranked_warnings(tilted_with_gaps, capsys):
    assert main(["info", str(tilted_with_gaps)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 4
    assert lines[0].startswith("warning: gantry tilt of 15.0 deg") and lines[1] == f"warning: {GAP_LINE}"
    assert lines[2].startswith("warning: RescaleSlope '0.0' is not a valid")
    assert lines[3].startswith("warning: patient identity unknown for 2 of 33 files")


def test_one_gap_keeps_its_own_wording_numbered_as_shown(tmp_path):
    study = load_study(_ct_series(tmp_path, [k for k in range(12) if k not in (2, 3)]))
    assert (int(study.array[7, 0, 0]), int(study.array[8, 0, 0])) == (4, 1)
    assert study.warnings == ["gap: about 2 slice(s) missing between slice 7 and 8 (7.50 mm apart, usual "
                              "2.50 mm); napari shows them adjacent"]


def test_a_gap_across_sagittal_slices_is_numbered_along_its_axis(tmp_path):
    study = load_study(_ct_series(tmp_path, [k for k in range(10) if k not in (6, 7)], orientation=SAGITTAL))
    assert study.image.orientation == ("I", "P", "L")  # k grows toward the patient's right: shown last first
    assert (int(study.array[0, 0, 1]), int(study.array[0, 0, 2])) == (8, 5)
    assert study.warnings == ["gap: about 2 slice(s) missing between slice 1 and 2 of axis 2 (7.50 mm apart, "
                              "usual 2.50 mm); napari shows them adjacent"]


def test_irregular_steps_beside_gaps_are_one_more_line_without_the_gaps(tmp_path):
    def nudge(ds: Dataset, k: int) -> None:
        if k == 9:
            ds.ImagePositionPatient[2] = k * STEP_MM + 0.5

    study = load_study(_ct_series(tmp_path, [k for k in range(16) if k not in (3, 6)], edit=nudge))
    assert [kind_of(w) for w in study.warnings] == ["gaps", "spacing"]
    assert study.warnings[0] == ("2 gaps in slice positions (about 2 slices missing in all), largest 5.00 mm "
                                 "between slices 8 and 9 (usual 2.50 mm); napari shows the slices adjacent")
    assert study.warnings[1] == ("variable slice spacing 2.00..3.00 mm apart from the gaps "
                                 "(median 2.50 mm used for display)")


# -- the ranker -------------------------------------------------------------------------------------------

TILT = "gantry tilt of 12.0 deg: slices are sheared; napari stacks them without the shear"
OBLIQUE = ("oblique slices: axes up to 20.0 deg from the patient axes; shown on the acquisition grid without "
           "resampling, so on-screen directions are approximate")
GAPS = "3 gaps in slice positions (about 4 slices missing in all), largest 7.50 mm between slices 5 and 6"
SPACING = "PixelSpacing missing, zero or invalid: in-plane spacing unknown, 1 mm assumed"
NONFINITE = nonfinite_warning(np.array([np.nan, 1.0, 2.0, 3.0]), "x")
RESCALE = rescale_warnings([("a.dcm", "RescaleSlope 'x' is not a valid nonzero number: 1 used")], 10, "CT")[0]
IDENTITY = ("patient identity unknown for 1 of 2 files (e.g. a.png: PNG/JPEG files carry none): not checked "
            "to be the same patient as the others")
LOCALIZER = "this series is a localizer/scout, opened because it was asked for"
MIXED = "MIXED PATIENTS: the files come from 2 patients (PatientID differs), opened as one study as asked"


def test_ranks_follow_what_matters_to_reading_and_keep_order_within_a_rank():
    given = [LOCALIZER, RESCALE, GAPS, IDENTITY, OBLIQUE, NONFINITE, SPACING, TILT]
    assert ranked(given) == [OBLIQUE, TILT, GAPS, SPACING, RESCALE, NONFINITE, LOCALIZER, IDENTITY]
    assert ranked([IDENTITY, MIXED, TILT]) == [MIXED, TILT, IDENTITY]


def test_unknown_warnings_come_after_values_and_before_bookkeeping():
    unknown = "header: pixdim[1,2,3] should be non-zero; opened with nibabel's fix"
    assert kind_of(unknown) == OTHER
    assert ranked([IDENTITY, unknown, RESCALE, TILT]) == [TILT, RESCALE, unknown, IDENTITY]


def test_identical_lines_are_collapsed_with_a_count_at_their_first_place():
    assert collapsed([RESCALE, TILT, RESCALE, RESCALE]) == [f"{RESCALE} (×3)", TILT]
    assert ranked([IDENTITY, TILT, IDENTITY, GAPS, TILT]) == [f"{TILT} (×2)", GAPS, f"{IDENTITY} (×2)"]
    assert ranked([]) == []


@pytest.mark.parametrize(("warning", "kind"), [
    (MIXED, "patients"), (TILT, "tilt"), (OBLIQUE, "oblique"),
    ("oblique volume: axes up to 15.0 deg from the patient axes; shown on the voxel grid", "oblique"),
    ("header has no sform or qform: orientation unknown, assumed RAS from voxel sizes", "orientation"),
    ("gap: about 2 slice(s) missing between slice 7 and 8 (7.50 mm apart, usual 2.50 mm)", "gaps"),
    (GAPS, "gaps"), (SPACING, "spacing"),
    ("variable slice spacing 2.00..3.00 mm (median 2.50 mm used for display)", "spacing"),
    ("pixdim voxel size (0.0, 1.0, 1.0) has zero or invalid entries: 1 mm used for those", "spacing"),
    ("sform (code 2) holds NaN or infinite values: the qform (code 1) is used", "affine"),
    (NONFINITE, "nonfinite"), (nonfinite_warning(np.array([np.inf, 0.0]), "x", "pixels"), "nonfinite"),
    (RESCALE, "rescale"), ("cr.dcm: RescaleIntercept 'x' is not a valid number: 0 used", "rescale"),
    ("scl_slope inf is not a valid scale factor: voxels shown unscaled", "rescale"),
    (IDENTITY, "identity"), (LOCALIZER, "localizer"),
    ("2 image(s) with an invalid position or orientation not opened (e.g. a.dcm: has NaN)", "left_out"),
])
def test_each_wording_the_readers_write_has_its_kind(warning, kind):
    assert kind_of(warning) == kind


def test_every_kind_has_a_rank():
    assert {kind for kind, _ in KINDS} | {OTHER} == {kind for rank in RANKS for kind in rank}


def test_five_gaps_in_real_chest_slices_are_one_line_naming_where_napari_shows_the_largest(chest_series,
                                                                                          tmp_path):
    numbers = [1, 2, 4, 5, 8, 9, 10, 14, 15, 20, 21, 22, 30, 31]  # 1-01.dcm is the most superior
    for n in numbers:
        pydicom.dcmread(chest_series / f"1-{n:02d}.dcm").save_as(tmp_path / f"slice_{n:02d}.dcm")
    study = load_study(tmp_path)
    assert study.summary()["warnings"] == [
        "5 gaps in slice positions (about 17 slices missing in all), largest 40.00 mm between slices 11 "
        "and 12 (usual 5.00 mm); napari shows the slices adjacent"]
    for index, n in ((11, 22), (12, 30)):
        ds = pydicom.dcmread(tmp_path / f"slice_{n:02d}.dcm")
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(study.array[index], hu)
