"""What every dataset adapter shares: the summary it returns, its one-line errors and file helpers."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MISSING_POLICIES = ("error", "skip")
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


class DatasetFormatError(ValueError):
    """Input that does not have the expected layout; the message names the file and the problem."""


@dataclass
class ConversionSummary:
    """What a conversion wrote, what it skipped (reason -> count) and other counts worth knowing."""

    source: str
    out: Path | None = None
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def note(self, what: str) -> None:
        self.notes[what] += 1

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def describe(self) -> str:
        """A few lines for people: written per split, skipped per reason, notes."""
        splits = ", ".join(f"{s} {n}" for s, n in sorted(self.splits.items()))
        lines = [f"wrote {self.written} record(s) to {self.out}" + (f" ({splits})" if splits else "")]
        if self.skipped:
            reasons = "; ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()))
            lines.append(f"skipped {self.skipped_total}: {reasons}")
        lines += [f"{what}: {n}" for what, n in sorted(self.notes.items())]
        return "\n".join(lines)


def check_missing_policy(missing: str) -> None:
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")


def prepare_out(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".jsonl", ".json"):
        raise ValueError(f"{out}: a manifest is a .jsonl file")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    return out


def finish(out: Path, records: list, summary: ConversionSummary) -> ConversionSummary:
    """Write the manifest (refusing to write an empty one) and fill in the summary's totals."""
    from napari_radreport.data.manifest import write_manifest

    summary.out = out
    if not records:
        reasons = ("; ".join(f"{r}: {n}" for r, n in sorted(summary.skipped.items()))
                   or "the input holds no studies")
        raise DatasetFormatError(f"{summary.source}: no records to write ({reasons})")
    repeated = next((i for i, n in Counter(r.id for r in records).items() if n > 1), None)
    if repeated is not None:
        raise DatasetFormatError(f"{summary.source}: two studies would get the id {repeated!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(out, records)
    summary.written = len(records)
    summary.splits = Counter(r.split for r in records)
    return summary


def image_ref(path: Path, manifest_dir: Path) -> str:
    """How a manifest names an image: relative to the manifest's folder when inside it, else absolute."""
    path = path.resolve()
    try:
        return path.relative_to(manifest_dir.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def text(value: Any) -> str:
    """A report field as clean text ('' for empty, None, NaN and the strings 'nan'/'None')."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    value = str(value).strip()
    return "" if value.lower() in ("nan", "none", "null") else value


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a CSV file; a missing file or column is a one-line error naming it."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetFormatError(
                    f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}"
                    + (f" (found {', '.join(header[:8])}{', ...' if len(header) > 8 else ''})" if header
                       else " (the file is empty)"))
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError(f"{path}: not a readable CSV file ({exc})") from exc


def read_json(path: Path) -> Any:
    """A JSON file's content; errors name the file and where it broke."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path}: not a UTF-8 text file") from exc
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def read_json_records(path: Path) -> list[tuple[str | None, dict]]:
    """(split key or None, record) pairs of a JSON array, a JSON Lines file, or an object of split -> list."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path}: not a UTF-8 text file") from exc
    stripped = raw.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and path.suffix.lower() == ".json"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = None  # maybe JSON Lines named .json
        if isinstance(data, list):
            items: Iterable[tuple[str | None, Any]] = ((None, item) for item in data)
            return _objects(path, items)
        if isinstance(data, dict):
            lists = {k: v for k, v in data.items() if isinstance(v, list)}
            if lists and set(lists) <= set(SPLIT_WORDS):
                return _objects(path, ((key, item) for key, items in lists.items() for item in items))
            if not set(data) & set(SPLIT_WORDS):
                return _objects(path, [(None, data)])  # one study
            raise DatasetFormatError(f"{path}: a JSON object must map splits ({', '.join(SPLIT_WORDS)}) "
                                     f"to lists of studies; found {', '.join(sorted(data))}")
    records = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((None, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    return _objects(path, records)


def _objects(path: Path, items: Iterable[tuple[str | None, Any]]) -> list[tuple[str | None, dict]]:
    out = []
    for index, (key, item) in enumerate(items):
        if not isinstance(item, dict):
            raise DatasetFormatError(f"{path}: study {index} is a {type(item).__name__}, not a JSON object")
        out.append((key, item))
    return out


def split_from_name(name: str) -> str:
    """train / val / test from a file or key name ('validation_reports.csv' -> val); train when none is
    named."""
    for word in re.split(r"[^a-z]+", name.lower()):
        if word in SPLIT_WORDS:
            return SPLIT_WORDS[word]
    return "train"


def check_split(split: str | None, allowed: Sequence[str] = ("train", "val", "test")) -> str | None:
    if split is None:
        return None
    split = SPLIT_WORDS.get(split, split)
    if split not in allowed:
        raise ValueError(f"split must be one of {', '.join(allowed)}, got {split!r}")
    return split
