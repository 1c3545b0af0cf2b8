"""Lexical report metrics, each matching one reference implementation (tests compare them to 1e-4).

- :class:`CocoBleu`: pycocoevalcap 1.2 ``Bleu`` (RRG24): whitespace tokens, case kept, corpus level, the
  reference length closest to each hypothesis, pycocoevalcap's 1e-15 / 1e-9 guards against zero counts.
- :class:`SentenceBleu`: HF ``evaluate``'s ``bleu`` on one report at a time with ``max_order`` n (M3D's
  eval_caption.py): 13a tokens, case kept, no smoothing, then the mean over reports. Equals sacrebleu's
  sentence BLEU with ``max_ngram_order=n, smooth_method='none'`` divided by 100.
- :class:`Rouge`: rouge-score 0.1.2 F1 of ROUGE-L (longest common subsequence) or ROUGE-N, with or without
  the Porter stemmer, mean over reports.
- :class:`Meteor`: NLTK's ``meteor_score`` (alpha 0.9, beta 3, gamma 0.5; exact, Porter-stem and WordNet
  synonym matches), on the tokens HF ``evaluate``'s METEOR uses, mean over reports.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from napari_radreport.evaluation import tokenize
from napari_radreport.evaluation.metric import MetricSpec, check_pairs, mean

_COCO_TINY, _COCO_SMALL = 1e-15, 1e-9


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


@dataclass(frozen=True)
class BleuCounts:
    """One report's BLEU sufficient statistics: lengths and clipped n-gram matches / candidates per order."""

    hyp_len: int
    ref_len: int
    correct: tuple[int, ...]
    guess: tuple[int, ...]


def bleu_counts(hypothesis: Sequence[str], reference: Sequence[str], order: int) -> BleuCounts:
    """Clipped n-gram matches of a tokenised hypothesis against one tokenised reference."""
    correct, guess = [], []
    for n in range(1, order + 1):
        hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
        correct.append(sum(min(count, ref[gram]) for gram, count in hyp.items()))
        guess.append(max(0, len(hypothesis) - n + 1))
    return BleuCounts(len(hypothesis), len(reference), tuple(correct), tuple(guess))


class CocoBleu:
    """Corpus BLEU-n exactly as pycocoevalcap's ``Bleu(n).compute_score`` (one reference per report)."""

    def __init__(self, order: int = 4) -> None:
        self.order = order
        self.spec = MetricSpec(f"BLEU-{order}", "pycocoevalcap 1.2 Bleu (reimplemented)", "whitespace split",
                               "case kept", "corpus level (n-gram counts summed over reports)")

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[BleuCounts]:
        check_pairs(predictions, references)
        return [bleu_counts(tokenize.whitespace(p), tokenize.whitespace(r), self.order)
                for p, r in zip(predictions, references)]

    def aggregate(self, stats: Sequence[BleuCounts]) -> dict[str, float]:
        if not stats:
            raise ValueError("no items to score")
        hyp_len = sum(s.hyp_len for s in stats)
        ref_len = sum(s.ref_len for s in stats)
        score = 1.0
        for k in range(self.order):
            score *= ((sum(s.correct[k] for s in stats) + _COCO_TINY)
                      / (sum(s.guess[k] for s in stats) + _COCO_SMALL))
        score **= 1.0 / self.order
        ratio = (hyp_len + _COCO_TINY) / (ref_len + _COCO_SMALL)
        if ratio < 1:
            score *= math.exp(1 - 1 / ratio)
        return {self.spec.name: score}


def sentence_bleu(counts: BleuCounts) -> float:
    """BLEU of one report without smoothing (HF evaluate / tensorflow-nmt ``compute_bleu``)."""
    if counts.hyp_len == 0 or min(counts.guess) == 0:
        return 0.0
    precisions = [c / g for c, g in zip(counts.correct, counts.guess)]
    if min(precisions) <= 0:
        return 0.0
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / len(precisions))
    ratio = counts.hyp_len / counts.ref_len if counts.ref_len else math.inf
    return geo_mean * (1.0 if ratio > 1.0 else math.exp(1 - 1 / ratio))


class SentenceBleu:
    """Per-report BLEU-n on 13a tokens, averaged over reports (M3D / E3D-GPT's BLEU-1)."""

    def __init__(self, order: int = 1) -> None:
        self.order = order
        self.spec = MetricSpec(f"BLEU-{order}", ("HF evaluate bleu per report (reimplemented; "
                                                 "= sacrebleu sentence BLEU, smooth 'none')"),
                               "mteval 13a", "case kept", "mean over reports")

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        check_pairs(predictions, references)
        return [sentence_bleu(bleu_counts(tokenize.mteval_13a(p.strip()), tokenize.mteval_13a(r.strip()),
                                          self.order))
                for p, r in zip(predictions, references)]

    def aggregate(self, stats: Sequence[float]) -> dict[str, float]:
        return {self.spec.name: mean(stats)}


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def _f1(overlap: int, hyp_len: int, ref_len: int) -> float:
    precision = overlap / hyp_len if hyp_len else 0.0
    recall = overlap / ref_len if ref_len else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


class Rouge:
    """rouge-score F1 of ROUGE-L (``kind='L'``) or ROUGE-N (``kind=1, 2, ...``), mean over reports."""

    def __init__(self, kind: str | int = "L", stem: bool = False) -> None:
        self.kind, self.stem = kind, stem
        tokens = ("rouge-score default (lowercase alphanumeric runs)"
                  + (", Porter stemmer" if stem else ", no stemming"))
        self.spec = MetricSpec(f"ROUGE-{kind}", "rouge-score 0.1.2 F-measure (reimplemented)", tokens,
                               "lowercased", "mean over reports")

    def _score(self, prediction: str, reference: str) -> float:
        hyp, ref = tokenize.rouge_tokens(prediction, self.stem), tokenize.rouge_tokens(reference, self.stem)
        if self.kind == "L":
            overlap = _lcs_length(ref, hyp)
            return _f1(overlap, len(hyp), len(ref))
        n = int(self.kind)
        hyp_grams, ref_grams = _ngrams(hyp, n), _ngrams(ref, n)
        overlap = sum(min(count, ref_grams[gram]) for gram, count in hyp_grams.items())
        return _f1(overlap, sum(hyp_grams.values()), sum(ref_grams.values()))

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        check_pairs(predictions, references)
        return [self._score(p, r) for p, r in zip(predictions, references)]

    def aggregate(self, stats: Sequence[float]) -> dict[str, float]:
        return {self.spec.name: mean(stats)}


class Meteor:
    """NLTK ``meteor_score`` per report on HF evaluate's tokens, mean over reports;
    needs WordNet 3.0 files."""

    def __init__(self, wordnet_dir: str | None = None) -> None:
        from napari_radreport.evaluation.wordnet import load_wordnet

        self._wordnet, source = load_wordnet(wordnet_dir)
        self.spec = MetricSpec("METEOR", f"NLTK meteor_score (alpha 0.9, beta 3, gamma 0.5), {source}",
                               "NLTK word_tokenize (untrained Punkt sentence split)", "lowercased",
                               "mean over reports")

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        from nltk.translate.meteor_score import single_meteor_score

        check_pairs(predictions, references)
        return [single_meteor_score(tokenize.nltk_words(r.strip()), tokenize.nltk_words(p.strip()),
                                    wordnet=self._wordnet) for p, r in zip(predictions, references)]

    def aggregate(self, stats: Sequence[float]) -> dict[str, float]:
        return {self.spec.name: mean(stats)}
