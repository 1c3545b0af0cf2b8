"""AMOS-MM (MICCAI 2024: chest/abdomen/pelvis CT, per-region findings, impressions, multiple-choice VQA) ->
manifest.

Assumed layout (the challenge's JSON files as read by the public solutions, e.g. bowang-lab/AMOS-MM-Solution
``scripts/prepare_data.py`` and ``LaMed/src/dataset/multi_dataset.py``; the challenge site
era-ai-biomed.github.io/amos describes the tasks)::

    dataset.json   {"training": [study, ...], "validation": [study, ...]}
    study        = {"image": "./imagesTr/amos_0001.nii.gz", "meta": {...},
                    "labels": {"report": {"findings": {"chest": "...", "abdomen": "...", "pelvis": "..."},
                                          "impression": {"chest": ["...", ...], "abdomen": [...], ...}},
                               "qa": [{"question": "...", "options": {"A": "...", "B": "...", "C": "...",
                                       "D": "..."}, "answer": "C", "reasoning": "..."}, ...]}}
    imagesTr/ imagesVa/   the NIfTI volumes

The VQA questions may come in a second file of the same shape (``vqa=``, ``--vqa``): they are matched to the
report file's studies by image file name. Image paths are relative to ``image_root`` (default: the JSON file's
folder). Also accepted: an impression given as one string or a list, findings given as one string (then split
into regions with the region splitter), options given as a list (letters A, B, ... in order), an answer given
as the option's text or as "C. text".
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
    read_json,
    text,
)
from napari_radreport.engine.prompts import REGIONS

_LETTERS = "ABCDEFGH"


def _studies(path: Path, split: str | None) -> list[tuple[str, dict]]:
    """(manifest split, study) of every wanted study of an AMOS-MM JSON file."""
    data = read_json(path)
    if not isinstance(data, dict) or not any(isinstance(data.get(k), list) for k in SPLIT_WORDS):
        raise DatasetFormatError(f"{path}: expected an object with 'training'/'validation' lists of studies")
    out = []
    for key, items in data.items():
        if key not in SPLIT_WORDS or not isinstance(items, list):
            continue
        if split is not None and SPLIT_WORDS[key] != split:
            continue
        for index, study in enumerate(items):
            if not isinstance(study, dict) or not isinstance(study.get("image"), str) or not study["image"]:
                raise DatasetFormatError(f"{path}: {key}[{index}] has no 'image' path")
            out.append((SPLIT_WORDS[key], study))
    return out


def case_id(image: str) -> str:
    name = Path(image).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _findings(value: Any, where: str) -> dict[str, str]:
    from napari_radreport.data.regions import split_by_region

    if value is None:
        return {}
    if isinstance(value, str):
        return split_by_region(value)
    if not isinstance(value, dict):
        raise DatasetFormatError(f"{where}: 'findings' must be an object of region -> text")
    regions = {}
    for key, region_text in value.items():
        region = str(key).strip().lower()
        if region not in REGIONS:
            raise DatasetFormatError(f"{where}: unknown findings region {key!r}; "
                                     f"expected {', '.join(REGIONS)}")
        if text(region_text):
            regions[region] = text(region_text)
    return {r: regions[r] for r in REGIONS if r in regions}


def _impression(value: Any) -> str:
    if isinstance(value, dict):
        order = sorted(value, key=lambda k: (REGIONS.index(k) if k in REGIONS else len(REGIONS), k))
        return " ".join(filter(None, (_impression(value[k]) for k in order)))
    if isinstance(value, (list, tuple)):
        return " ".join(filter(None, (_impression(v) for v in value)))
    return text(value)


def _qa(items: Any, where: str) -> list:
    from napari_radreport.data.manifest import QAPair

    if items is None:
        return []
    if not isinstance(items, list):
        raise DatasetFormatError(f"{where}: 'qa' must be a list")
    pairs = []
    for number, item in enumerate(items):
        here = f"{where} question {number}"
        if not isinstance(item, dict) or "question" not in item or "answer" not in item:
            raise DatasetFormatError(f"{here}: needs 'question', 'options' and 'answer'")
        options = item.get("options")
        if isinstance(options, list):
            options = dict(zip(_LETTERS, options))
        if not isinstance(options, dict) or not options:
            raise DatasetFormatError(f"{here}: 'options' must be an object of letter -> text")
        letters = sorted(options)
        choices = [text(options[k]) for k in letters]
        answer = text(item["answer"])
        if answer in options:
            index = letters.index(answer)
        elif answer[:1] in options and answer[1:2] in ("", ".", ")", ":", " "):
            index = letters.index(answer[:1])
        elif answer in choices:
            index = choices.index(answer)
        else:
            raise DatasetFormatError(
                f"{here}: answer {answer!r} is not one of the options {', '.join(letters)}"
            )
        try:
            pairs.append(QAPair(question=text(item["question"]), answer=choices[index], choices=choices,
                                answer_index=index))
        except ValueError as exc:
            raise DatasetFormatError(f"{here}: {exc}") from None
    return pairs


def convert_amos_mm(src: str | Path, out: str | Path, *, vqa: str | Path | None = None,
                    split: str | None = None, image_root: str | Path | None = None, missing: str = "error",
                    overwrite: bool = False) -> ConversionSummary:
    """Write the AMOS-MM studies of ``src`` (dataset.json or its folder) as a manifest at ``out``.

    ``split`` keeps one split (train/val/test); by default every list in the file is converted, training ->
    train, validation -> val. Findings become ``regions`` (and, joined, ``findings``); the impression of every
    region, joined, becomes ``impression``; questions become ``qa`` with ``choices`` and ``answer_index``.
    """
    from napari_radreport.data.manifest import ManifestRecord

    check_missing_policy(missing)
    split = check_split(split)
    out = prepare_out(out, overwrite)
    src = Path(src)
    path = src / "dataset.json" if src.is_dir() else src
    if src.is_dir() and not path.is_file():
        raise DatasetFormatError(f"{src}: no dataset.json in this folder; pass the JSON file itself")
    root = Path(image_root) if image_root else path.parent

    studies: dict[str, dict] = {}  # case -> {"split", "image", "regions", "impression", "qa"}
    summary = ConversionSummary(source=str(path))
    for file, kind in ((path, "report"), *(((Path(vqa), "vqa"),) if vqa else ())):
        for study_split, study in _studies(file, split):
            case = case_id(study["image"])
            where = f"{file}: {case}"
            labels = study.get("labels") or {}
            if not isinstance(labels, dict):
                raise DatasetFormatError(f"{where}: 'labels' must be an object")
            entry = studies.get(case)
            if entry is None:
                entry = studies[case] = {"split": study_split, "image": study["image"], "regions": {},
                                         "impression": "", "qa": []}
            elif kind == "report":
                summary.skip("duplicate study in the report file")
                continue
            if kind == "report":
                report = labels.get("report") or {}
                if not isinstance(report, dict):
                    raise DatasetFormatError(f"{where}: 'report' must be an object")
                entry["regions"] = _findings(report.get("findings"), where)
                entry["impression"] = _impression(report.get("impression"))
            entry["qa"] += _qa(labels.get("qa"), where)

    records = []
    for case, entry in studies.items():
        if not entry["regions"] and not entry["impression"] and not entry["qa"]:
            summary.skip("no findings, impression or questions")
            continue
        image = Path(entry["image"])
        image = image if image.is_absolute() else root / image
        if not image.exists():
            if missing == "error":
                raise FileNotFoundError(
                    f"{image}: volume of {case} does not exist (--missing skip leaves such studies out)"
                )
            summary.skip("volume file missing")
            continue
        records.append(ManifestRecord(
            id=case, modality="ct", images=[image_ref(image, out.parent)], split=entry["split"],
            findings=" ".join(entry["regions"].values()), impression=entry["impression"],
            regions=entry["regions"], qa=entry["qa"], source="amos-mm"))
    return finish(out, records, summary)
