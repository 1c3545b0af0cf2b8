"""The lexical metrics against their reference implementations: a difference above 1e-4 fails."""

from __future__ import annotations

import pytest

from napari_radreport.evaluation.lexical import CocoBleu, Meteor, Rouge, SentenceBleu
from napari_radreport.evaluation.metric import MetricUnavailable
from napari_radreport.evaluation.tokenize import mteval_13a, nltk_words

from report_pairs import PREDICTIONS, REFERENCES

TOLERANCE = 1e-4


def _score(metric, predictions=PREDICTIONS, references=REFERENCES) -> dict[str, float]:
    return metric.aggregate(metric.item_stats(predictions, references))


@pytest.mark.parametrize("order", [1, 2, 4])
def test_coco_bleu_matches_pycocoevalcap(order):
    from pycocoevalcap.bleu.bleu import Bleu

    gts = {i: [r] for i, r in enumerate(REFERENCES)}
    res = {i: [p] for i, p in enumerate(PREDICTIONS)}
    expected, _ = Bleu(order).compute_score(gts, res, verbose=0)
    assert _score(CocoBleu(order))[f"BLEU-{order}"] == pytest.approx(expected[order - 1], abs=TOLERANCE)


def test_coco_bleu_keeps_case_and_punctuation():
    # pycocoevalcap is given the raw strings here, so "Lungs" != "lungs" and "clear." != "clear"
    lower = _score(CocoBleu(1), ["the lungs are clear."], ["The lungs are clear"])["BLEU-1"]
    assert lower == pytest.approx(2 / 4, abs=TOLERANCE)


@pytest.mark.parametrize("order", [1, 4])
def test_sentence_bleu_matches_sacrebleu(order):
    from sacrebleu.metrics import BLEU

    bleu = BLEU(max_ngram_order=order, smooth_method="none", tokenize="13a")
    expected = [bleu.sentence_score(p.strip(), [r.strip()]).score / 100
                for p, r in zip(PREDICTIONS, REFERENCES)]
    metric = SentenceBleu(order)
    got = metric.item_stats(PREDICTIONS, REFERENCES)
    assert got == pytest.approx(expected, abs=TOLERANCE)
    assert metric.aggregate(got)[f"BLEU-{order}"] == pytest.approx(
        sum(expected) / len(expected), abs=TOLERANCE)


def test_13a_tokens_match_sacrebleu():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenizer = Tokenizer13a()
    for text in PREDICTIONS + REFERENCES + ["x-ray 3-4 mm &amp; 1,000 HU; e.g. <skipped> end-\nline"]:
        assert mteval_13a(text) == tokenizer(text).split()


@pytest.mark.parametrize("kind,stem", [("L", True), ("L", False), (1, False), (2, True)])
def test_rouge_matches_rouge_score(kind, stem):
    from rouge_score import rouge_scorer

    name = f"rouge{kind}"
    scorer = rouge_scorer.RougeScorer([name], use_stemmer=stem)
    expected = [scorer.score(r, p)[name].fmeasure for p, r in zip(PREDICTIONS, REFERENCES)]
    metric = Rouge(kind, stem=stem)
    assert metric.item_stats(PREDICTIONS, REFERENCES) == pytest.approx(expected, abs=TOLERANCE)


def _meteor() -> Meteor:
    try:
        return Meteor()
    except MetricUnavailable as exc:
        pytest.skip(f"no WordNet 3.0 here ({exc}); scripts/bootstrap.sh installs one")


def test_meteor_matches_nltk_on_the_same_tokens():
    from nltk.translate.meteor_score import meteor_score

    metric = _meteor()
    expected = [meteor_score([nltk_words(r)], nltk_words(p), wordnet=metric._wordnet)
                for p, r in zip(PREDICTIONS, REFERENCES)]
    assert metric.item_stats(PREDICTIONS, REFERENCES) == pytest.approx(expected, abs=TOLERANCE)


def test_meteor_counts_a_wordnet_synonym_worked_by_hand():
    # "sick" ~ "ill" (WordNet synset ill.a.01): 4 of 4 unigrams match in one chunk:
    # Fmean = 1, penalty = 0.5 * (1/4)^3 = 0.0078125, METEOR = 0.9921875.
    # "big" ~ "large" does not count in NLTK: its synonym stage compares against the Porter stems the stem
    # stage left behind ("larg"), so 3 of 4 match in one chunk: (1 - 0.5 / 27) * 0.75.
    metric = _meteor()
    scores = metric.item_stats(["the patient is sick", "the patient is big"],
                               ["the patient is ill", "the patient is large"])
    assert scores == pytest.approx([0.9921875, (1 - 0.5 / 27) * 0.75], abs=1e-6)


def test_meteor_without_wordnet_says_how_to_get_it(tmp_path):
    (tmp_path / "index.noun").write_text("")
    with pytest.raises(MetricUnavailable, match=r"lacks lexnames.*get_wordnet\.sh"):
        Meteor(str(tmp_path))


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        CocoBleu().item_stats(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="prediction 0 is NoneType"):
        Rouge().item_stats([None], ["a"])
    with pytest.raises(ValueError, match="no items"):
        Rouge().aggregate([])
