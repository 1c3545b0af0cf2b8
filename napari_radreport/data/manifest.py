"""The training manifest: one JSON object per line, one study per object.

Fields (only ``id``, ``modality`` and ``images`` are required)::

    {"id": "ct-0001", "modality": "ct", "images": ["vol/ct-0001.nii.gz"], "split": "train",
     "findings": "...", "impression": "...",
     "regions": {"chest": "...", "abdomen": "...", "pelvis": "..."},
     "qa": [{"question": "...", "answer": "...", "choices": ["...", "..."], "answer_index": 0}],
     "labels": {"Lung nodule": 1, "Pleural effusion": 0},
     "positions": {"Lung nodule": [[-71.5, 40.2, -210.0]]},
     "hu_rescale": [1.0, -1024.0], "source": "ct-rate"}

``images`` are paths relative to the manifest's folder (or absolute): one volume (NIfTI file or DICOM
folder) for CT, one to four radiographs for X-ray. ``hu_rescale`` (slope, intercept) is applied after
reading only for files whose stored values are not yet HU. ``positions`` gives, per label, the centres of its
findings as LPS patient coordinates in mm (the frame of ``Study.index_to_patient``), for training that needs
to know where a finding is. Malformed lines fail with the line number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")
MODALITIES = ("ct", "xray")


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message names the file, the line and the field."""


@dataclass
class QAPair:
    question: str
    answer: str
    choices: list[str] = field(default_factory=list)  # empty for free-text questions
    answer_index: int | None = None  # index into choices for multiple choice

    def __post_init__(self) -> None:
        if self.choices:
            if not 2 <= len(self.choices) <= 4:
                raise ValueError(f"a multiple-choice question needs 2 to 4 choices, got {len(self.choices)}")
            if self.answer_index is None or not 0 <= self.answer_index < len(self.choices):
                raise ValueError(f"answer_index {self.answer_index!r} does not point into the "
                                 f"{len(self.choices)} choices")


@dataclass
class ManifestRecord:
    id: str
    modality: str
    images: list[str]
    split: str = "train"
    findings: str = ""
    impression: str = ""
    regions: dict[str, str] = field(default_factory=dict)
    qa: list[QAPair] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    positions: dict[str, list[list[float]]] = field(default_factory=dict)  # label -> LPS centres in mm
    hu_rescale: tuple[float, float] | None = None
    source: str = ""
    root: Path | None = None  # the manifest's folder; relative image paths are resolved against it

    def __post_init__(self) -> None:
        from napari_radreport.engine.prompts import REGIONS

        if not self.id:
            raise ValueError("'id' is empty")
        if self.modality not in MODALITIES:
            raise ValueError(f"'modality' must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if isinstance(self.images, str):
            self.images = [self.images]
        if not self.images:
            raise ValueError("'images' is empty")
        if self.modality == "ct" and len(self.images) != 1:
            raise ValueError(f"a CT record holds one volume, got {len(self.images)} images")
        if self.split not in SPLITS:
            raise ValueError(f"'split' must be one of {', '.join(SPLITS)}, got {self.split!r}")
        unknown = sorted(set(self.regions) - set(REGIONS))
        if unknown:
            raise ValueError(f"unknown region(s) {', '.join(unknown)}; use {', '.join(REGIONS)}")
        self.qa = [q if isinstance(q, QAPair) else QAPair(**q) for q in self.qa]
        for label, value in self.labels.items():
            if value not in (0, 1):
                raise ValueError(f"label {label!r} must be 0 or 1, got {value!r}")
        for label, points in self.positions.items():
            if not isinstance(points, list) or not all(isinstance(p, (list, tuple)) and len(p) == 3
                                                       for p in points):
                raise ValueError(f"positions of {label!r} must be a list of [L, P, S] points in mm")
        self.positions = {label: [[float(v) for v in p] for p in points]
                          for label, points in self.positions.items()}
        if self.hu_rescale is not None:
            self.hu_rescale = tuple(float(v) for v in self.hu_rescale)  # type: ignore[assignment]
            if len(self.hu_rescale) != 2:
                raise ValueError("'hu_rescale' is [slope, intercept]")

    def image_paths(self) -> list[Path]:
        return [Path(p) if Path(p).is_absolute() or self.root is None else self.root / p for p in self.images]

    def existing_image_paths(self) -> list[Path]:
        """The image paths, or a ManifestError naming the first one that does not exist."""
        paths = self.image_paths()
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise ManifestError(f"record {self.id}: image file {missing[0]} does not exist")
        return paths

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("root")
        data["qa"] = [{k: v for k, v in qa.items() if v not in ([], None)} for qa in data["qa"]]
        return {k: v for k, v in data.items()
                if v not in ("", [], {}, None) or k in ("id", "modality", "images")}


def read_manifest(path: str | Path, split: str | None = None) -> list[ManifestRecord]:
    """All records of a JSONL manifest (optionally one split); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    records, seen = [], set()
    known = set(ManifestRecord.__dataclass_fields__) - {"root"}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from exc
            if not isinstance(data, dict):
                raise ManifestError(f"{where}: each line must be a JSON object")
            missing = [k for k in ("id", "modality", "images") if k not in data]
            if missing:
                raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
            extra = sorted(set(data) - known)
            if extra:
                raise ManifestError(f"{where}: unknown field(s) {', '.join(extra)}")
            try:
                record = ManifestRecord(**data, root=path.parent)
            except (TypeError, ValueError) as exc:
                raise ManifestError(f"{where}: {exc}") from exc
            if record.id in seen:
                raise ManifestError(f"{where}: id {record.id!r} appears twice")
            seen.add(record.id)
            if split is None or record.split == split:
                records.append(record)
    return records


def write_manifest(path: str | Path, records: Iterable[ManifestRecord]) -> Path:
    """Write records as JSONL (atomically); image paths are written as given."""
    from napari_radreport.common import write_atomic

    path = Path(path)
    lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
    write_atomic(path, lines.encode("utf-8"), overwrite=True)
    return path


def iter_texts(records: Iterable[ManifestRecord]) -> Iterator[str]:
    """Every text a model is trained to read or write (for tokenizer training)."""
    for r in records:
        yield from (t for t in (r.findings, r.impression, *r.regions.values()) if t)
        for qa in r.qa:
            yield qa.question
            yield qa.answer
            yield from qa.choices
        yield from r.labels
