"""Reading a manifest record's study: its image file(s) as a ``Study``, in HU."""

from __future__ import annotations

import numpy as np

from napari_radreport.data.manifest import ManifestError, ManifestRecord
from napari_radreport.io.study import Study, StudyReadError


def read_record_study(record: ManifestRecord) -> Study:
    """The record's Study, HU-rescaled when the record says its stored values are not HU yet."""
    from napari_radreport.io import load_study

    paths = record.existing_image_paths()
    try:
        modality = "CT" if record.modality == "ct" else None
        study = load_study(paths if len(paths) > 1 else paths[0], modality=modality)
    except StudyReadError as exc:
        raise ManifestError(f"record {record.id}: {exc}") from exc
    if record.hu_rescale is not None:
        slope, intercept = record.hu_rescale
        study.image.array = np.asarray(study.array, dtype=np.float32) * slope + intercept
    return study
