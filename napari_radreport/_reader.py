"""napari reader contribution: ``get_reader`` never raises and returns None for what it cannot read."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_radreport.io.dicom_headers import looks_like_dicom
from napari_radreport.io.nifti import is_nifti_path
from napari_radreport.io.xray import is_picture_path

FOLDER_PEEK_FILES = 200


def _readable_file(path: Path) -> bool:
    return path.is_file() and (is_nifti_path(path) or is_picture_path(path) or looks_like_dicom(path))


def _folder_has_images(folder: Path) -> bool:
    """Peek at the first files of a folder tree for anything we read."""
    seen = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if _readable_file(Path(root) / name):
                return True
            seen += 1
            if seen >= FOLDER_PEEK_FILES:
                return False
    return False


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list] | None:
    try:
        raw = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not raw or any(not str(p) for p in raw):
            return None
        paths = [Path(p) for p in raw]
        if len(paths) == 1 and paths[0].is_dir():
            return read_study_layers if _folder_has_images(paths[0]) else None
        return read_study_layers if all(_readable_file(p) for p in paths) else None
    except Exception:  # a reader probe must never take napari down
        return None


def read_study_layers(path: str | Sequence[str]) -> list:
    """Read with ``load_study``; errors reach napari as a one-line StudyReadError.

    The reader cannot ask: files of more than one patient are refused (``MixedPatients``, naming the Settings
    switch) unless the user's setting ``allow_mixed_patients`` is on."""
    from napari_radreport.io import load_study
    from napari_radreport.io.study import MixedPatients
    from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH, UserSettings

    source = path if isinstance(path, (str, os.PathLike)) else list(path)
    try:
        study = load_study(source, allow_mixed_patients=UserSettings.load().allow_mixed_patients)
    except MixedPatients as exc:
        raise exc.with_hint(f"to open them as one study, switch on '{MIXED_PATIENTS_SWITCH}' in the "
                            "napari-radreport Settings dock") from exc
    return study.to_layer_data()
