"""Running models on studies: device choice, background jobs, caches, streaming, tasks. No Qt."""

from napari_radreport.engine.decoding import GenerationSettings
from napari_radreport.engine.engine import (
    Choice,
    Engine,
    EngineBusy,
    EngineError,
    ModelInfo,
    ReportResult,
    default_model,
)
from napari_radreport.engine.events import Finished, Progress, SectionStarted, Token
from napari_radreport.engine.jobs import Job

__all__ = ["Choice", "Engine", "EngineBusy", "EngineError", "Finished", "GenerationSettings", "Job", "ModelInfo",
           "Progress", "ReportResult", "SectionStarted", "Token", "default_model"]
