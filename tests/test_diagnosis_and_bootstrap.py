"""Diagnosis scores against scikit-learn, and the bootstrap's corpus-level resampling."""

from __future__ import annotations

import numpy as np
import pytest

from napari_radreport.data.label_scores import auroc
from napari_radreport.evaluation.bootstrap import bootstrap, paired_bootstrap
from napari_radreport.evaluation.diagnosis import DiagnosisMetric
from napari_radreport.evaluation.lexical import CocoBleu, Rouge

from report_pairs import PREDICTIONS, REFERENCES

TOLERANCE = 1e-4


def _studies(seed: int = 3, n: int = 40):
    rng = np.random.default_rng(seed)
    labels = ["Nodule", "Effusion", "Emphysema", "Rare"]
    truths, preds = [], []
    for i in range(n):
        truth = {"Nodule": int(rng.random() < 0.4), "Effusion": int(rng.random() < 0.5),
                 "Emphysema": int(rng.random() < 0.3), "Rare": 0}
        # informative but noisy probabilities, rounded so that some scores tie
        pred = {k: float(np.round(np.clip(0.35 * v + rng.random() * 0.65, 0, 1), 1))
                for k, v in truth.items()}
        if i % 7 == 0:
            del truth["Emphysema"]  # not every study has every label
        truths.append(truth)
        preds.append(pred)
    return labels, truths, preds


def test_diagnosis_matches_scikit_learn():
    from sklearn import metrics

    labels, truths, preds = _studies()
    metric = DiagnosisMetric(labels)
    scores = metric.aggregate(metric.item_stats(preds, truths))
    per_label = {}
    for label in labels:
        y = np.array([t[label] for t in truths if label in t])
        p = np.array([q[label] for q, t in zip(preds, truths) if label in t])
        d = (p >= 0.5).astype(int)
        expected = {"balanced accuracy": metrics.balanced_accuracy_score(y, d),
                    "precision": metrics.precision_score(y, d, zero_division=0),
                    "recall": metrics.recall_score(y, d, zero_division=0),
                    "F1": metrics.f1_score(y, d, zero_division=0)}
        if len(set(y)) == 2:
            expected["AUROC"] = metrics.roc_auc_score(y, p)
        for name, value in expected.items():
            assert scores[f"{label}: {name}"] == pytest.approx(value, abs=TOLERANCE), (label, name)
        per_label[label] = expected
    assert "Rare: AUROC" not in scores  # one class only: undefined, left out
    for name in ("balanced accuracy", "precision", "recall", "F1", "AUROC"):
        values = [row[name] for row in per_label.values() if name in row]
        assert scores[f"macro {name}"] == pytest.approx(np.mean(values), abs=TOLERANCE)


def test_auroc_with_ties_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.5, 0.5, 0.9, 0.5, 0.2, 0.2, 0.9, 0.7])
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_diagnosis_refuses_a_missing_prediction():
    metric = DiagnosisMetric(["Nodule"])
    with pytest.raises(ValueError, match="study 1: no prediction for label.*Nodule"):
        metric.item_stats([{"Nodule": 0.2}, {}], [{"Nodule": 1}, {"Nodule": 0}])


def test_bootstrap_recomputes_corpus_bleu_on_each_resample():
    metric = CocoBleu(4)
    stats = metric.item_stats(PREDICTIONS, REFERENCES)
    result = bootstrap(metric, stats, resamples=200, seed=7)["BLEU-4"]
    assert result.value == pytest.approx(metric.aggregate(stats)["BLEU-4"])
    # the first resample, redone by hand: corpus BLEU of the drawn reports (not a mean of sentence BLEUs)
    rows = np.random.default_rng(7).integers(0, len(stats), size=(200, len(stats)))
    by_hand = sorted(metric.aggregate([stats[i] for i in r])["BLEU-4"] for r in rows)
    assert result.low == pytest.approx(np.percentile(by_hand, 2.5))
    assert result.high == pytest.approx(np.percentile(by_hand, 97.5))
    assert result.low < result.value < result.high
    again = bootstrap(metric, stats, resamples=200, seed=7)["BLEU-4"]
    assert (again.low, again.high) == (result.low, result.high)  # seeded
    other = bootstrap(metric, stats, resamples=200, seed=8)["BLEU-4"]
    assert (other.low, other.high) != (result.low, result.high)


def test_paired_bootstrap_tells_a_better_system_from_a_worse_one():
    metric = Rouge("L", stem=True)
    references = REFERENCES * 4
    good = metric.item_stats(references, references)  # perfect copies
    bad = metric.item_stats(PREDICTIONS * 4, references)
    result = paired_bootstrap(metric, good, bad, resamples=300, seed=1)["ROUGE-L"]
    assert result.a == pytest.approx(1.0)
    assert result.difference.value == pytest.approx(1.0 - metric.aggregate(bad)["ROUGE-L"])
    assert result.difference.low > 0 and result.p_value < 0.01
    same = paired_bootstrap(metric, bad, bad, resamples=300, seed=1)["ROUGE-L"]
    assert same.difference.value == 0 and same.p_value == 1.0


def test_paired_bootstrap_needs_the_same_reports():
    metric = Rouge()
    with pytest.raises(ValueError, match="same reports"):
        paired_bootstrap(metric, [0.1, 0.2], [0.3], resamples=10)
