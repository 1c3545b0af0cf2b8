"""The scores of one binary label over studies: balanced accuracy, precision, recall, F1 and AUROC.

Balanced accuracy is the mean of the recalls of the classes present in the truth (scikit-learn's
``balanced_accuracy_score``); precision, recall and F1 are of the positive class (0 where undefined,
scikit-learn's ``zero_division=0``); AUROC is NaN when only one class occurs.
"""

from __future__ import annotations

import numpy as np

from napari_radreport.engine.prompts import DIAGNOSIS_THRESHOLD


def auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, tied scores sharing their mean rank); NaN for one class."""
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


def label_scores(truth: np.ndarray, probabilities: np.ndarray, threshold: float = DIAGNOSIS_THRESHOLD,
                 with_auroc: bool = True) -> dict[str, float]:
    """The five scores of one label, a probability at or above ``threshold`` counting as positive.

    AUROC is left out when ``with_auroc`` is false (decisions without probabilities).
    """
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
