"""How a draft was produced: the provenance record the docks and the command line attach to a report, and a
hash of the weight files (computed once per file version)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from napari_radreport.common import utc_now, write_atomic
from napari_radreport.engine.events import EventCallback
from napari_radreport.paths import cache_dir

if TYPE_CHECKING:
    from napari_radreport.engine.decoding import GenerationSettings
    from napari_radreport.engine.engine import ModelInfo
    from napari_radreport.export import Provenance
    from napari_radreport.modeling.scope import ScopeVerdict


def report_task(sections: Sequence[str], regions: Sequence[str] | None = None) -> str:
    """The task a report draft answered, as provenance names it:
    "report:findings+impression;regions=chest"."""
    return "report:" + "+".join(sections) + (f";regions={','.join(regions)}" if regions else "")


def report_provenance(info: ModelInfo, task: str, settings: GenerationSettings,
                      scope: ScopeVerdict | None = None) -> Provenance:
    """The provenance of a draft that the loaded model ``info`` writes now for ``task`` with ``settings``,
    with the study's scope verdict when it is known."""
    from napari_radreport import __version__
    from napari_radreport.export import Provenance

    return Provenance(model_name=info.name, model_path=info.path, weights_sha256=info.weights_sha256,
                      adapter=",".join(info.adapters), recipe=info.name, task=task,
                      generation=settings.as_dict(), device=info.device, dtype=info.dtype,
                      quantization=info.quantization,
                      generated_at=utc_now(), software_version=__version__,
                      weight_problems=list(info.incomplete), scope=scope.as_dict() if scope else {})


def file_sha256(path: str | Path, on_block: Callable[[int], None] | None = None) -> str:
    """SHA-256 of one file's bytes, read in 4 MiB blocks (``on_block`` gets each block's length)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
            if on_block is not None:
                on_block(len(block))
    return digest.hexdigest()


def weights_sha256(folder: str | Path, on_event: EventCallback | None = None) -> str:
    """SHA-256 over the weight files' own SHA-256 values, in name order; each file hashed once per version.
    With ``on_event``, hashing that has to read files is a stage of the load ("Hashing the weights for
    provenance 1.2/4.2 GB · 3.0 s"); hashes already known send nothing."""
    from napari_radreport.engine.stages import Stage, byte_counts

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    if not files:
        return ""
    store = cache_dir() / "weights-sha256.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    keys = {}
    for path in files:
        stat = path.stat()
        keys[path] = (f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}", stat.st_size)
    todo = sum(size for key, size in keys.values() if key not in known)
    read = [0]

    def block(length: int) -> None:
        read[0] += length
        stage.advance(read[0])

    stage = None
    if todo and on_event is not None:
        stage = Stage(on_event, "load", "Hashing the weights for provenance", total=todo, counts=byte_counts)
    combined = hashlib.sha256()
    changed = False
    for path, (key, _size) in keys.items():
        if key not in known:
            known[key] = file_sha256(path, block if stage is not None else None)
            changed = True
        combined.update(f"{path.name}:{known[key]}\n".encode())
    if stage is not None:
        stage.finish()
    if changed:
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(store, json.dumps(known, indent=1).encode())
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return combined.hexdigest()
