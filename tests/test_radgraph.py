"""F1-RadGraph reward levels on hand-written annotations, worked by hand."""

from __future__ import annotations

import pytest

from napari_radreport.evaluation.metric import MetricUnavailable
from napari_radreport.evaluation.radgraph import F1RadGraph, radgraph_package_annotator, reward


def _entity(tokens, label, relations=()):
    return {"tokens": tokens, "label": label, "start_ix": 0, "end_ix": 0,
            "relations": [list(r) for r in relations]}


# Reference: "Small left pleural effusion." -> effusion (OBS-DP) located_at pleural; left, small modify.
REFERENCE = {"entities": {
    "1": _entity("Small", "OBS-DP", [("modify", "4")]),
    "2": _entity("left", "ANAT-DP", [("modify", "3")]),
    "3": _entity("pleural", "ANAT-DP"),
    "4": _entity("effusion", "OBS-DP", [("located_at", "3")]),
}}
# Hypothesis: "Large left pleural effusion." -> same graph, "Large" instead of "Small".
HYPOTHESIS = {"entities": {
    "1": _entity("Large", "OBS-DP", [("modify", "4")]),
    "2": _entity("left", "ANAT-DP", [("modify", "3")]),
    "3": _entity("pleural", "ANAT-DP"),
    "4": _entity("Effusion", "OBS-DP", [("located_at", "3")]),
}}


def test_simple_level_counts_token_label_pairs():
    # hyp {Large, left, pleural, Effusion} vs ref {Small, left, pleural, effusion}: 2 of 4 on each side
    assert reward(HYPOTHESIS, REFERENCE, "simple") == pytest.approx(0.5)


def test_partial_level_marks_entities_that_have_relations():
    # ref items: (Small,OBS,T) (left,ANAT,T) (pleural,ANAT) (effusion,OBS,T); hyp: (Large..T) (left..T)
    # (pleural..) (Effusion..T): matched left, pleural -> P = R = 2/4
    assert reward(HYPOTHESIS, REFERENCE, "partial") == pytest.approx(0.5)
    no_relation = {"entities": {k: {**e, "relations": []} for k, e in REFERENCE["entities"].items()}}
    # without relations the reference's items become plain pairs: only (pleural, ANAT-DP) matches: P = R = 1/4
    assert reward(HYPOTHESIS, no_relation, "partial") == pytest.approx(0.25)


def test_complete_level_compares_relations_lowercased():
    # ref: (small,OBS,modify,effusion) (left,ANAT,modify,pleural) (pleural,ANAT)
    #      (effusion,OBS,located_at,pleural)
    # hyp: (large,...) (left,ANAT,modify,pleural) (pleural,ANAT) (effusion,OBS,located_at,pleural) -> 3 of 4
    assert reward(HYPOTHESIS, REFERENCE, "complete") == pytest.approx(0.75)
    moved = {"entities": {**HYPOTHESIS["entities"],
                          "4": _entity("effusion", "OBS-DP", [("located_at", "2")])}}
    # effusion now located at "left": 2 of 4 left
    assert reward(moved, REFERENCE, "complete") == pytest.approx(0.5)


def test_uneven_sets_and_empty_annotations():
    one = {"entities": {"1": _entity("effusion", "OBS-DP", [("located_at", "2")]),
                        "2": _entity("pleural", "ANAT-DP")}}
    # complete: hyp {(effusion,OBS,located_at,pleural), (pleural,ANAT)} both in ref
    #           -> P = 1, R = 2/4 -> F1 = 2/3
    assert reward(one, REFERENCE, "complete") == pytest.approx(2 / 3)
    assert reward({"entities": {}}, REFERENCE, "simple") == 0.0
    with pytest.raises(ValueError, match="reward level"):
        reward(one, REFERENCE, "full")


def test_metric_pairs_annotations_and_scores_empty_reports_zero():
    annotations = {"Large left pleural effusion.": HYPOTHESIS, "Small left pleural effusion.": REFERENCE}
    metric = F1RadGraph(lambda texts: [annotations[t] for t in texts], "hand annotations")
    stats = metric.item_stats(["Large left pleural effusion.", "", "Small left pleural effusion."],
                              ["Small left pleural effusion."] * 3)
    assert stats == [(0.5, 0.5, 0.75), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]
    scores = metric.aggregate(stats)
    assert scores == pytest.approx({"F1-RadGraph simple": 0.5, "F1-RadGraph partial": 0.5,
                                    "F1-RadGraph complete": 1.75 / 3})


def test_no_model_files_is_a_clear_error(tmp_path):
    with pytest.raises(MetricUnavailable, match="holds no RadGraph model files"):
        radgraph_package_annotator(tmp_path)
