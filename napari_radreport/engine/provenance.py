"""Identify the weights that produced a draft: a hash of the weight files, computed once per file version."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from napari_radreport.common import write_atomic

CACHE_DIR = Path(os.environ.get("RADREPORT_CACHE", Path.home() / ".cache" / "napari-radreport"))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of one file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(folder: str | Path) -> str:
    """SHA-256 over the weight files' own SHA-256 values, in name order; each file hashed once per version."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    if not files:
        return ""
    store = CACHE_DIR / "weights-sha256.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    combined = hashlib.sha256()
    changed = False
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in known:
            known[key] = file_sha256(path)
            changed = True
        combined.update(f"{path.name}:{known[key]}\n".encode())
    if changed:
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(store, json.dumps(known, indent=1).encode())
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return combined.hexdigest()
