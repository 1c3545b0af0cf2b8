"""Scoring blocks of (prediction, reference) pairs with metrics, intervals and an optional paired comparison.

A :class:`Block` is one set of pairs scored together (the Findings sections, the chest region, the
multiple-choice questions, the diagnoses). Each metric is built lazily by a factory: a metric whose
weights or data are missing raises ``MetricUnavailable`` and is listed as *not computed* with that
message, never given a number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from napari_radreport.evaluation.bootstrap import bootstrap, paired_bootstrap
from napari_radreport.evaluation.metric import Metric, MetricUnavailable

MetricFactory = Callable[[], Metric]


@dataclass
class Block:
    """Pairs to score together; ``predictions_b`` holds a second system's outputs for a paired comparison."""

    title: str
    ids: list[str]
    predictions: list[Any]
    references: list[Any]
    factories: list[tuple[str, MetricFactory]]
    predictions_b: list[Any] | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> number of studies left out
    unit: str = "studies"  # what one pair is: a study's report, or one question


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95


def _metric_or_reason(name: str, factory: MetricFactory) -> tuple[Metric | None, str]:
    try:
        return factory(), ""
    except MetricUnavailable as exc:
        return None, str(exc)


def score_block(block: Block, settings: BootstrapSettings,
                on_metric: Callable[[str], None] | None = None) -> dict:
    """Scores of every metric of ``block`` (with intervals when ``settings.resamples`` >
    0) as JSON-ready dicts."""
    result: dict[str, Any] = {"title": block.title, "n": len(block.ids), "unit": block.unit,
                              "skipped": dict(block.skipped), "scores": [], "not_computed": [],
                              "comparison": []}
    if not block.ids:
        result["not_computed"] = [{"metric": name, "reason": "no studies to score"}
                                  for name, _ in block.factories]
        return result
    for name, factory in block.factories:
        if on_metric is not None:
            on_metric(f"{block.title}: {name}")
        metric, reason = _metric_or_reason(name, factory)
        if metric is None:
            result["not_computed"].append({"metric": name, "reason": reason})
            continue
        try:
            stats = metric.item_stats(block.predictions, block.references)  # model-based metrics load here
        except MetricUnavailable as exc:
            result["not_computed"].append({"metric": name, "reason": str(exc)})
            continue
        if settings.resamples > 0:
            intervals = bootstrap(metric, stats, resamples=settings.resamples, seed=settings.seed,
                                  level=settings.level)
            rows = [{"name": k, **v.to_json()} for k, v in intervals.items()]
        else:
            rows = [{"name": k, "value": v} for k, v in metric.aggregate(stats).items()]
        for row in rows:
            row["spec"] = metric.spec.to_json()
        result["scores"].extend(rows)
        if hasattr(metric, "per_label"):
            result["per_label"] = metric.per_label(stats)
        if block.predictions_b is not None:
            stats_b = metric.item_stats(block.predictions_b, block.references)
            compared = paired_bootstrap(metric, stats, stats_b, resamples=max(settings.resamples, 1),
                                        seed=settings.seed, level=settings.level)
            result["comparison"].extend({"name": k, **v.to_json()} for k, v in compared.items())
    return result


def score_blocks(blocks: Sequence[Block], settings: BootstrapSettings,
                 on_metric: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`score_block` over several blocks, in order."""
    return [score_block(block, settings, on_metric) for block in blocks]
