"""Packaging: manifest, imports, dependencies."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_MANIFEST = ROOT / "napari_radreport" / "napari.yaml"


def test_top_level_manifest_is_the_package_manifest():
    assert (ROOT / "napari.yaml").read_bytes() == PACKAGE_MANIFEST.read_bytes()


def test_every_python_name_in_the_manifest_imports():
    manifest = yaml.safe_load(PACKAGE_MANIFEST.read_text())
    names = [c["python_name"] for c in manifest["contributions"]["commands"]]
    assert len(names) >= 4
    for name in names:
        module, _, attr = name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_npe2_validates_the_installed_plugin():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "napari-radreport", "--imports"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_napari_finds_the_manifest_of_the_installed_distribution():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-radreport")
    assert {r.command for r in manifest.contributions.readers} == {"napari-radreport.get_reader"}


def test_heavy_libraries_stay_out_of_import_time():
    code = (
        "import sys, napari_radreport, napari_radreport._reader, napari_radreport._sample_data, "
        "napari_radreport.cli, napari_radreport.viewer; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate', 'napari', 'qtpy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_dependencies_have_no_qt_binding_and_test_extra_has_qt6():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for banned in ("pyqt", "pyside", "napari[all]"):
        assert banned not in core
    for needed in ("napari", "magicgui", "qtpy", "numpy", "nibabel", "pydicom", "pylibjpeg",
                   "pylibjpeg-openjpeg", "pylibjpeg-libjpeg", "torch", "transformers", "peft", "accelerate"):
        assert needed in core, needed
    test = " ".join(project["optional-dependencies"]["test"]).lower()
    assert "pyqt6" in test or "pyside6" in test
    for needed in ("pytest", "pytest-qt", "pytest-xvfb"):
        assert needed in test
    assert project["scripts"]["radreport"] == "napari_radreport.cli:main"


def test_compressed_transfer_syntax_decoders_are_installed():
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder, JPEGLosslessSV1Decoder, JPEGLSLosslessDecoder

    for decoder in (JPEG2000LosslessDecoder, JPEGLSLosslessDecoder, JPEGLosslessSV1Decoder):
        assert decoder.is_available, decoder.UID.name


def test_sample_data_ships_with_attribution():
    samples = ROOT / "napari_radreport" / "samples"
    total = sum(p.stat().st_size for p in samples.iterdir())
    assert total < 4 * 1024 * 1024
    attribution = (samples / "ATTRIBUTION.md").read_text()
    assert "TotalSegmentator" in attribution and "NIH" in attribution
