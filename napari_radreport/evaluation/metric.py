"""What every text metric provides, so that presets, bootstrap intervals and printing treat them alike.

A metric turns each (prediction, reference) pair into *item statistics* once (the slow part: tokenising,
running a model), then *aggregates* any list of those statistics into its scores. Corpus-level metrics
(BLEU with corpus brevity penalty, micro F1) keep counts as statistics, so a bootstrap resample is scored by
re-aggregating resampled statistics: the corpus-level computation is redone on each resample, not averaged.

Every metric carries a :class:`MetricSpec` that names its implementation, tokenisation, casing and
averaging; the terminal table and the JSON print it next to each score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class MetricSpec:
    """How a score was computed, in words a reader can check against a paper."""

    name: str  # e.g. "BLEU-4"
    implementation: str  # e.g. "pycocoevalcap 1.2 Bleu (reimplemented, matched to 1e-4)"
    tokenisation: str  # e.g. "whitespace split"
    casing: str  # e.g. "case kept" / "lowercased"
    averaging: str  # e.g. "corpus level" / "mean over reports"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@runtime_checkable
class Metric(Protocol):
    """A text metric: per-pair statistics, then scores from any subset of them."""

    spec: MetricSpec

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[Any]:
        """One statistic per (prediction, reference) pair, in order; the same length as the inputs."""
        ...

    def aggregate(self, stats: Sequence[Any]) -> dict[str, float]:
        """Scores from a list of item statistics (possibly a bootstrap resample with repeats).

        Keys are score names (``"BLEU-4"``, ``"F1-RadGraph partial"``); values are floats in the metric's
        natural scale (0-1 for all metrics here). Raises ``ValueError`` for an empty list.
        """
        ...


class MetricUnavailable(RuntimeError):
    """A metric cannot run here (weights or data missing); the message says what is
    missing and how to get it."""


def check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    """Refuse mismatched or non-text inputs with a message that names the problem."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    for kind, texts in (("prediction", predictions), ("reference", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{kind} {i} is {type(text).__name__}, not text")


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; ``ValueError`` for nothing to average."""
    if not values:
        raise ValueError("no items to score")
    return float(sum(values) / len(values))
