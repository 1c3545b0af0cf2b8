"""Which models and studies can be grounded today: one rule for the engine and the docks (no torch)."""

from __future__ import annotations

OWN_PROCESSOR_FAMILY = "radreport"  # models whose pixels come from this project's processor
# families whose images come from a processor of their own but that say where each image token lies
# (``token_grid``: modeling/medgemma.py)
TOKEN_GRID_FAMILIES = ("medgemma",)


def grounding_refusal(family: str, modality: str, study) -> str:
    """Why a model of ``family`` reading ``modality`` ("ct", "xray" or both joined by "+") cannot locate
    sentences in ``study``; '' when it can: a CT model on a volume, a radiograph model on a set of
    radiographs (in each radiograph's pixels)."""
    if family != OWN_PROCESSOR_FAMILY and family not in TOKEN_GRID_FAMILIES:
        return (f"grounding needs a model whose pixels come from this project's processor, or whose image "
                f"tokens' place is known; this one ({family}) prepares its images with its own processor")
    reads = modality.split("+")
    if "ct" in reads and getattr(study, "is_volume", False):
        return ""
    if "xray" in reads and getattr(study, "kind", "") == "xray_set":
        return ""
    return f"this {modality} model cannot locate findings in a {getattr(study, 'kind', 'study')} study"
