"""Which models and studies can be grounded today: one rule for the engine and the docks (no torch)."""

from __future__ import annotations

OWN_PROCESSOR_FAMILY = "radreport"  # models whose pixels come from this project's processor


def grounding_refusal(family: str, modality: str, study) -> str:
    """Why a model of ``family`` reading ``modality`` cannot locate sentences in ``study``; '' when it can:
    a CT model on a volume, a radiograph model on a set of radiographs (in each radiograph's pixels)."""
    if family != OWN_PROCESSOR_FAMILY:
        return (f"grounding needs a model whose pixels come from this project's processor; this one "
                f"({family}) prepares its images with its own processor")
    if modality == "ct" and getattr(study, "is_volume", False):
        return ""
    if modality == "xray" and getattr(study, "kind", "") == "xray_set":
        return ""
    return f"this {modality} model cannot locate findings in a {getattr(study, 'kind', 'study')} study"
