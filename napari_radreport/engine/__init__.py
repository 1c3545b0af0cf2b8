"""Running models on studies: device choice, background jobs, caches, streaming, tasks. No Qt.

The names below are imported on first use (PEP 562), so ``import napari_radreport.engine.prompts`` or a
dock's ``engine.events`` never loads torch; only loading a model does.
"""

from typing import TYPE_CHECKING

from napari_radreport.common import lazy_exports

_EXPORTS = {  # name -> the module that defines it
    "Choice": "engine", "Engine": "engine", "EngineBusy": "engine", "EngineError": "engine",
    "ModelInfo": "engine", "ReportResult": "engine", "default_model": "engine",
    "GenerationSettings": "decoding",
    "Finished": "events", "Progress": "events", "ScopeChecked": "events", "SectionStarted": "events",
    "Token": "events", "Job": "jobs", "OutOfScope": "engine",
}
__all__ = ["Choice", "Engine", "EngineBusy", "EngineError", "Finished", "GenerationSettings", "Job",
           "ModelInfo", "OutOfScope", "Progress", "ReportResult", "ScopeChecked", "SectionStarted", "Token",
           "default_model"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from napari_radreport.engine.decoding import GenerationSettings
    from napari_radreport.engine.engine import (
        Choice,
        Engine,
        EngineBusy,
        EngineError,
        ModelInfo,
        OutOfScope,
        ReportResult,
        default_model,
    )
    from napari_radreport.engine.events import Finished, Progress, ScopeChecked, SectionStarted, Token
    from napari_radreport.engine.jobs import Job
