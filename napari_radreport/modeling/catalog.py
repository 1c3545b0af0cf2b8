"""The model folders in a folder, described from their files alone: family, parameters, scope and the memory
their weights take at each precision (what ``radreport models`` prints and the Settings dock lists).

Nothing is loaded: the family and the scope come from config.json (``families.declared``), the parameter
count from the safetensors headers (``checkpoints.safetensors_header``). A folder that is not a model is
skipped; one that looks like a model but cannot be read is listed with the problem in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_radreport.modeling.checkpoints import (
    CheckpointError,
    safetensors_header,
    weight_files,
)
from napari_radreport.modeling.scope import ModelScope

# Bytes per parameter of the weights alone (activations, the key/value cache and the image encoder's
# working memory come on top): full, half, and 8-bit and 4-bit weights (modeling/quantize.py; its scales
# and the layers it keeps in floating point add a little: engine/memory_plan.py counts them).
PRECISIONS: dict[str, float] = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class ModelEntry:
    """One model folder as its files describe it."""

    path: Path
    family: str = ""  # a ModelFamily's name, or "m3d-lamed" (converted when first loaded)
    parameters: int = 0  # counted over the safetensors headers
    scope: ModelScope | None = None
    problem: str = ""  # why the folder could not be described ("" when it could)

    @property
    def name(self) -> str:
        return self.path.name

    def weight_bytes(self, precision: str) -> int:
        return int(self.parameters * PRECISIONS[precision])

    def as_dict(self) -> dict[str, Any]:
        scope = self.scope
        return {"name": self.name, "path": str(self.path), "family": self.family,
                "parameters": self.parameters,
                "modalities": list(scope.modalities) if scope else [],
                "body_regions": list(scope.body_regions) if scope else [],
                "synthetic_only": bool(scope and scope.synthetic_only),
                "training_data": scope.training_data if scope else "",
                "weight_bytes": {p: self.weight_bytes(p) for p in PRECISIONS}, "problem": self.problem}


def weight_summary(files: list[Path]) -> tuple[int, int]:
    """(tensors, parameters) in safetensors ``files``, from their headers (``checkpoints.safetensors_header``:
    a cut or garbled file is a CheckpointError naming it)."""
    tensors = parameters = 0
    for path in files:
        for name, tensor in safetensors_header(path).items():
            if name != "__metadata__":
                tensors += 1
                parameters += math.prod(tensor.get("shape", []))
    return tensors, parameters


def stored_float_dtype(folder: Path) -> str | None:
    """The safetensors dtype ("F32", "BF16", "F16") that holds most of a folder's floating-point weights,
    from the headers; None for a folder without safetensors files."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for path in sorted(Path(folder).glob("*.safetensors")):
        for name, tensor in safetensors_header(path).items():
            if name != "__metadata__" and tensor.get("dtype", "").startswith(("F", "BF")):
                counts[tensor["dtype"]] += math.prod(tensor.get("shape", []))
    return counts.most_common(1)[0][0] if counts else None


def parameter_count(folder: Path) -> int:
    """The number of weights in a folder's safetensors files, from their headers."""
    return weight_summary(weight_files(folder))[1]


def describe_model(folder: str | Path) -> ModelEntry:
    """The entry of one model folder (``problem`` says what could not be read)."""
    from napari_radreport.modeling.families import declared

    folder = Path(folder)
    try:
        family, scope = declared(folder)
        return ModelEntry(folder, family, parameter_count(folder), scope)
    except (CheckpointError, ValueError, OSError) as exc:
        return ModelEntry(folder, problem=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def find_models(folder: str | Path) -> list[ModelEntry]:
    """Every model folder in ``folder`` (its subfolders with a config.json, or the folder itself), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if (folder / "config.json").is_file():
        return [describe_model(folder)]
    return [describe_model(sub) for sub in sorted(folder.iterdir(), key=lambda p: p.name.lower())
            if sub.is_dir() and (sub / "config.json").is_file()]


def human_bytes(count: float) -> str:
    """'18 MB', '8.0 GB': decimal units, as disks and model cards give them."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            value = count / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{count:.0f} B"


def human_count(count: int) -> str:
    """'4.6 M', '7.2 B' parameters."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return str(count)


def describe_line(entry: ModelEntry) -> str:
    """One line: family, size, what it reads, memory at each precision (or the problem)."""
    if entry.problem:
        return f"{entry.name}: {entry.problem}"
    scope = entry.scope
    reads = scope.describe() if scope else ""
    memory = " / ".join(f"{human_bytes(entry.weight_bytes(p))} {p}" for p in PRECISIONS)
    size = human_count(entry.parameters)
    return f"{entry.name}: {entry.family}, {size} parameters; {reads}; weights {memory}"
