"""Grounding scores: does each sentence that states a finding point to where that finding is in the image?

The engine gives, per report sentence, ``{"section", "text", "finding", "location"}`` with ``finding`` a key
of ``consistency.FINDINGS`` (None when the sentence states no finding present) and ``location``
``{"method", "peak_lps_mm": [x, y, z], "box_lps_mm": [[x0, y0, z0], [x1, y1, z1]]}`` or None; optionally a
mask on the study's array grid (``location_mask`` in the dict, or ``GroundingCase.masks``). The truth comes
from the manifest record (``truth_from_record``): its ``masks`` (read through the project's NIfTI reader, so
a mask lies on exactly the grid of ``Study.array``), else its ``positions`` (centres only).

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
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DISTANCE_MM = 10.0  # a peak within this distance of a truth centre is a hit (truth without a mask)
THRESHOLD = 0.5  # a predicted mask given as probabilities is inside from this value
FIGURES = ("located", "hit_rate", "dice", "box_iou")
SCORED, ABSENT, NO_REGION, NOT_A_FINDING = "scored", "finding absent", "no truth region", "not a finding"
# ReXGroundingCT's lung and pleura categories (the authors' schema, src/categorize.py of
# github.com/rajpurkarlab/ReXGroundingCT): the findings a sentence of the category may name, and the one it is
# when its text names none of them (None: the category mixes findings).
CATEGORY_FINDINGS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "1a": (("peribronchial thickening",), "peribronchial thickening"),
    "1b": (("bronchiectasis",), "bronchiectasis"), "1c": (("emphysema",), "emphysema"),
    "1d": (("septal thickening",), "septal thickening"), "2a": (("atelectasis", "fibrosis"), None),
    "2b": (("consolidation", "atelectasis"), None), "2c": (("opacity",), "opacity"),
    "2d": (("nodule",), "nodule"), "2e": (("pleural effusion",), None), "2f": (("fibrosis",), "fibrosis"),
    "2g": (("pneumothorax",), "pneumothorax"),
}


def finding_of_label(name: str) -> str | None:
    """The ``consistency.FINDINGS`` key of a manifest label ("Lung nodule", "Pleural effusion (right)")."""
    from napari_radreport.consistency import FINDINGS

    base = re.sub(r"\s*\([^)]*\)\s*$", "", name).strip().lower()
    if base in FINDINGS:
        return base
    return next((key for key, (_, labels) in FINDINGS.items() if base in labels), None)


def finding_of_sentence(text: str, category: str = "") -> str | None:
    """The finding a truth sentence states present: the first one its words name (among those its category
    allows, when it has a known category), else the category's own."""
    from napari_radreport.consistency import FINDINGS, read_statements

    named = [s.finding for s in read_statements(text) if s.stance == "present"]
    allowed, default = CATEGORY_FINDINGS.get(category, (None, None))
    if allowed is not None:
        named = [name for name in named if name in allowed]
        if not named:
            return default if default in FINDINGS else None
    return named[0] if named else None


def _normal_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".;: ").lower()


