"""Public datasets -> training manifests: one module per format, each with ``convert_<format>(src, out,
...)``.

Every converter returns a ``ConversionSummary`` (records written per split, skipped per reason, other counts)
and fails on input it does not understand with a ``DatasetFormatError`` whose one-line message names the file
and the problem. The layouts each one expects, and where they were checked, are in the modules and
docs/datasets.md.
"""

from __future__ import annotations

from napari_radreport.data.adapters._common import ConversionSummary, DatasetFormatError
from napari_radreport.data.adapters.amos_mm import convert_amos_mm
from napari_radreport.data.adapters.bimcv_r import convert_bimcv_r
from napari_radreport.data.adapters.ct_rate import convert_ct_rate
from napari_radreport.data.adapters.rexgroundingct import convert_rexgroundingct
from napari_radreport.data.adapters.rrg24 import convert_rrg24

CONVERTERS = {"ct-rate": convert_ct_rate, "amos-mm": convert_amos_mm, "rrg24": convert_rrg24,
              "bimcv-r": convert_bimcv_r, "rexgroundingct": convert_rexgroundingct}

__all__ = ["CONVERTERS", "ConversionSummary", "DatasetFormatError", "convert_amos_mm", "convert_bimcv_r",
           "convert_ct_rate", "convert_rexgroundingct", "convert_rrg24"]
