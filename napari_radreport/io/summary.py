"""A JSON-ready description of a Study (used by `radreport info` and the Study dock); NaN/inf become null.

Its warnings are ``Study.warnings`` ranked by ``warning_groups.ranked`` (most important first)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_radreport.io.study import ImageData, Study
from napari_radreport.io.warning_groups import ranked


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as None and numpy scalars and tuples as plain JSON types, so that
    ``json.dumps(..., allow_nan=False)`` holds."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _round(values, digits: int = 4):
    return None if values is None else [None if v is None else round(float(v), digits) for v in values]


def image_summary(image: ImageData, kind: str) -> dict[str, Any]:
    lo, hi = image.value_range()
    return {
        "label": image.label,
        "shape": list(image.array.shape),
        "dtype": str(image.array.dtype),
        "spacing_mm": _round(image.spacing),
        "orientation": list(image.orientation) if image.orientation else None,
        "origin_mm_lps": _round(image.origin, 3),
        "modality": image.modality,
        "value_range": [lo, hi],
        "value_unit": "HU" if kind == "ct" else "stored value",
        "view_position": image.view_position,
    }


def study_summary(study: Study) -> dict[str, Any]:
    images = [image_summary(im, study.kind) for im in study.images]
    summary: dict[str, Any] = {
        "kind": study.kind,
        "source": (list(study.source[:3])
                   + ([f"... {len(study.source) - 3} more"] if len(study.source) > 3 else [])),
        "modality": study.modality,
        "tags": study.tags.as_dict(),
        "series": [s.as_dict() for s in study.series],
        "chosen_series": study.chosen_series.index if study.chosen_series else None,
        "warnings": ranked(study.warnings),  # repeats collapsed, what matters most to reading first
        "notes": list(study.notes),
    }
    if study.is_volume and len(images) == 1:
        summary.update({k: images[0][k]
                        for k in ("shape", "spacing_mm", "orientation", "origin_mm_lps", "value_range")})
        lead = len(images[0]["shape"]) - 3
        summary["axes"] = [f"axis {i}" for i in range(lead)] + ["S->I", "A->P", "R->L"]
        summary["value_unit"] = images[0]["value_unit"]
    summary["images"] = images
    if "original_affine_ras" in study.extra:
        summary["original_affine_ras"] = study.extra["original_affine_ras"]
    return json_safe(summary)
