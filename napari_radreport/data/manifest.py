"""The training manifest: one JSON object per line, one study per object.

Fields (only ``id``, ``modality`` and ``images`` are required)::

    {"id": "ct-0001", "modality": "ct", "images": ["vol/ct-0001.nii.gz"], "split": "train",
     "findings": "...", "impression": "...",
     "regions": {"chest": "...", "abdomen": "...", "pelvis": "..."},
     "qa": [{"question": "...", "answer": "...", "choices": ["...", "..."], "answer_index": 0}],
     "labels": {"Lung nodule": 1, "Pleural effusion": 0},
     "positions": {"Lung nodule": [[-71.5, 40.2, -210.0]]},
     "masks": {"path": "masks/ct-0001.nii.gz", "labels": {"Lung nodule": 1},
               "boxes": {"Lung nodule": [[-80.0, 31.0, -219.0], [-63.0, 49.0, -201.0]]}},
     "hu_rescale": [1.0, -1024.0], "source": "ct-rate"}

``images`` are paths relative to the manifest's folder (or absolute): one volume (NIfTI file or DICOM
folder) for CT, one to four radiographs for X-ray. ``hu_rescale`` (slope, intercept) is applied after
reading only for files whose stored values are not yet HU. ``positions`` gives, per label, the centres of its
findings as LPS patient coordinates in mm (the frame of ``Study.index_to_patient``), for training that needs
to know where a finding is. Malformed lines fail with the line number.

``masks`` (optional, CT) says where findings are drawn, as one mask file (``path``, relative to the manifest's
folder or absolute) in one of two layouts:

* ``"layout": "labels"`` (the default, left out when written): a 3-D integer label map with the volume's own
  geometry (same affine), so it reads back through ``load_study`` on exactly the volume's grid. ``labels``
  maps a finding name (a CT-RATE label, optionally with a qualifier: ``"Pleural effusion (right)"``) to its
  value (>= 1); ``boxes`` (optional) gives each named finding's box in LPS mm, ``[min corner, max corner]``,
  to the outer faces of its voxels. The phantoms write this layout.
* ``"layout": "channels"``: a 4-D array of one channel per finding, stored channel first (nibabel shape
  ``(F, I, J, K)``) on the *stored* voxel grid of the volume file (its own affine is not used: the volume's
  is), any non-zero value inside; ``flip_axes`` (optional) lists stored axes (0-2) to flip before use. The
  ReXGroundingCT adapter writes this layout.

``sentences`` (optional) gives a finding per sentence of free text: ``text``, and ``label`` (a value of the
label map) or ``channel`` (0-based, the channels layout), optionally the dataset's ``category``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")
MODALITIES = ("ct", "xray")
MASK_LAYOUTS = ("labels", "channels")
_MASK_KEYS = {"path", "layout", "labels", "boxes", "sentences", "flip_axes"}
_SENTENCE_KEYS = {"text", "label", "channel", "category"}


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
    masks: dict[str, Any] = field(default_factory=dict)  # where findings are drawn (module docstring)
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
        if self.masks:
            self.masks = checked_masks(self.masks)
        if self.hu_rescale is not None:
            self.hu_rescale = tuple(float(v) for v in self.hu_rescale)  # type: ignore[assignment]
            if len(self.hu_rescale) != 2:
                raise ValueError("'hu_rescale' is [slope, intercept]")

    def image_paths(self) -> list[Path]:
        return [Path(p) if Path(p).is_absolute() or self.root is None else self.root / p for p in self.images]

    def mask_path(self) -> Path | None:
        """The mask file (resolved like the images), or None when the record has no masks."""
        if not self.masks:
            return None
        path = Path(self.masks["path"])
        return path if path.is_absolute() or self.root is None else self.root / path

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_box(name: str, box: Any) -> list[list[float]]:
    if not (isinstance(box, (list, tuple)) and len(box) == 2
            and all(isinstance(c, (list, tuple)) and len(c) == 3 for c in box)):
        raise ValueError(f"masks: box of {name!r} must be [[L, P, S], [L, P, S]] (min and max corner, mm)")
    low, high = ([float(v) for v in corner] for corner in box)
    if any(a > b for a, b in zip(low, high)):
        raise ValueError(f"masks: box of {name!r} has a min corner beyond its max corner")
    return [low, high]


def _checked_sentence(index: int, sentence: Any, layout: str) -> dict[str, Any]:
    key = "channel" if layout == "channels" else "label"
    if not isinstance(sentence, dict) or not isinstance(sentence.get("text"), str) or not sentence["text"]:
        raise ValueError(f"masks: sentence {index} must be an object with a non-empty 'text'")
    extra = sorted(set(sentence) - _SENTENCE_KEYS)
    if extra:
        raise ValueError(f"masks: sentence {index} has unknown field(s) {', '.join(extra)}")
    value = sentence.get(key)
    if not _is_int(value) or value < (0 if key == "channel" else 1):
        raise ValueError(f"masks: sentence {index} needs '{key}' (an integer "
                         f"{'>= 0' if key == 'channel' else '>= 1'}) in the {layout} layout")
    other = "label" if key == "channel" else "channel"
    if other in sentence:
        raise ValueError(f"masks: sentence {index} gives '{other}', which the {layout} layout does not use")
    if "category" in sentence and not isinstance(sentence["category"], str):
        raise ValueError(f"masks: sentence {index}: 'category' must be a string")
    return dict(sentence)


def checked_masks(masks: Any) -> dict[str, Any]:
    """A record's ``masks`` checked and normalised (floats, ints; the default layout left out)."""
    if not isinstance(masks, dict):
        raise ValueError("'masks' must be an object with a 'path'")
    extra = sorted(set(masks) - _MASK_KEYS)
    if extra:
        raise ValueError(f"masks: unknown field(s) {', '.join(extra)}")
    if not isinstance(masks.get("path"), str) or not masks["path"]:
        raise ValueError("masks: 'path' (the mask file) is missing or empty")
    layout = masks.get("layout", "labels")
    if layout not in MASK_LAYOUTS:
        raise ValueError(f"masks: 'layout' must be one of {', '.join(MASK_LAYOUTS)}, got {layout!r}")
    labels = masks.get("labels", {})
    if not isinstance(labels, dict) or not all(_is_int(v) and v >= 1 for v in labels.values()):
        raise ValueError("masks: 'labels' maps finding names to label values (integers >= 1)")
    if labels and layout != "labels":
        raise ValueError("masks: 'labels' belongs to the labels layout; the channels layout names "
                         "its channels in 'sentences'")
    boxes = masks.get("boxes", {})
    if not isinstance(boxes, dict) or not set(boxes) <= set(labels):
        raise ValueError("masks: 'boxes' maps names of 'labels' to boxes")
    sentences = masks.get("sentences", [])
    if not isinstance(sentences, list):
        raise ValueError("masks: 'sentences' must be a list")
    flip_axes = masks.get("flip_axes", [])
    if not isinstance(flip_axes, list) or not all(_is_int(a) and 0 <= a <= 2 for a in flip_axes):
        raise ValueError("masks: 'flip_axes' lists stored axes 0, 1 or 2")
    if flip_axes and layout != "channels":
        raise ValueError("masks: 'flip_axes' applies to the channels layout only")
    out: dict[str, Any] = {"path": masks["path"]}
    if layout != "labels":
        out["layout"] = layout
    if labels:
        out["labels"] = {str(name): int(value) for name, value in labels.items()}
    if boxes:
        out["boxes"] = {name: _checked_box(name, box) for name, box in boxes.items()}
    if sentences:
        out["sentences"] = [_checked_sentence(i, s, layout) for i, s in enumerate(sentences)]
    if flip_axes:
        out["flip_axes"] = sorted(set(flip_axes))
    return out


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
