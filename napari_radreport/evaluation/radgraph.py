"""F1-RadGraph (Delbrouck et al. 2022): F1 between the RadGraph entity / relation sets of two reports.

Reward levels, as the ``radgraph`` package (0.1.18, ``rewards.py``) computes them from its annotations
(``{"entities": {id: {"tokens", "label", "relations": [[relation, target_id], ...]}}}``):

- ``simple``: the set of (entity tokens, label);
- ``partial``: (tokens, label) for an entity without relations, (tokens, label, True) for one with any;
- ``complete``: (tokens, label) for an entity without relations, and for one with relations a
  (tokens lowercased, label, relation, target tokens lowercased) item per relation.

Per report: precision and recall of the hypothesis set against the reference set, F1 = 2PR/(P+R), 0 when
either report is empty or has no entity; the corpus score is the mean over reports. RRG24's "F1-RadGraph"
is the ``partial`` level.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_radreport.evaluation.metric import MetricSpec, MetricUnavailable, check_pairs, mean

LEVELS = ("simple", "partial", "complete")
Annotation = dict[str, Any]
Annotator = Callable[[Sequence[str]], list[Annotation]]


def _items(annotation: Annotation, level: str) -> set[tuple]:
    entities = annotation.get("entities", {})
    items: set[tuple] = set()
    for entity in entities.values():
        relations = entity.get("relations") or []
        if level == "simple" or not relations:
            items.add((entity["tokens"], entity["label"]))
        elif level == "partial":
            items.add((entity["tokens"], entity["label"], True))
        else:
            for relation, target in relations:
                items.add((entity["tokens"].lower(), entity["label"], relation,
                           entities[str(target)]["tokens"].lower()))
    return items


def reward(hypothesis: Annotation, reference: Annotation, level: str) -> float:
    """F1 of the hypothesis' items against the reference's at one reward level."""
    if level not in LEVELS:
        raise ValueError(f"reward level must be one of {', '.join(LEVELS)}, not {level!r}")
    if not hypothesis.get("entities") or not reference.get("entities"):
        return 0.0
    hyp, ref = _items(hypothesis, level), _items(reference, level)
    precision = len(hyp & ref) / len(hyp) if hyp else 0.0
    recall = len(ref & hyp) / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


class F1RadGraph:
    """The three reward levels per report pair, each averaged over reports."""

    def __init__(self, annotate: Annotator, model_label: str = "a RadGraph model") -> None:
        self.annotate = annotate
        self.spec = MetricSpec("F1-RadGraph",
                               f"radgraph 0.1.18 reward rules (reimplemented) on {model_label}",
                               "RadGraph entities (the annotator's tokens)",
                               "case kept (complete level: lowercased)", "mean over reports")

    @classmethod
    def from_model(cls, folder: str | Path, device: str = "auto") -> F1RadGraph:
        return cls(radgraph_package_annotator(folder), Path(folder).name)

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[tuple[float, ...]]:
        check_pairs(predictions, references)
        pairs = [(p, r) for p, r in zip(predictions, references) if p.strip() and r.strip()]
        annotations = self.annotate([p for p, _ in pairs] + [r for _, r in pairs]) if pairs else []
        if len(annotations) != 2 * len(pairs):
            raise RuntimeError(f"RadGraph gave {len(annotations)} annotations for {2 * len(pairs)} reports")
        stats, k = [], 0
        for p, r in zip(predictions, references):
            if not (p.strip() and r.strip()):
                stats.append((0.0, 0.0, 0.0))  # an empty report scores 0, as in the radgraph package
                continue
            hyp, ref = annotations[k], annotations[k + len(pairs)]
            stats.append(tuple(reward(hyp, ref, level) for level in LEVELS))
            k += 1
        return stats

    def aggregate(self, stats: Sequence[tuple[float, ...]]) -> dict[str, float]:
        return {f"F1-RadGraph {level}": mean([s[i] for s in stats]) for i, level in enumerate(LEVELS)}


def radgraph_package_annotator(folder: str | Path) -> Annotator:
    """Annotations by the ``radgraph`` package with its model files already in ``folder`` (offline)."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise MetricUnavailable(f"F1-RadGraph: {folder} holds no RadGraph model files "
                                "(the radgraph package's radgraph-xl download); place them there")
    try:
        import radgraph  # noqa: F401
    except ImportError:
        raise MetricUnavailable("F1-RadGraph needs the radgraph package: pip install radgraph") from None
    os.environ["HF_HUB_OFFLINE"] = "1"  # never download: the files must be in the folder

    def annotate(texts: Sequence[str]) -> list[Annotation]:
        from radgraph import RadGraph

        inference = RadGraph(model_type="radgraph-xl", model_cache_dir=str(folder))(list(texts))
        return [inference[str(i)] for i in range(len(texts))]

    return annotate
