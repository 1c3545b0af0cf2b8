"""The eval presets: which pairs they score, what they leave out, and how the results are printed."""

from __future__ import annotations

import pytest

from napari_radreport.data.manifest import ManifestRecord, QAPair
from napari_radreport.evaluation import lexical
from napari_radreport.evaluation.presets import ModelPaths, build_blocks
from napari_radreport.evaluation.results_output import format_table, plot_svg
from napari_radreport.evaluation.scoring import BootstrapSettings, score_blocks

from report_pairs import PREDICTIONS, REFERENCES

NO_BOOTSTRAP = BootstrapSettings(resamples=0)


def _records() -> list[ManifestRecord]:
    records = []
    for i, reference in enumerate(REFERENCES):
        records.append(ManifestRecord(
            id=f"s{i}", modality="ct", images=["x.nii.gz"], split="test", findings=reference,
            impression="" if i % 2 else "No acute cardiopulmonary abnormality is seen."))
    return records


def _predictions(texts=PREDICTIONS) -> dict[str, dict]:
    return {f"s{i}": {"id": f"s{i}", "findings": text,
                      "impression": "No acute cardiopulmonary abnormality is seen."}
            for i, text in enumerate(texts)}


def _scores(block: dict) -> dict[str, float]:
    return {row["name"]: row["value"] for row in block["scores"]}


def test_m3d_scores_findings_with_the_named_computations():
    blocks = build_blocks("m3d", _records(), _predictions(), ModelPaths())
    [findings] = score_blocks(blocks, NO_BOOTSTRAP)
    assert findings["title"] == "findings" and findings["n"] == len(REFERENCES)
    scores = _scores(findings)
    bleu = lexical.SentenceBleu(1)
    assert scores["BLEU-1"] == pytest.approx(
        bleu.aggregate(bleu.item_stats(PREDICTIONS, REFERENCES))["BLEU-1"])
    rouge = lexical.Rouge(1)
    assert scores["ROUGE-1"] == pytest.approx(
        rouge.aggregate(rouge.item_stats(PREDICTIONS, REFERENCES))["ROUGE-1"])
    reasons = {row["metric"]: row["reason"] for row in findings["not_computed"]}
    assert "--bertscore-model" in reasons["BERT-F1"] and "BERT-F1" not in scores  # no weights, no number
    table = format_table({"blocks": [findings], "bootstrap": {"resamples": 0, "seed": 0, "level": 0.95}})
    assert ("mteval 13a" in table and "mean over reports" in table and "BERT-F1" in table
            and "not computed" in table)


def test_rrg24_skips_empty_references_and_scores_both_sections():
    blocks = build_blocks("rrg24", _records(), _predictions(), ModelPaths())
    findings, impression = score_blocks(blocks, NO_BOOTSTRAP)
    assert findings["n"] == 8 and impression["n"] == 4 and impression["skipped"] == {"empty reference": 4}
    assert _scores(impression)["BLEU-4"] == pytest.approx(1.0, abs=1e-6)  # identical texts
    missing = {row["metric"] for row in findings["not_computed"]}
    assert missing == {"BERTScore", "F1-RadGraph", "F1-CheXbert"}


def test_bootstrap_intervals_and_paired_comparison_in_a_block():
    better = dict(_predictions(REFERENCES))  # system A copies the references
    blocks = build_blocks("m3d", _records(), better, ModelPaths(), predictions_b=_predictions())
    [findings] = score_blocks(blocks, BootstrapSettings(resamples=200, seed=3))
    row = next(r for r in findings["scores"] if r["name"] == "ROUGE-1")
    assert row["value"] == pytest.approx(1.0) and row["low"] == pytest.approx(1.0)
    comparison = next(r for r in findings["comparison"] if r["name"] == "ROUGE-1")
    assert comparison["difference"]["value"] > 0.3 and comparison["difference"]["low"] > 0
    assert comparison["p_value"] < 0.05


def test_amos_mm_regions_and_letters():
    qa = [QAPair("Which lobe?", "B", ["Left", "Right", "Both", "None"], 1),
          QAPair("Effusion?", "yes"),  # free text: not a multiple-choice question
          QAPair("Side?", "A", ["Left", "Right"], 0)]
    records = [ManifestRecord(id="a", modality="ct", images=["x"],
                              regions={"chest": "Nodule.", "abdomen": ""}, qa=qa),
               ManifestRecord(id="b", modality="ct", images=["x"], regions={"chest": "Clear."}, qa=qa)]
    predictions = {"a": {"answers": [{"question": "Which lobe?", "answer": "Right", "choice_index": 1},
                                     {"question": "Effusion?", "answer": "yes"},
                                     {"question": "Side?", "answer": "A."}]},  # "A." is not a bare letter
                   "b": {"error": "unreadable image"}}  # a failed study answers nothing
    blocks = build_blocks("amos-mm", records, predictions, ModelPaths())
    chest, abdomen, pelvis, vqa = score_blocks(blocks, NO_BOOTSTRAP)
    assert chest["n"] == 2 and abdomen["n"] == 0 and abdomen["skipped"] == {"empty reference": 2}
    assert "--green-model" in chest["not_computed"][0]["reason"]
    assert vqa["n"] == 4 and _scores(vqa)["VQA accuracy"] == pytest.approx(1 / 4)


def test_diagnosis_block_and_plot():
    records = [ManifestRecord(id=f"d{i}", modality="ct", images=["x"],
                              labels={"Nodule": i % 2, "Effusion": int(i < 2)})
               for i in range(4)]
    predictions = {f"d{i}": {"diagnosis": {"Nodule": 0.9 if i % 2 else 0.1, "Effusion": 0.6}}
                   for i in range(4)}
    [block] = score_blocks(build_blocks("diagnosis", records, predictions, ModelPaths()), NO_BOOTSTRAP)
    scores = _scores(block)
    assert (scores["Nodule: F1"] == 1.0 and scores["Effusion: precision"] == 0.5
            and scores["Effusion: recall"] == 1.0)
    assert scores["macro balanced accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    svg = plot_svg({"blocks": [block]}, "diagnosis")
    assert svg.startswith("<svg") and "Nodule (F1)" in svg and "Effusion (AUROC)" in svg
    with pytest.raises(ValueError, match="no diagnosis"):
        build_blocks("diagnosis", records, {f"d{i}": {} for i in range(4)}, ModelPaths())


def test_a_mismatched_answer_is_refused():
    records = [ManifestRecord(id="a", modality="ct", images=["x"], qa=[QAPair("Q1?", "A", ["x", "y"], 0)])]
    with pytest.raises(ValueError, match="not to 'Q1\\?'"):
        build_blocks("amos-mm", records, {"a": {"answers": [{"question": "Q2?", "choice_index": 0}]}},
                     ModelPaths())
