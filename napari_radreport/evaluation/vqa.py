"""Multiple-choice VQA accuracy as AMOS-MM scores it: the answer must be one letter A-D, nothing else.

A prediction counts right only when, stripped of surrounding whitespace, it is exactly the letter of the
right choice (upper case). "B." or "B) pleural effusion" or the choice's text count wrong. Predictions made
by ``radreport predict`` carry the chosen index, which is turned into its letter first.
"""

from __future__ import annotations

from collections.abc import Sequence

from napari_radreport.evaluation.metric import MetricSpec, mean

LETTERS = "ABCD"


def answer_letter(answer: dict) -> str:
    """The letter a predicted answer gives: its ``choice_index`` when there is one, else its text."""
    index = answer.get("choice_index")
    if isinstance(index, int) and 0 <= index < len(LETTERS):
        return LETTERS[index]
    return str(answer.get("answer", ""))


class ChoiceAccuracy:
    """Share of multiple-choice questions answered with exactly the right letter."""

    spec = MetricSpec("VQA accuracy", "AMOS-MM rule (this project)",
                      "the stripped answer must equal one letter A-D", "case kept (upper-case letters only)",
                      "mean over questions")

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} answers but {len(references)} references")
        for letter in references:
            if letter not in LETTERS:
                raise ValueError(f"reference answer {letter!r} is not a letter A-D")
        return [float(p.strip() == r) for p, r in zip(predictions, references)]

    def aggregate(self, stats: Sequence[float]) -> dict[str, float]:
        return {self.spec.name: mean(stats)}
