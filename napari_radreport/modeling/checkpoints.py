"""Reading checkpoint folders safely: safetensors by default, pickles only when asked, no hub access."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message says which file and why."""


def require_local_folder(path: str | Path) -> Path:
    """A local folder, or a one-line error saying how to point at local weights (no hub is contacted)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    looks_like_hub_id = (not folder.exists() and str(path).count("/") == 1
                         and not str(path).startswith((".", "/", "~")))
    if looks_like_hub_id:
        raise CheckpointError(
            f"{path}: not a local folder; napari-radreport never downloads weights. "
            "Download the checkpoint on a machine with network access and pass its local folder "
            "(config.json + *.safetensors)"
        )
    raise CheckpointError(f"{path}: no such checkpoint folder")


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def weight_files(folder: Path, *, allow_pickle: bool = False) -> list[Path]:
    """The safetensors shards of a folder (via the index when present); pickles only with allow_pickle."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shards named in the index are missing: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        raise CheckpointError(
            f"{folder}: only pickle weights ({pickles[0].name}); they can run arbitrary code when loaded. "
            "Convert them to safetensors, "
            "or pass allow_pickle=True (--allow-pickle) if you trust their source"
        )
    if pickles:
        warnings.warn(f"{folder}: loading pickle weights because allow_pickle was given", stacklevel=2)
        return pickles
    raise CheckpointError(f"{folder}: no weights (*.safetensors) found")


def iter_tensors(files: list[Path]) -> Iterator[tuple[Path, dict]]:
    """(file, {name: tensor}) for each weight file, one file in memory at a time."""
    import torch
    from safetensors.torch import load_file

    for f in files:
        if f.suffix == ".safetensors":
            yield f, load_file(str(f))
        else:
            yield f, torch.load(str(f), map_location="cpu", weights_only=True)
