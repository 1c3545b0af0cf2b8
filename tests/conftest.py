"""Shared fixtures: the real images in ../shared/data and small DICOM copy helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_API", "pyqt6")
# Keep tests away from the user's settings, drafts and caches.
_SANDBOX = Path(tempfile.mkdtemp(prefix="radreport-tests-"))
for _name, _sub in (("RADREPORT_CONFIG", "config/settings.json"), ("RADREPORT_DRAFTS", "drafts"),
                    ("RADREPORT_CACHE", "cache")):
    os.environ.setdefault(_name, str(_SANDBOX / _sub))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RADREPORT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test images not found at {SHARED_DATA} (the project's shared/data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def chest_series(shared_data) -> Path:
    return shared_data / "ct" / "lung_dx_a0001_chest_kernelB"


@pytest.fixture(scope="session")
def j2k_series(shared_data) -> Path:
    return shared_data / "ct" / "totalseg_abdomen_dicom_j2k"


@pytest.fixture(scope="session")
def abdomen_nifti(shared_data) -> Path:
    return shared_data / "ct" / "totalseg_abdomen_pelvis.nii.gz"


@pytest.fixture(scope="session")
def cr_monochrome1(shared_data) -> Path:
    return shared_data / "xray" / "wg04_rg1_chest_cr_monochrome1.dcm"


@pytest.fixture(scope="session")
def chest_study(chest_series):
    from napari_radreport import load_study

    return load_study(chest_series)


def _tiny_model(tmp_path_factory, modality: str) -> Path:
    """A tiny random-weight model folder in our format (mechanics only; its text is meaningless)."""
    from tiny_models import write_tiny_radreport

    return write_tiny_radreport(tmp_path_factory.mktemp("models") / f"tiny-{modality}", modality)


@pytest.fixture(scope="session")
def tiny_ct_model(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory, "ct")


@pytest.fixture(scope="session")
def tiny_xray_model(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory, "xray")


@pytest.fixture()
def docked(make_napari_viewer, tmp_path, monkeypatch):
    """A real viewer with the plugin's docks in the reading layout (by name), plus "viewer" and "session";
    settings and drafts in tmp_path."""
    from napari_radreport.viewer import add_docks
    from napari_radreport.widgets.session import session_for

    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    viewer = make_napari_viewer(show=True)
    return {**add_docks(viewer), "viewer": viewer, "session": session_for(viewer)}
