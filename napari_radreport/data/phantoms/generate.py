"""Write a phantom dataset: NIfTI volumes, their finding masks, and a JSONL manifest with reports, questions
and labels.

Phantom ``i`` of seed ``s`` is the same on every machine (its own ``numpy`` generator seeded by (s, i)), so a
dataset is reproduced by its command: ``radreport phantoms OUT --count N --seed S``. Each volume
``volumes/phantom-NNNNN.nii.gz`` has a label map ``masks/phantom-NNNNN.nii.gz`` beside it (same affine, uint8,
``anatomy.MASK_LABELS``: 1 lung nodule, 2 consolidation, 3 / 4 right / left pleural effusion, 5 pericardial
effusion); the record's ``masks`` names the file, the values the phantom has and each one's LPS box.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_radreport.data.manifest import ManifestRecord, write_manifest
from napari_radreport.data.phantoms import anatomy, reports
from napari_radreport.modeling.scope import SYNTHETIC_PHANTOM


def phantom_record(index: int, seed: int, split: str) -> tuple[ManifestRecord, np.ndarray]:
    """The manifest record (image and mask paths relative to the dataset folder) and the HU volume of one
    phantom."""
    record, volume, _ = phantom_with_labels(index, seed, split)
    return record, volume


def phantom_with_labels(index: int, seed: int, split: str) -> tuple[ManifestRecord, np.ndarray, np.ndarray]:
    """``phantom_record`` and the phantom's label map (``anatomy.MASK_LABELS``, same grid as the volume)."""
    rng = np.random.default_rng([seed, index])
    findings = anatomy.sample_findings(rng)
    volume, labels = anatomy.phantom_volume_and_labels(findings, rng)
    findings_text = reports.findings_text(findings, rng)
    record = ManifestRecord(
        id=f"phantom-{index:05d}", modality="ct", images=[f"volumes/phantom-{index:05d}.nii.gz"],
        split=split, findings=findings_text, impression=reports.impression_text(findings, rng),
        regions={"chest": findings_text}, qa=reports.questions(findings, rng),
        labels=reports.labels(findings), positions=_positions(findings), source="phantom",
        masks=_masks(index, labels))
    return record, volume, labels


def _masks(index: int, labels: np.ndarray) -> dict:
    """The record's ``masks``: the label file, the values drawn in it, and each one's LPS box."""
    boxes = anatomy.label_boxes(labels)
    return {"path": f"masks/phantom-{index:05d}.nii.gz",
            "labels": {name: value for name, value in anatomy.MASK_LABELS.items() if name in boxes},
            "boxes": boxes}


def _positions(findings: anatomy.Findings) -> dict[str, list[list[float]]]:
    """LPS centres of the local findings (nodule, consolidation) that ``phantom_volume`` drew."""
    centres = findings.extras.get("centres_mm", {})
    labels = {"nodule": "Lung nodule", "consolidation": "Consolidation"}
    return {labels[name]: [anatomy.patient_position(centre)] for name, centre in centres.items()}


def _split_of(index: int, count: int, val: float, test: float) -> str:
    n_test, n_val = round(count * test), round(count * val)
    if index >= count - n_test:
        return "test"
    return "val" if index >= count - n_test - n_val else "train"


def write_nifti(path: Path, volume: np.ndarray) -> None:
    import nibabel

    image = nibabel.Nifti1Image(np.round(volume).astype(np.int16), anatomy.nifti_affine())
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = SYNTHETIC_PHANTOM.encode()  # what a synthetic-only model may read
    nibabel.save(image, str(path))


def write_label_nifti(path: Path, labels: np.ndarray) -> None:
    """A uint8 label map with the volumes' affine (so it reads back on the same grid as its volume)."""
    import nibabel

    image = nibabel.Nifti1Image(np.asarray(labels, dtype=np.uint8), anatomy.nifti_affine())
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = b"phantom finding labels"
    nibabel.save(image, str(path))


def write_phantoms(out: str | Path, count: int, *, seed: int = 0, val: float = 0.05, test: float = 0.1,
                   only: str | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """``count`` phantoms under ``out/volumes`` (their label maps under ``out/masks``) and
    ``out/manifest.jsonl``; the last ones are val and test.

    ``only`` writes just that split's phantoms (the same ones the full dataset has), e.g. the held-out test
    set.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = Path(out)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    records = []
    indices = [i for i in range(count) if only is None or _split_of(i, count, val, test) == only]
    for done, index in enumerate(indices, start=1):
        record, volume, labels = phantom_with_labels(index, seed, _split_of(index, count, val, test))
        write_nifti(out / record.images[0], volume)
        write_label_nifti(out / record.masks["path"], labels)
        records.append(record)
        if progress is not None:
            progress(done, len(indices))
    return write_manifest(out / "manifest.jsonl", records)
