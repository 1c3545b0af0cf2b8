"""ReXGroundingCT (CT-RATE chest CT, one 3-D mask per positive lung / pleura finding sentence) -> manifest.

Layout, from the Hugging Face dataset card of ``rajpurkarlab/ReXGroundingCT`` (sections "Dataset Structure"
and "Segmentation Masks") and public code that reads the release (``dataset.json`` keyed by split, masks
fetched as ``segmentations/<name>``)::

    dataset.json                    {"train": [study, ...], "val": [...], "test": [...]}
    MICCAI_challenge_dataset.json   the same shape (the 2026 challenge's splits; ``metadata=`` picks it)
    segmentations/<name>            one NIfTI per study, shape (F, H, W, D): channel f is finding "f"
    study = {"name": "train_1741_b_2.nii.gz", "findings": {"0": "sentence", ...},
             "categories": {"0": "2b", ...}, "entity_counts": {...}, "pixels": {...},
             "shape": [H, W, D], "protocol": "protocol1"}

The release holds no CT volumes: ``name`` is the CT-RATE VolumeName, read from CT-RATE's folders
(``volumes``: the folder holding ``train_fixed/`` and ``valid_fixed/``, CT-RATE's ``dataset/``; the ReX split
is independent of the CT-RATE one). Within a mask channel each non-zero value is one entity of the finding.

One record per study: the volume, ``split`` from the JSON key (train / val / test), and ``masks`` in the
*channels* layout (``data/manifest.py``): the mask file and, per finding, its sentence, channel and category.
``findings`` / ``impression`` come from CT-RATE report CSVs when given (``reports``), else stay empty (the
sentences are only the positive lung and pleura findings, not a report).

**Assumed, not verified against the files:** the card gives the mask's shape as (F, H, W, D) with H, W, D
"matching the ``shape`` field" of the CT; users of the release report that a mask's stored array lies on the
stored voxel grid of the CT-RATE ``*_fixed`` volume (the mask's own affine is an identity), which is what the
channels layout means. The authors' upload script (``src/format_data_for_upload.py`` in
github.com/rajpurkarlab/ReXGroundingCT) flipped the first two array axes of the volumes it sent to annotation;
whether the released masks carry that flip was not established. ``radreport dataset check-masks`` tells from
the HU under the masks (``data/mask_check.py``); ``mask_flip_axes=(0, 1)`` records such a flip in every record
(``flip_axes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_radreport.data.adapters._common import (
    ConversionSummary,
    DatasetFormatError,
    check_missing_policy,
    check_split,
    finish,
    image_ref,
    prepare_out,
    read_csv,
    read_json,
    text,
)
from napari_radreport.data.adapters.ct_rate import volume_path

METADATA = "dataset.json"
MASK_FOLDER = "segmentations"
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_VOLUME_FOLDERS = {"train": ("train_fixed", "train"), "valid": ("valid_fixed", "valid")}


def _studies(path: Path, split: str | None) -> list[tuple[str, dict]]:
    """(our split, study) pairs of the metadata JSON, optionally of one split."""
    data = read_json(path)
    if not isinstance(data, dict) or not data or not set(data) <= set(_SPLITS):
        keys = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise DatasetFormatError(f"{path}: expected an object of splits (train, val, test) -> studies; "
                                 f"found {keys}")
    pairs = []
    for key, studies in data.items():
        if not isinstance(studies, list):
            raise DatasetFormatError(f"{path}: split {key!r} is not a list of studies")
        if split is None or _SPLITS[key] == split:
            pairs += [(_SPLITS[key], study) for study in studies]
    return pairs


def _sentences(path: Path, study: Any, index: int) -> tuple[str, list[dict[str, Any]]]:
    """The study's volume name and its mask sentences (text, channel, category), checked."""
    if not isinstance(study, dict) or not isinstance(study.get("name"), str) or not study["name"]:
        raise DatasetFormatError(f"{path}: study {index} has no 'name'")
    name, findings = study["name"], study.get("findings")
    if not isinstance(findings, dict):
        raise DatasetFormatError(f"{path}: study {name} has no 'findings' object (index -> sentence)")
    categories = study.get("categories") or {}
    sentences = []
    for key, sentence in findings.items():
        if not str(key).isdigit():
            raise DatasetFormatError(f"{path}: study {name}: finding key {key!r} is not a channel index")
        if text(sentence):
            entry: dict[str, Any] = {"text": text(sentence), "channel": int(key)}
            if text(categories.get(key)):
                entry["category"] = text(categories.get(key))
            sentences.append(entry)
    return name, sorted(sentences, key=lambda s: s["channel"])


def _volume(volumes: Path, name: str) -> Path | None:
    """Where CT-RATE keeps a volume under ``volumes`` (its ``dataset/`` folder, or a flat folder)."""
    folders = _VOLUME_FOLDERS.get(name.split("_", 1)[0], ())
    for base in (volumes, volumes / "dataset"):
        for folder in folders:
            try:
                candidate = volume_path(base / folder, name)
            except ValueError:
                break
            if candidate.is_file():
                return candidate
    flat = volumes / name
    return flat if flat.is_file() else None


