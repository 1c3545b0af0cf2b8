"""Diagnosis scores over abnormality labels, per label and macro-averaged (E3D-GPT's 18-label table).

Per label, over the studies whose reference has that label: balanced accuracy (the mean of the recalls of
the classes present in the reference, as scikit-learn's ``balanced_accuracy_score``), precision, recall and
F1 of the positive class (0 where undefined, scikit-learn's ``zero_division=0``), and AUROC from the
probabilities (only where probabilities exist and both classes occur). A probability at or above the
threshold (0.5) counts as positive. Macro = the plain mean over labels of each defined value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_radreport.evaluation.metric import MetricSpec

SCORES = ("balanced accuracy", "precision", "recall", "F1", "AUROC")


@dataclass(frozen=True)
class StudyDiagnosis:
    """One study: the reference labels (0/1) and the predicted probabilities (or 0/1 decisions)."""

    truth: Mapping[str, int]
    predicted: Mapping[str, float]


def auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores sharing their mean rank); NaN for one class."""
    positives, negatives = int(truth.sum()), int(len(truth) - truth.sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[truth == 1].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def label_scores(truth: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5,
                 with_auroc: bool = True) -> dict[str, float]:
    """The five scores of one label (AUROC left out when ``with_auroc`` is false)."""
    decided = (probabilities >= threshold).astype(int)
    tp = int(((decided == 1) & (truth == 1)).sum())
    fp = int(((decided == 1) & (truth == 0)).sum())
    fn = int(((decided == 0) & (truth == 1)).sum())
    tn = int(((decided == 0) & (truth == 0)).sum())
    recalls = [tp / (tp + fn)] if tp + fn else []
    recalls += [tn / (tn + fp)] if tn + fp else []
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    scores = {"balanced accuracy": float(np.mean(recalls)), "precision": precision, "recall": recall,
              "F1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0}
    if with_auroc:
        scores["AUROC"] = auroc(truth, probabilities)
    return scores


class DiagnosisMetric:
    """Per-label and macro diagnosis scores; item statistics are :class:`StudyDiagnosis` records."""

    def __init__(self, labels: Sequence[str], threshold: float = 0.5, probabilities: bool = True) -> None:
        if not labels:
            raise ValueError("diagnosis scoring needs at least one label")
        self.labels, self.threshold, self.probabilities = list(labels), threshold, probabilities
        self.spec = MetricSpec("diagnosis", "this project (matched to scikit-learn 1.x)",
                               f"probability >= {threshold} is positive", "-",
                               f"per label over {len(self.labels)} labels, macro = mean over labels")

    def item_stats(self, predictions: Sequence[Mapping[str, float]],
                   references: Sequence[Mapping[str, int]]) -> list[StudyDiagnosis]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        stats = []
        for i, (predicted, truth) in enumerate(zip(predictions, references)):
            missing = [label for label in self.labels if label in truth and label not in predicted]
            if missing:
                raise ValueError(f"study {i}: no prediction for label(s) {', '.join(missing)}")
            stats.append(StudyDiagnosis({k: int(v) for k, v in truth.items()}, dict(predicted)))
        return stats

    def per_label(self, stats: Sequence[StudyDiagnosis]) -> dict[str, dict[str, float]]:
        """label -> its scores, over the studies whose reference has the label."""
        table = {}
        for label in self.labels:
            rows = [s for s in stats if label in s.truth]
            if not rows:
                continue
            truth = np.array([s.truth[label] for s in rows])
            probs = np.array([float(s.predicted[label]) for s in rows])
            table[label] = label_scores(truth, probs, self.threshold, self.probabilities)
        return table

    def aggregate(self, stats: Sequence[StudyDiagnosis]) -> dict[str, float]:
        if not stats:
            raise ValueError("no items to score")
        table = self.per_label(stats)
        if not table:
            raise ValueError(f"no study has a reference for any of the labels {', '.join(self.labels)}")
        result = {}
        for score in SCORES:
            values = [row[score] for row in table.values() if score in row and not np.isnan(row[score])]
            if values:
                result[f"macro {score}"] = float(np.mean(values))
        for label, row in table.items():
            for score, value in row.items():
                if not np.isnan(value):
                    result[f"{label}: {score}"] = value
        return result
