"""Grounding scores: does each sentence that states a finding point to where that finding is in the image?

The engine gives, per report sentence, ``{"section", "text", "finding", "location"}`` with ``finding`` a key
of ``consistency.FINDINGS`` (None when the sentence states no finding present) and ``location``
``{"method", "peak_lps_mm": [x, y, z], "box_lps_mm": [[x0, y0, z0], [x1, y1, z1]]}`` or None; optionally a
mask on the study's array grid (``location_mask`` in the dict, or ``GroundingCase.masks``). The truth comes
from the manifest record (``data/truth.py``): its ``masks`` (read through the project's NIfTI reader, so a
mask lies on exactly the grid of ``Study.array``), else its ``positions`` (centres only).

A sentence is compared with the truth regions of the same sentence text (datasets whose masks are per
sentence, ReXGroundingCT), else with every region of its finding (the union of both sides of a bilateral
effusion). For a compared (*scored*) sentence:

- **hit**: the peak lies inside the truth mask (the voxel nearest to it); with only centres, the peak lies
  within ``distance_mm`` (default 10 mm) of one. A sentence without a location counts as a miss;
- **Dice** of the predicted mask (values >= ``threshold`` are inside; bool as it is) and the truth mask, when
  the method gives masks; a sentence without a location then counts as Dice 0;
- **box IoU** of the predicted box and the truth box (the best of each region's box and the union's box); a
  sentence without a location counts as IoU 0.

A sentence stating a finding the study does not have is not scored (``finding absent``), nor one whose
finding is present but drawn nowhere (``no truth region``: cardiomegaly, emphysema on the phantoms). Figures
are ratios of counts summed over studies, per method and per finding, with percentile intervals over seeded
resamples of the studies (``bootstrap.bootstrap_ratios``, all figures on the same draws). No Qt, no torch.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_radreport.data.truth import StudyTruth, TruthRegion
from napari_radreport.grounding.geometry import StudyGrid

DISTANCE_MM = 10.0  # a peak within this distance of a truth centre is a hit (truth without a mask)
THRESHOLD = 0.5  # a predicted mask given as probabilities is inside from this value
FIGURES = ("located", "hit_rate", "dice", "box_iou")
SCORED, ABSENT, NO_REGION, NOT_A_FINDING = "scored", "finding absent", "no truth region", "not a finding"


def _normal_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".;: ").lower()


def box_iou(a, b) -> float:
    """Intersection over union of two axis-aligned boxes, each (min corner, max corner)."""
    (a0, a1), (b0, b1) = (np.sort(np.asarray(box, float), axis=0) for box in (a, b))
    overlap = np.prod(np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None))
    union = np.prod(a1 - a0) + np.prod(b1 - b0) - overlap
    return float(overlap / union) if union > 0 else 0.0


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """2 |P & T| / (|P| + |T|) of two bool arrays of the same shape (1 when both are empty)."""
    if prediction.shape != truth.shape:
        raise ValueError(f"a predicted mask of shape {prediction.shape} is not on the study's grid "
                         f"{truth.shape}")
    total = int(prediction.sum()) + int(truth.sum())
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total if total else 1.0


# -- scoring ---------------------------------------------------------------------------------------------
@dataclass
class GroundingCase:
    """One study grounded by one method: the sentences (``as_dict`` of the engine's grounded sentences), the
    masks on the study's grid beside them (or None), the truth, and the method asked for."""

    id: str
    truth: StudyTruth
    sentences: list[dict[str, Any]]
    masks: list[np.ndarray | None] | None = None
    method: str = ""


@dataclass
class SentenceScore:
    """What one sentence got: its status and, when scored, whether it was located, hit, its Dice and IoU."""

    study: str
    index: int
    method: str
    finding: str  # the finding the figures group it under ("other" when none is known)
    status: str  # SCORED, ABSENT, NO_REGION or NOT_A_FINDING
    located: bool = False
    hit: bool | None = None
    dice: float | None = None  # None: no predicted mask (or no truth mask)
    iou: float | None = None  # None: no truth box
    has_mask: bool = False
    truth: tuple[str, ...] = ()  # the truth regions it was compared with
    text: str = ""  # the sentence

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _matching_regions(sentence: dict, truth: StudyTruth) -> list[TruthRegion]:
    text = _normal_text(str(sentence.get("text") or ""))
    by_text = [r for r in truth.regions if r.text and _normal_text(r.text) == text]
    if by_text:
        return by_text
    finding = sentence.get("finding")
    return [r for r in truth.regions if finding is not None and r.finding == finding]


def _hit(peak, regions: list[TruthRegion], grid: StudyGrid, distance_mm: float) -> bool:
    masks = [r.mask for r in regions if r.mask is not None]
    if masks:
        voxel = grid.voxel_of(peak)
        return voxel is not None and any(bool(m[voxel]) for m in masks)
    centres = [c for r in regions for c in r.centres]
    return bool(centres) and min(float(np.linalg.norm(np.asarray(peak, float) - c)) for c in centres) \
        <= distance_mm


def _truth_boxes(regions: list[TruthRegion]) -> list[tuple[np.ndarray, np.ndarray]]:
    boxes = [r.box for r in regions if r.box is not None]
    if len(boxes) > 1:
        boxes.append((np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)))
    return boxes


