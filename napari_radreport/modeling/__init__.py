"""The encoder -> perceiver -> LLM model in the transformers style.

Its modules import torch and transformers; this face imports them only when one of its names is first used.
"""

from typing import TYPE_CHECKING

from napari_radreport.common import lazy_exports

_EXPORTS = {
    "PERCEIVER_TYPES": "configuration", "ConfigError": "configuration", "PerceiverConfig": "configuration",
    "RadReportConfig": "configuration", "ViT3DConfig": "configuration",
    "RadReportForConditionalGeneration": "modeling_radreport",
}
__all__ = ["PERCEIVER_TYPES", "ConfigError", "PerceiverConfig", "RadReportConfig",  # the names of _EXPORTS
           "RadReportForConditionalGeneration", "ViT3DConfig"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from napari_radreport.modeling.configuration import (
        PERCEIVER_TYPES,
        ConfigError,
        PerceiverConfig,
        RadReportConfig,
        ViT3DConfig,
    )
    from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration
