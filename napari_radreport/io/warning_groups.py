"""A study's warnings in the order a reader needs them: what changes how the images look first.

Each warning gets a kind from its leading words (``KINDS``, the one place those words are listed) and each
kind a rank (``RANKS``): mixed patients, then tilt and obliquity, then geometry and spacing, then values,
then anything unrecognised, then identity and bookkeeping. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

OTHER = "other"

# (kind, pattern matched at the start of the warning), in the order they are tried.
KINDS: tuple[tuple[str, str], ...] = (
    ("patients", r"MIXED PATIENTS\b"),
    ("tilt", r"gantry tilt\b"),
    ("oblique", r"oblique (?:slices|volume)\b"),
    ("orientation", r"header has no sform or qform\b"),
    ("gaps", r"(?:gap:|\d+ gaps in slice positions\b)"),
    ("spacing", r"(?:variable slice spacing|PixelSpacing missing|pixdim voxel size)\b"),
    ("affine", r"sform \(code \d+\)"),
    ("nonfinite", r"[\d,]+ of [\d,]+ \w+ \([^)]*\) are NaN or infinite\b"),
    ("rescale", r"(?:[^:]*: )?(?:RescaleSlope|RescaleIntercept|scl_slope)\b"),
    ("identity", r"patient identity unknown\b"),
    ("left_out", r"[\d,]+ image\(s\) with an invalid position or orientation not opened\b"),
    ("localizer", r"this series is a localizer\b"),
)

# Kinds from most to least important to reading the images; OTHER sits where unrecognised warnings go.
RANKS: tuple[tuple[str, ...], ...] = (
    ("patients",),
    ("tilt", "oblique", "orientation"),
    ("gaps", "spacing", "affine"),
    ("nonfinite", "rescale"),
    (OTHER,),
    ("identity", "left_out", "localizer"),
)

_PATTERNS = tuple((kind, re.compile(pattern)) for kind, pattern in KINDS)
_RANK_OF_KIND = {kind: rank for rank, kinds in enumerate(RANKS) for kind in kinds}


def kind_of(warning: str) -> str:
    """The kind of ``warning`` from its leading words; ``OTHER`` when none matches."""
    return next((kind for kind, pattern in _PATTERNS if pattern.match(warning)), OTHER)


def rank_of(warning: str) -> int:
    """0 for the warnings that matter most to reading the images; larger is less."""
    return _RANK_OF_KIND[kind_of(warning)]


def collapsed(warnings: Iterable[str]) -> list[str]:
    """Identical lines once, at their first place, as ``"text (×N)"`` when repeated."""
    counts = Counter(warnings)
    return [text if n == 1 else f"{text} (×{n})" for text, n in counts.items()]


def ranked(warnings: Iterable[str]) -> list[str]:
    """``warnings`` with repeats collapsed, most important first; stable within a rank."""
    return sorted(collapsed(warnings), key=rank_of)