def _predicted_mask(mask, threshold: float) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask >= threshold


def score_sentence(sentence: dict, truth: StudyTruth, mask: np.ndarray | None = None, *, study: str = "",
                   index: int = 0, method: str = "", distance_mm: float = DISTANCE_MM,
                   threshold: float = THRESHOLD) -> SentenceScore:
    """One sentence against the truth (module docstring): its status, and hit, Dice and box IoU if scored."""
    location = sentence.get("location")
    method = method or (location or {}).get("method") or "unknown"  # the method asked, when known
    regions = _matching_regions(sentence, truth)
    finding = sentence.get("finding") or next((r.finding for r in regions if r.finding), None)
    score = SentenceScore(study, index, method, finding or "other", SCORED,
                          text=str(sentence.get("text") or ""))
    if not regions:
        named = sentence.get("finding") is not None
        score.status = NOT_A_FINDING if not named else ABSENT if finding not in truth.present else NO_REGION
        return score
    score.truth = tuple(r.name for r in regions)
    union = None
    if any(r.mask is not None for r in regions):
        union = np.logical_or.reduce([r.mask for r in regions if r.mask is not None])
    boxes = _truth_boxes(regions)
    predicted = _predicted_mask(mask if mask is not None else sentence.get("location_mask"), threshold)
    score.has_mask = predicted is not None
    if location is None:  # a miss: no place is named
        score.hit, score.iou = False, 0.0 if boxes else None
        score.dice = 0.0 if union is not None else None
        return score
    score.located = True
    score.hit = _hit(location["peak_lps_mm"], regions, truth.grid, distance_mm)
    if boxes:
        score.iou = max(box_iou(location["box_lps_mm"], box) for box in boxes)
    if predicted is not None and union is not None:
        score.dice = dice(predicted, union)
    return score


def score_cases(cases: Sequence[GroundingCase], *, distance_mm: float = DISTANCE_MM,
                threshold: float = THRESHOLD) -> list[SentenceScore]:
    """Every sentence of every case, scored."""
    scores = []
    for case in cases:
        masks = case.masks or [None] * len(case.sentences)
        if len(masks) != len(case.sentences):
            raise ValueError(f"{case.id}: {len(masks)} masks for {len(case.sentences)} sentences")
        for index, (sentence, mask) in enumerate(zip(case.sentences, masks, strict=True)):
            scores.append(score_sentence(sentence, case.truth, mask, study=case.id, index=index,
                                         method=case.method, distance_mm=distance_mm, threshold=threshold))
    return scores


# -- aggregation -----------------------------------------------------------------------------------------
def _counts(score: SentenceScore, method_has_masks: bool) -> dict[str, tuple[float, float]]:
    """A scored sentence's (numerator, denominator) per figure."""
    counts = {"located": (float(score.located), 1.0), "hit_rate": (float(bool(score.hit)), 1.0)}
    if score.iou is not None:
        counts["box_iou"] = (score.iou, 1.0)
    if score.dice is not None and (score.has_mask or (not score.located and method_has_masks)):
        counts["dice"] = (score.dice, 1.0)
    return counts


def _groups(score: SentenceScore) -> tuple[tuple[str, str], ...]:
    return (score.method, ""), (score.method, score.finding)