# -- geometry --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VoxelGrid:
    """A study's array grid: its shape and index -> LPS (mm) map, ``lps = origin + index @ axes``."""

    shape: tuple[int, int, int]
    origin: np.ndarray
    axes: np.ndarray  # rows: the LPS step (mm) of one voxel along each array axis

    @classmethod
    def of(cls, study) -> VoxelGrid:
        image = study.image
        if image.direction is None or image.origin is None or None in image.spacing:
            raise ValueError(f"{image.label}: no patient geometry to score grounding on")
        axes = np.asarray(image.direction, float) * np.asarray(image.spacing, float)[:, None]
        return cls(tuple(int(n) for n in image.array.shape[-3:]), np.asarray(image.origin, float), axes)

    def to_lps(self, index) -> np.ndarray:
        return self.origin + np.asarray(index, float) @ self.axes

    def to_index(self, lps) -> np.ndarray:
        """The continuous array index of an LPS position."""
        return np.linalg.solve(self.axes.T, np.asarray(lps, float) - self.origin)

    def voxel_of(self, lps) -> tuple[int, ...] | None:
        """The voxel nearest to an LPS position, None when it lies outside the array."""
        index = np.rint(self.to_index(lps)).astype(int)
        if np.any(index < 0) or np.any(index >= np.asarray(self.shape)):
            return None
        return tuple(int(i) for i in index)

    def box(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The LPS box (min corner, max corner) of a mask, to its voxels' outer faces."""
        where = np.argwhere(mask)
        ends = (where.min(axis=0) - 0.5, where.max(axis=0) + 0.5)
        corners = np.array([[ends[b][a] for a, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)], float)
        points = self.to_lps(corners)
        return points.min(axis=0), points.max(axis=0)


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


# -- the truth -------------------------------------------------------------------------------------------
@dataclass
class TruthRegion:
    """Where one finding (or one sentence's finding) is: a mask on the study's grid, or only centres."""

    name: str  # the manifest's label name, or the sentence
    finding: str | None  # a key of consistency.FINDINGS
    mask: np.ndarray | None = field(default=None, repr=False)  # bool on the study's grid
    box: tuple[np.ndarray, np.ndarray] | None = None  # LPS mm, (min corner, max corner)
    centres: list[np.ndarray] = field(default_factory=list)  # LPS mm
    text: str = ""  # the sentence this region is the truth of ("" for a named finding)


@dataclass
class StudyTruth:
    """A study's grid, its truth regions, and the findings it has (mask or not)."""

    grid: VoxelGrid
    regions: list[TruthRegion] = field(default_factory=list)
    present: frozenset[str] = frozenset()


def region_from_mask(grid: VoxelGrid, name: str, finding: str | None, mask: np.ndarray,
                     text: str = "") -> TruthRegion | None:
    """A truth region of a bool mask (None when the mask is empty)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != grid.shape:
        raise ValueError(f"the mask of {name!r} has shape {mask.shape}, the study {grid.shape}")
    if not mask.any():
        return None
    return TruthRegion(name, finding, mask, grid.box(mask), text=text)


def _label_map(record, study, path) -> np.ndarray:
    """The record's label map read with ``load_study``, refused unless it lies on the volume's grid."""
    from napari_radreport.io import load_study

    image, labels = study.image, load_study(path).image
    same = (labels.array.shape == image.array.shape
            and np.allclose(labels.origin, image.origin, atol=1e-3)
            and np.allclose(labels.direction, image.direction, atol=1e-4)
            and np.allclose(labels.spacing, image.spacing, atol=1e-4))
    if not same:
        raise ValueError(f"record {record.id}: mask {path} is not on its image's grid (shape "
                         f"{labels.array.shape} vs {image.array.shape}, or another origin / axes)")
    return np.rint(labels.array).astype(np.int64)


def _channel_reader(record, study, path):
    """A function giving channel ``c`` of a channels-layout mask as bool on the study's grid."""
    import nibabel

    from napari_radreport.io.geometry import Reorientation, reorient

    plan = study.extra.get("reorientation")
    if plan is None:
        raise ValueError(f"record {record.id}: a channels-layout mask needs a NIfTI volume")
    plan = Reorientation(tuple(plan["perm"]), tuple(plan["flip"]))
    stored = tuple(study.array.shape[plan.perm.index(axis)] for axis in range(3))
    proxy = nibabel.load(str(path)).dataobj
    if len(proxy.shape) != 4 or tuple(proxy.shape[1:]) != stored:
        raise ValueError(f"record {record.id}: mask {path} has shape {tuple(proxy.shape)}, expected "
                         f"(findings, {', '.join(map(str, stored))}) like its volume")
    flips = tuple(record.masks.get("flip_axes", ()))

    def channel(index: int) -> np.ndarray:
        if not 0 <= index < proxy.shape[0]:
            raise ValueError(f"record {record.id}: mask {path} has no channel {index}")
        data = np.asarray(proxy[index]) != 0
        if flips:
            data = np.flip(data, axis=flips)
        return np.ascontiguousarray(reorient(data, (1.0, 1.0, 1.0), np.zeros(3), np.eye(3), plan)[0])

    return channel


def _mask_regions(record, study, grid: VoxelGrid) -> list[TruthRegion]:
    masks, path = record.masks, record.mask_path()
    if path is None:
        return []
    if not path.exists():
        raise ValueError(f"record {record.id}: mask file {path} does not exist")
    regions: list[TruthRegion | None] = []
    if masks.get("layout", "labels") == "channels":
        channel = _channel_reader(record, study, path)
        pick = [(s, channel(s["channel"])) for s in masks.get("sentences", [])]
    else:
        values = _label_map(record, study, path)
        regions += [region_from_mask(grid, name, finding_of_label(name), values == value)
                    for name, value in masks.get("labels", {}).items()]
        pick = [(s, values == s["label"]) for s in masks.get("sentences", [])]
    regions += [region_from_mask(grid, s["text"], finding_of_sentence(s["text"], s.get("category", "")),
                                 mask, text=s["text"]) for s, mask in pick]
    return [r for r in regions if r is not None]


def truth_from_record(record, study) -> StudyTruth:
    """The truth of a manifest record on its study's grid: mask regions, then centre-only regions for the
    ``positions`` of findings no mask draws."""
    grid = VoxelGrid.of(study)
    present = frozenset(f for label, value in record.labels.items() if value
                        for f in [finding_of_label(label)] if f is not None)
    regions = _mask_regions(record, study, grid)
    drawn = {r.finding for r in regions}
    for label, points in record.positions.items():
        finding = finding_of_label(label)
        centres = [np.asarray(p, float) for p in points]
        if finding not in drawn:
            regions += [TruthRegion(label, finding, centres=centres)] if centres else []
            continue
        for region in regions:  # a drawn finding keeps its centres beside its mask
            if region.finding == finding and not region.text:
                region.centres += centres
    return StudyTruth(grid, regions, present | {r.finding for r in regions if r.finding})


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


def _hit(peak, regions: list[TruthRegion], grid: VoxelGrid, distance_mm: float) -> bool:
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
