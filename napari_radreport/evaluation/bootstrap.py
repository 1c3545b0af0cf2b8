"""Seeded bootstrap confidence intervals and paired comparisons that redo each metric's aggregation.

Each resample draws report indices with replacement and re-aggregates the metric's item statistics, so a
corpus-level score (BLEU's summed n-gram counts, micro F1) is recomputed on the resample, not averaged
from per-report values. Intervals are percentile intervals. The paired comparison draws the *same*
indices for both systems (Koehn 2004), reports the difference A - B with its interval, and a two-sided
p-value: twice the smaller share of resamples whose difference falls on either side of zero (capped at 1).
Resamples on which a score is undefined (AUROC with one class) are left out of that score's interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_radreport.evaluation.metric import Metric


@dataclass(frozen=True)
class Interval:
    value: float  # on all items
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class PairedResult:
    a: float
    b: float
    difference: Interval  # A - B
    p_value: float

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "difference": self.difference.to_json(), "p_value": self.p_value}


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    if n == 0:
        raise ValueError("no items to resample")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
    tail = (1 - level) / 2 * 100
    values = values[~np.isnan(values)]  # resamples on which the score is undefined
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(metric: Metric, stats: Sequence[Any], *, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, Interval]:
    """Each score of ``metric`` on ``stats`` with its percentile interval over seeded resamples."""
    full = metric.aggregate(stats)
    draws: dict[str, list[float]] = {name: [] for name in full}
    for rows in _indices(len(stats), resamples, seed):
        scores = metric.aggregate([stats[i] for i in rows])
        for name in full:
            draws[name].append(scores.get(name, float("nan")))  # e.g. AUROC on a one-class resample
    return {name: Interval(full[name], *_percentiles(np.asarray(draws[name], dtype=float), level))
            for name in full}


def paired_bootstrap(metric: Metric, stats_a: Sequence[Any], stats_b: Sequence[Any], *, resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict[str, PairedResult]:
    """System A against system B on the same reports: difference, its interval and a two-sided p-value."""
    if len(stats_a) != len(stats_b):
        raise ValueError(f"paired comparison needs the same reports: {len(stats_a)} against {len(stats_b)}")
    full_a, full_b = metric.aggregate(stats_a), metric.aggregate(stats_b)
    differences: dict[str, list[float]] = {name: [] for name in full_a}
    for rows in _indices(len(stats_a), resamples, seed):
        a = metric.aggregate([stats_a[i] for i in rows])
        b = metric.aggregate([stats_b[i] for i in rows])
        for name in full_a:
            differences[name].append(a.get(name, float("nan")) - b.get(name, float("nan")))
    results = {}
    for name, values in differences.items():
        array = np.asarray(values, dtype=float)
        array = array[~np.isnan(array)]
        p_value = (min(1.0, 2 * min(float(np.mean(array <= 0)), float(np.mean(array >= 0))))
                   if array.size else float("nan"))
        interval = Interval(full_a[name] - full_b[name], *_percentiles(array, level))
        results[name] = PairedResult(full_a[name], full_b[name], interval, p_value)
    return results


def bootstrap_ratios(numerators: np.ndarray, denominators: np.ndarray, *, resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> list[Interval]:
    """Ratios of summed item counts (column j: ``numerators[:, j].sum() / denominators[:, j].sum()``), each
    with its percentile interval over seeded resamples of the items (rows), all columns on the same draws.

    The draws are :func:`bootstrap`'s; a resample's sums are one matrix product with how often it drew each
    item, so thousands of resamples of a few hundred items take milliseconds. A ratio whose denominator is 0
    is NaN (left out of the interval, as an undefined score is).
    """
    numerators, denominators = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if numerators.ndim != 2 or numerators.shape != denominators.shape:
        raise ValueError(f"numerators {numerators.shape} and denominators {denominators.shape} must have "
                         "the same (items, ratios) shape")
    indices = _indices(numerators.shape[0], resamples, seed)
    drawn = np.zeros(indices.shape)
    np.add.at(drawn, (np.arange(resamples)[:, None], indices), 1.0)  # times each item was drawn
    full = ratios(numerators.sum(0), denominators.sum(0))
    draws = ratios(drawn @ numerators, drawn @ denominators)
    return [Interval(float(full[j]), *_percentiles(draws[:, j], level)) for j in range(full.size)]


def ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator element-wise, NaN where the denominator is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)