def _tally(scores: list[SentenceScore], studies: list[str]) -> tuple[list[tuple[str, str, str]], np.ndarray,
                                                                      np.ndarray]:
    """Columns (method, finding or "", figure) and the per-study numerator / denominator matrices."""
    with_masks = {s.method for s in scores if s.has_mask}
    row = {study: i for i, study in enumerate(studies)}
    sums: dict[tuple[str, str, str], np.ndarray] = {}
    for score in scores:
        if score.status != SCORED:
            continue
        for figure, (num, den) in _counts(score, score.method in with_masks).items():
            for method, finding in _groups(score):
                cell = sums.setdefault((method, finding, figure), np.zeros((len(studies), 2)))
                cell[row[score.study]] += (num, den)
    columns = sorted(sums)
    numerators = np.array([sums[c][:, 0] for c in columns]).T.reshape(len(studies), len(columns))
    denominators = np.array([sums[c][:, 1] for c in columns]).T.reshape(len(studies), len(columns))
    return columns, numerators, denominators


def _figure(value: float, low, high, numerator: float, n: float) -> dict[str, Any]:
    return {"value": None if np.isnan(value) else value, "low": low, "high": high,
            "sum": round(float(numerator), 6), "n": int(n)}


def aggregate(scores: list[SentenceScore], studies: Sequence[str], *, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
    """Figures per method and per finding (ratios of sums over ``studies``) with bootstrap intervals."""
    from napari_radreport.evaluation.bootstrap import bootstrap_ratios, ratios

    studies = list(dict.fromkeys(studies))
    if not studies:
        raise ValueError("no studies to score")
    columns, numerators, denominators = _tally(scores, studies)
    if resamples and columns:
        intervals = bootstrap_ratios(numerators, denominators, resamples=resamples, seed=seed, level=level)
        values = [(i.value, i.low, i.high) for i in intervals]
    else:
        values = [(float(v), None, None) for v in ratios(numerators.sum(0), denominators.sum(0))]
    methods: dict[str, Any] = {}
    for j, (method, finding, figure) in enumerate(columns):
        entry = methods.setdefault(method, {"figures": {}, "by_finding": {}})
        target = entry["figures"] if not finding else entry["by_finding"].setdefault(finding, {})
        target[figure] = _figure(*values[j], numerators[:, j].sum(), denominators[:, j].sum())
    status = Counter(s.status for s in scores)
    return {"n_studies": len(studies), "sentences": {"total": len(scores), **dict(status)},
            "methods": methods,
            "bootstrap": {"resamples": resamples, "seed": seed, "level": level, "unit": "studies"}}


def score_grounding(cases: Sequence[GroundingCase], *, distance_mm: float = DISTANCE_MM,
                    threshold: float = THRESHOLD, resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, Any]:
    """Score the grounded sentences of ``cases`` and aggregate per method and finding (module docstring).

    Returns ``n_studies``, ``sentences`` (total and per status), ``methods[method]["figures"][figure]`` and
    ``methods[method]["by_finding"][finding][figure]`` for ``located``, ``hit_rate``, ``dice``, ``box_iou``
    (each ``value``, ``low``, ``high``, ``sum``, ``n``; a figure with no sentence to compute it on is left
    out), ``settings``, ``bootstrap`` and ``details`` (one row per sentence).
    """
    scores = score_cases(cases, distance_mm=distance_mm, threshold=threshold)
    result = aggregate(scores, [case.id for case in cases], resamples=resamples, seed=seed, level=level)
    result["settings"] = {"distance_mm": distance_mm, "threshold": threshold}
    result["details"] = [s.as_dict() for s in scores]
    return result


def format_grounding(result: dict[str, Any]) -> str:
    """A table for the terminal: per method, then per finding, each figure in % with its interval."""
    counts = result["sentences"]
    lines = [f"grounding: {result['n_studies']} studies; sentences: {counts['total']} in all"
             + "".join(f", {n} {status}" for status, n in counts.items() if status != "total")]
    by_row: dict[str, dict[str, Any]] = defaultdict(dict)
    for method, entry in result["methods"].items():
        by_row[method] = entry["figures"]
        for finding, figures in sorted(entry["by_finding"].items()):
            by_row[f"{method} / {finding}"] = figures
    width = max([len(name) for name in by_row] + [6]) + 2
    lines.append(f"{'':{width}}" + "".join(f"{name:>27}" for name in FIGURES) + "   (%, interval, sentences)")
    for name, figures in by_row.items():
        cells = []
        for figure in FIGURES:
            f = figures.get(figure)
            if f is None or f["value"] is None:
                cells.append(f"{'-':>27}")
                continue
            interval = f" [{100 * f['low']:.1f}, {100 * f['high']:.1f}]" if f["low"] is not None else ""
            cells.append(f"{100 * f['value']:.1f}{interval} n={f['n']}".rjust(27))
        lines.append(f"{name:{width}}" + "".join(cells))
    return "\n".join(lines)
