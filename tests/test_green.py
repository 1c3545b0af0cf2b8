"""GREEN: parser and score against the authors' values on their recorded completions; prompt; local runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_radreport.evaluation.green import (
    CHAT_TEMPLATE,
    GreenMetric,
    GreenModel,
    green_prompt,
    parse_completion,
)
from napari_radreport.evaluation.metric import MetricUnavailable

RECORDED = json.loads((Path(__file__).parent / "data" / "green" / "recorded.json").read_text())["cases"]


@pytest.mark.parametrize("case", RECORDED, ids=lambda c: c["source"].split("(")[-1].rstrip(")")[:40])
def test_parser_and_score_reproduce_the_authors_values(case):
    analysis = parse_completion(case["completion"])
    assert list(analysis.significant) == case["expected_significant"]
    assert list(analysis.insignificant) == case["expected_insignificant"]
    assert analysis.matched == case["expected_matched"]
    assert analysis.score == pytest.approx(case["expected_green"], abs=1e-9)


def test_metric_means_the_recorded_reports():
    completions = {green_prompt(c["reference"], c["candidate"]): c["completion"] for c in RECORDED}
    metric = GreenMetric(lambda prompts: [completions[p] for p in prompts], "recorded completions")
    stats = metric.item_stats([c["candidate"] for c in RECORDED], [c["reference"] for c in RECORDED])
    scores = metric.aggregate(stats)
    assert scores["GREEN"] == pytest.approx(sum(c["expected_green"] for c in RECORDED) / len(RECORDED))
    false_reports = [c["expected_significant"][0] for c in RECORDED]
    assert scores["GREEN errors: False report of a finding in the candidate"] == pytest.approx(
        sum(false_reports) / len(false_reports))


def test_hand_written_edge_cases():
    # numbered sub-categories; a "No ..." category; matched findings without a period: 0 matched -> score 0
    numbered = ("[Clinically Significant Errors]:\n(1) False report: 2. x; y.\n(4) Severity: 1. z.\n\n"
                "[Matched Findings]:\n3. a; b; c.")
    assert parse_completion(numbered).significant == (2, 0, 0, 1, 0, 0)
    assert parse_completion(numbered).score == pytest.approx(3 / 6)
    assert parse_completion("[Clinically Significant Errors]:\nNone.\n\n"
                            "[Matched Findings]:\n2. a; b.").score == 1.0
    assert parse_completion("[Matched Findings]:\nTwo findings match.").score == 0.0
    assert parse_completion("gibberish with no categories at all").score == 0.0
    # a category ends at the first blank line: the insignificant (c) error is not a significant one
    both = ("[Clinically Significant Errors]:\n(c) Location: 0.\n\n[Clinically Insignificant Errors]:\n"
            "(c) Location: 1. at the bases.\n\n[Matched Findings]:\n1. opacities.")
    assert parse_completion(both).significant == (0,) * 6 and parse_completion(both).insignificant[2] == 1
    assert parse_completion(both).score == 1.0
    # only the model's answer after its last [Explanation]: marker counts; </s> dropped
    echoed = "[Explanation]:\n<template>\n[Explanation]:\nfine\n\n[Matched Findings]:\n1. a.</s>"
    assert parse_completion(echoed).matched == 1


def test_prompt_holds_both_reports_in_place_and_cuts_them_at_300_words():
    prompt = green_prompt("REFERENCE " * 400, "Candidate finding.")
    assert (prompt.index("2. Reference Report:\n    REFERENCE")
            < prompt.index("3. Candidate Report:\n    Candidate finding."))
    assert prompt.count("REFERENCE") == 300
    assert prompt.rstrip().endswith("```") and "[Matched Findings]:" in prompt


def test_missing_model_folder_says_what_to_place_there(tmp_path):
    with pytest.raises(MetricUnavailable, match="GREEN-RadLlama2-7b"):
        GreenModel(tmp_path / "nothing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MetricUnavailable, match="no weights"):
        GreenModel(tmp_path)


def test_runner_on_a_tiny_random_llama(tmp_path):
    """The plumbing: chat template, left padding, one completion per pair, unparseable output scored 0."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny_models import write_tokenizer

    write_tokenizer(tmp_path, "<im>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    model = GreenModel(tmp_path, device="cpu", batch_size=2)
    tokenizer = model._load()[0]
    assert tokenizer.chat_template == CHAT_TEMPLATE and tokenizer.padding_side == "left"
    prompts = [green_prompt("No effusion.", "Small effusion."),
               green_prompt("Clear lungs.", "Clear lungs here.")] * 2
    completions = model.generate(prompts[:3], max_tokens=1300)
    assert len(completions) == 3 and all(isinstance(c, str) for c in completions)
    metric = GreenMetric(lambda p: model.generate(p, max_tokens=1300))
    stats = metric.item_stats(["Small effusion."], ["No effusion."])
    assert metric.aggregate(stats)["GREEN"] == 0.0  # random text: no matched findings
