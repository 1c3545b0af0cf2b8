"""Diagnosis scores over abnormality labels, per label and macro-averaged (E3D-GPT's 18-label table).

Per label, over the studies whose reference has that label: balanced accuracy, precision, recall and F1 of
the positive class, and AUROC from the probabilities (only where probabilities exist and both classes occur),
as ``data.label_scores`` computes them. A probability at or above the threshold (``DIAGNOSIS_THRESHOLD``,
0.5) counts as positive.
Macro = the plain mean over labels of each defined value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_radreport.data.label_scores import label_scores
from napari_radreport.engine.prompts import DIAGNOSIS_THRESHOLD
from napari_radreport.evaluation.metric import MetricSpec

SCORES = ("balanced accuracy", "precision", "recall", "F1", "AUROC")


@dataclass(frozen=True)
class StudyDiagnosis:
    """One study: the reference labels (0/1) and the predicted probabilities (or 0/1 decisions)."""

    truth: Mapping[str, int]
    predicted: Mapping[str, float]


class DiagnosisMetric:
    """Per-label and macro diagnosis scores; item statistics are :class:`StudyDiagnosis` records."""

    def __init__(self, labels: Sequence[str], threshold: float = DIAGNOSIS_THRESHOLD,
                 probabilities: bool = True) -> None:
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
