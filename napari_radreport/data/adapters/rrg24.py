"""RRG24 / MIMIC-CXR style chest radiograph studies (several images, findings, impression) -> manifest.

Assumed layout: the fields of the BioNLP 2024 shared task data (``StanfordAIMI/interpret-cxr-public`` and the
``train_mimic.json`` / ``val_mimic.json`` files written by the organisers' ``make-interpret-mimic-cxr.py``;
features ``source, findings, images, impression, images_path`` as listed on stanford-aimi.github.io/RRG24),
one study per JSON object::

    {"source": "MIMIC-CXR", "images": ["files/p10/p10000032/s50414267/02aa804e-....jpg", ...],
     "findings": "...", "impression": "..."}

in a JSON array, a JSON Lines file, or an object of split -> array. Images are taken from ``images_path`` when
present, else ``images`` (strings, or objects with a ``path``), relative to ``image_root`` (default: the JSON
file's folder). The Hugging Face parquet release embeds the pictures as bytes: save them as files first and
list their paths in these fields. An ``id`` or ``study_id`` field names the record, else ``<file stem>-<n>``.

A record keeps at most four images (the first four; the summary counts truncated studies); studies with
neither findings nor impression are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_radreport.data.adapters._common import (
    SPLIT_WORDS,
    ConversionSummary,
    DatasetFormatError,
    check_missing_policy,
    check_split,
    finish,
    image_ref,
    prepare_out,
    read_json_records,
    split_from_name,
    text,
)

MAX_IMAGES = 4


def _image_paths(study: dict, where: str) -> list[str]:
    value: Any = study.get("images_path") or study.get("images") or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DatasetFormatError(f"{where}: 'images' must be a list of paths")
    paths = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("path")
        if not isinstance(item, str) or not item:
            raise DatasetFormatError(f"{where}: images must be file paths (found {type(item).__name__}); "
                                     "save embedded images as files first")
        paths.append(item)
    return paths


def _inputs(src: Path | list) -> list[Path]:
    paths = [Path(p) for p in (src if isinstance(src, (list, tuple)) else [src])]
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in (".json", ".jsonl") and p.is_file())
            if not found:
                raise DatasetFormatError(f"{path}: no .json or .jsonl files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DatasetFormatError(f"{path}: no such file or folder")
    return files


def convert_rrg24(src: str | Path | list, out: str | Path, *, split: str | None = None,
                  image_root: str | Path | None = None, missing: str = "error",
                  overwrite: bool = False) -> ConversionSummary:
    """Write the radiograph studies of ``src`` (JSON/JSONL files, or folders of them) as a manifest at
    ``out``.

    ``split`` puts every study in one split; by default it comes from the JSON object's split key or from the
    file name (``val_mimic.json`` -> val, ``train_mimic.json`` -> train, other names -> train).
    """
    from napari_radreport.data.manifest import ManifestRecord

    check_missing_policy(missing)
    split = check_split(split)
    out = prepare_out(out, overwrite)
    files = _inputs(src)
    summary = ConversionSummary(source=", ".join(map(str, files)))
    records, ids = [], set()
    for path in files:
        root = Path(image_root) if image_root else path.parent
        for index, (key, study) in enumerate(read_json_records(path)):
            explicit = text(study.get("id") or study.get("study_id"))
            record_id = explicit or f"{path.name.split('.')[0]}-{index:06d}"
            where = f"{path}: study {record_id}"
            if record_id in ids:
                raise DatasetFormatError(f"{where}: id appears twice")
            ids.add(record_id)
            findings, impression = text(study.get("findings")), text(study.get("impression"))
            if not findings and not impression:
                summary.skip("no findings or impression")
                continue
            images = _image_paths(study, where)
            if not images:
                summary.skip("no images")
                continue
            if len(images) > MAX_IMAGES:
                summary.note(f"studies with more than {MAX_IMAGES} images (first {MAX_IMAGES} kept)")
                images = images[:MAX_IMAGES]
            resolved = [Path(p) if Path(p).is_absolute() else root / p for p in images]
            absent = [p for p in resolved if not p.is_file()]
            if absent:
                if missing == "error":
                    raise FileNotFoundError(f"{absent[0]}: image of {record_id} does not exist "
                                            "(--missing skip leaves such studies out)")
                summary.skip("image file missing")
                continue
            origin = text(study.get("source"))
            records.append(ManifestRecord(
                id=record_id, modality="xray", images=[image_ref(p, out.parent) for p in resolved],
                split=split or (SPLIT_WORDS[key] if key else split_from_name(path.name)), findings=findings,
                impression=impression, source=f"rrg24:{origin}" if origin else "rrg24"))
    return finish(out, records, summary)
