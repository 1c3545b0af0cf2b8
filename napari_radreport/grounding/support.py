"""Which models and studies can be grounded today: one rule for the engine and the docks (no torch)."""

from __future__ import annotations

OWN_PROCESSOR_FAMILY = "radreport"  # models whose pixels come from this project's processor


def grounding_refusal(family: str, modality: str, study) -> str:
    """Why a model of ``family`` reading ``modality`` cannot locate sentences in ``study``; '' when it can."""
    if family != OWN_PROCESSOR_FAMILY:
        return (f"grounding needs a model whose pixels come from this project's processor; this one "
                f"({family}) prepares its images with its own processor")
    if modality != "ct" or not getattr(study, "is_volume", False):
        return "grounding works on CT volumes for now; radiographs are not located yet"
    return ""
