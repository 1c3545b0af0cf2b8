"""The radreport command line: info as text and JSON, one-line failures, --debug tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from napari_radreport.cli import main


def test_info_json_describes_the_chest_series(chest_series, capsys):
    assert main(["info", str(chest_series), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "ct" and info["modality"] == "CT"
    assert info["shape"] == [64, 512, 512]
    assert info["spacing_mm"] == pytest.approx([5.0, 0.8418, 0.8418])
    assert info["orientation"] == ["I", "P", "L"]
    assert info["axes"] == ["S->I", "A->P", "R->L"]
    assert info["origin_mm_lps"] == pytest.approx([-228.037, -93.063, -124.0])
    assert info["value_range"] == [-1024.0, 2976.0] and info["value_unit"] == "HU"
    assert info["chosen_series"] == 0 and info["series"][0]["n_images"] == 64
    assert info["tags"]["patient_id"] == "Lung_Dx-A0001"
    assert info["warnings"] == []


def test_info_json_for_a_radiograph_set(shared_data, capsys):
    paths = [str(p) for p in sorted((shared_data / "xray").glob("nih_*.png"))]
    assert main(["info", *paths, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "xray_set"
    assert [im["shape"] for im in info["images"]] == [[512, 512], [512, 512]]
    assert info["images"][0]["spacing_mm"] == [None, None]


def test_info_text_lists_series_and_notes(j2k_series, capsys):
    assert main(["info", str(j2k_series)]) == 0
    out = capsys.readouterr().out
    assert "kind: ct" in out and "* series 0" in out and "note: SeriesInstanceUID is empty" in out


def test_failure_is_one_line_naming_the_file(capsys):
    from pydicom.data import get_testdata_file

    sr = get_testdata_file("test-SR.dcm")
    assert main(["info", sr]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "test-SR.dcm" in err and "structured report" in err
    assert "Traceback" not in err


def test_missing_path_fails_cleanly(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.nii.gz")]) == 1
    assert "nothing.nii.gz: no such file or folder" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "napari_radreport.cli", "info", str(tmp_path / "nothing.dcm"), "--debug"],
        capture_output=True, text=True,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr and "StudyReadError" in result.stderr


def test_console_script_is_installed(abdomen_nifti):
    exe = Path(sys.executable).with_name("radreport")
    result = subprocess.run([str(exe), "info", str(abdomen_nifti), "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["shape"] == [112, 101, 122]
