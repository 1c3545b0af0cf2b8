"""The encoder -> perceiver -> LLM model in the transformers style (imports torch and transformers)."""

from napari_radreport.modeling.configuration import (
    PERCEIVER_TYPES,
    ConfigError,
    PerceiverConfig,
    RadReportConfig,
    ViT3DConfig,
)
from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

__all__ = [
    "PERCEIVER_TYPES",
    "ConfigError",
    "PerceiverConfig",
    "RadReportConfig",
    "RadReportForConditionalGeneration",
    "ViT3DConfig",
]
