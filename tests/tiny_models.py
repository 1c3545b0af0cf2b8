"""Tiny random-weight model folders in our format, with a word-level tokenizer that knows the task words.

Random weights: the text they write is meaningless; the tests check the mechanics (streaming, caches,
stopping, batching, export), never the content. The builders live in ``napari_radreport.bench.random_model``
(the benchmarks use them at real sizes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from napari_radreport.bench.random_model import (
    EXTRA_WORDS,  # noqa: F401 (tests import it from here)
    TINY_CT,
    TINY_XRAY,
    write_random_radreport,
    write_word_tokenizer,
)


def write_tokenizer(folder: Path, image_token: str):
    return write_word_tokenizer(folder, image_token)


def write_tiny_radreport(folder: Path, modality: str = "ct", seed: int = 0, layers: int = 2) -> Path:
    """A loadable model folder (config, safetensors, tokenizer) for CT volumes or radiograph sets."""
    size = TINY_CT if modality == "ct" else TINY_XRAY
    size = dataclasses.replace(size, text={**size.text, "num_hidden_layers": layers})
    return write_random_radreport(folder, size, seed)
