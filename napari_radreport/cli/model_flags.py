"""The flags that say how a model loads, shared by every command that loads one (no torch at import)."""

from __future__ import annotations

import argparse

from napari_radreport.engine.device import DTYPES
from napari_radreport.modeling.quantize import QUANTIZATIONS


def add_precision_flags(parser: argparse.ArgumentParser) -> None:
    """``--dtype`` (the compute dtype) and ``--quantize`` (weight-only 8-bit or 4-bit layers)."""
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="compute dtype: auto (bfloat16 on CUDA, float32 elsewhere), bfloat16, float16 "
                             "or float32")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                        help="store the Linear layers' weights in 8 bits (int8) or 4 bits (int4), about 1/4 "
                             "or 1/8 of float32's memory; provenance records it")