def _check_shapes(volume: Path, mask: Path, name: str, channels: int, shape: Any) -> None:
    """The mask's header against the volume's: (F, *volume shape), with a channel per finding."""
    import nibabel

    try:
        stored, mask_shape = tuple(nibabel.load(str(volume)).shape), tuple(nibabel.load(str(mask)).shape)
    except Exception as exc:  # nibabel raises many types for unreadable headers
        raise DatasetFormatError(f"{name}: unreadable NIfTI header ({exc})") from exc
    if isinstance(shape, list) and tuple(shape) != stored:
        raise DatasetFormatError(f"{name}: the volume has shape {stored}, the metadata says {tuple(shape)}")
    if len(mask_shape) != 4 or mask_shape[1:] != stored or mask_shape[0] < channels:
        raise DatasetFormatError(f"{mask}: shape {mask_shape}, expected ({channels} or more findings, "
                                 f"{', '.join(map(str, stored))}) like volume {name}")


def _reports(paths: Sequence[str | Path]) -> dict[str, tuple[str, str]]:
    """VolumeName -> (findings, impression) from CT-RATE report CSVs."""
    out = {}
    for path in paths:
        for row in read_csv(Path(path), ("VolumeName", "Findings_EN", "Impressions_EN")):
            out[text(row["VolumeName"]).removesuffix(".nii.gz")] = (text(row["Findings_EN"]),
                                                                    text(row["Impressions_EN"]))
    return out


def _missing(what: str, missing: str, summary: ConversionSummary, message: str) -> None:
    if missing == "error":
        raise FileNotFoundError(f"{message} (--missing skip leaves such studies out)")
    summary.skip(what)


def convert_rexgroundingct(src: str | Path, out: str | Path, *, volumes: str | Path, split: str | None = None,
                           metadata: str | Path | None = None, reports: Sequence[str | Path] = (),
                           mask_flip_axes: Sequence[int] = (), check_shapes: bool = True,
                           missing: str = "error", overwrite: bool = False) -> ConversionSummary:
    """Write the ReXGroundingCT studies of ``src`` (the release's folder) as a manifest at ``out``.

    ``volumes`` is CT-RATE's folder of ``train_fixed/`` and ``valid_fixed/``; ``metadata`` replaces
    ``src/dataset.json`` (e.g. ``MICCAI_challenge_dataset.json``); ``split`` keeps one split. A study whose
    volume or mask file is absent fails the conversion, or is left out and counted with ``missing="skip"``
    (the test split's masks are not released). ``check_shapes`` compares each mask's header with its volume's.
    """
    from napari_radreport.data.manifest import ManifestRecord
    from napari_radreport.data.regions import split_by_region

    check_missing_policy(missing)
    split = check_split(split)
    out = prepare_out(out, overwrite)
    src, volumes = Path(src), Path(volumes)
    for folder, what in ((src, "ReXGroundingCT"), (volumes, "CT-RATE volume")):
        if not folder.is_dir():
            raise DatasetFormatError(f"{folder}: no such {what} folder")
    if any(axis not in (0, 1, 2) for axis in mask_flip_axes):
        raise ValueError(f"mask_flip_axes lists stored axes 0, 1 or 2, got {list(mask_flip_axes)}")
    metadata = Path(metadata) if metadata else src / METADATA
    texts = _reports(reports)
    summary = ConversionSummary(source=str(src))
    records, seen = [], set()
    for index, (study_split, study) in enumerate(_studies(metadata, split)):
        name, sentences = _sentences(metadata, study, index)
        record_id = name.removesuffix(".nii.gz")
        if record_id in seen:
            summary.skip("duplicate name")
            continue
        seen.add(record_id)
        if not sentences:
            summary.skip("no finding sentences")
            continue
        volume, mask = _volume(volumes, name), src / MASK_FOLDER / name
        if volume is None:
            _missing("volume file missing", missing, summary, f"{volumes}: no CT-RATE volume {name}")
            continue
        if not mask.is_file():
            _missing("mask file missing", missing, summary, f"{mask}: mask file of {name} does not exist")
            continue
        if check_shapes:
            _check_shapes(volume, mask, name, sentences[-1]["channel"] + 1, study.get("shape"))
        masks: dict[str, Any] = {"path": image_ref(mask, out.parent), "layout": "channels",
                                 "sentences": sentences}
        if mask_flip_axes:
            masks["flip_axes"] = sorted(set(mask_flip_axes))
        findings, impression = texts.get(record_id, ("", ""))
        if reports and record_id not in texts:
            summary.note("studies without a report row (findings left empty)")
        records.append(ManifestRecord(
            id=record_id, modality="ct", images=[image_ref(volume, out.parent)], split=study_split,
            findings=findings, impression=impression, regions=split_by_region(findings) if findings else {},
            masks=masks, source="rexgroundingct"))
        summary.notes["finding sentences"] += len(sentences)
    return finish(out, records, summary)
