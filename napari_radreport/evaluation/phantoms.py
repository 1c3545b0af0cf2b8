"""The phantom preset: how often a model's reports and answers state a phantom's true findings.

For each held-out phantom the engine writes the report (greedy), answers every question of the record (free
text with ``ask``, multiple choice with ``choose``) and runs the diagnosis; ``read_findings`` reads back what
the text states. A finding counts as right when presence matches and, when present, its side / lobe (and a
nodule's size within 4 mm) match; a Findings section must speak of each finding (present or denied), an
empty section scores nothing. Reported: per finding, overall, per question type, and diagnosis accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from napari_radreport.data.phantoms import reports
from napari_radreport.data.phantoms.anatomy import Findings
from napari_radreport.engine import prompts

SIZE_TOLERANCE_MM = 4
_UNSPECIFIED = {"nodule": ("?", "?", -99), "consolidation": ("?", "?"), "effusion": "?", "cardiomegaly": True,
                "emphysema": True, "pericardial_effusion": True}
_QUESTION_FINDING = {q: name for name, qs in reports.YES_NO_QUESTIONS.items() for q in qs}


@dataclass
class Tally:
    right: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.right += int(ok)
        self.total += 1

    @property
    def accuracy(self) -> float | None:
        return self.right / self.total if self.total else None


@dataclass
class PhantomScores:
    findings: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    impression: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    questions: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    diagnosis: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))

    @staticmethod
    def _overall(tallies: dict[str, Tally]) -> Tally:
        return Tally(sum(t.right for t in tallies.values()), sum(t.total for t in tallies.values()))

    def summary(self) -> dict[str, Any]:
        def table(tallies):
            return {name: {"accuracy": t.accuracy, "right": t.right, "n": t.total}
                    for name, t in tallies.items()}

        out = {}
        for name in ("findings", "impression", "questions", "diagnosis"):
            tallies = getattr(self, name)
            overall = self._overall(tallies)
            out[name] = {"accuracy": overall.accuracy, "right": overall.right, "n": overall.total,
                         "by_kind": table(tallies)}
        return out


def truth_of(record) -> Findings:
    """The findings a phantom record's labels and impression describe (the impression
    names every attribute)."""
    return reports.read_findings(record.impression)


def score_answer(question: str, answer: str, truth: Findings) -> tuple[str, bool] | None:
    """(question kind, right?) for a free-text phantom question; None for a question this
    preset does not know."""
    if question in _QUESTION_FINDING:
        name = _QUESTION_FINDING[question]
        opening = answer.strip().lower()[:4]
        if not opening.startswith(("yes", "no")):
            return f"yes/no {name}", False  # neither yes nor no: not an answer
        stated = Findings()
        if opening.startswith("yes"):  # present, with whatever side / lobe / size the answer gives
            stated = reports.read_findings(answer.replace("Yes,", "Yes."))
            if not getattr(stated, name):
                setattr(stated, name, _UNSPECIFIED[name])
        return f"yes/no {name}", reports.finding_matches(name, truth, stated, SIZE_TOLERANCE_MM)
    if question == "Where is the lung nodule?":
        side, lobe = reports.side_and_lobe(answer.lower())
        return "nodule location", truth.nodule is not None and (side, lobe) == truth.nodule[:2]
    if question == "How large is the nodule?":
        size = reports.size_mm(answer)
        ok = (truth.nodule is not None and size is not None
              and abs(size - truth.nodule[2]) <= SIZE_TOLERANCE_MM)
        return "nodule size", ok
    return None


def evaluate_phantoms(engine, records, *, on_record: Callable[[dict], None] | None = None) -> PhantomScores:
    """Run report, questions and diagnosis on each record with a loaded ``engine``; tally what is right."""
    from napari_radreport.data.studies import read_record_study

    scores = PhantomScores()
    for record in records:
        truth, study = truth_of(record), read_record_study(record)
        result = engine.report(study, sections=("findings", "impression"))
        sections = {title.lower(): text for title, text in result.sections}
        detail: dict[str, Any] = {"id": record.id, "findings": sections.get("findings", ""),
                                  "impression": sections.get("impression", ""), "answers": []}
        for section, tallies in (("findings", scores.findings), ("impression", scores.impression)):
            text = sections.get(section, "").strip()
            stated = reports.read_findings(text)
            for name in reports.FINDING_NAMES:
                # Findings must speak of every finding (present or denied); an impression lists the
                # positive ones.
                said = name in stated.extras["mentioned"] or (section == "impression" and bool(text))
                tallies[name].add(said and reports.finding_matches(name, truth, stated, SIZE_TOLERANCE_MM))
        for qa in record.qa:
            if qa.choices:
                letter = engine.choose(study, qa.question, qa.choices).letter
                kind, ok, answer = "multiple choice", letter == prompts.LETTERS[qa.answer_index], letter
            else:
                answer = engine.ask(study, qa.question).text.strip()
                scored = score_answer(qa.question, answer, truth)
                if scored is None:
                    continue
                kind, ok = scored
            scores.questions[kind].add(ok)
            detail["answers"].append({"question": qa.question, "answer": answer, "right": ok})
        probabilities = engine.diagnose(study, list(record.labels))
        for label, value in record.labels.items():
            scores.diagnosis[label].add((probabilities[label] >= 0.5) == bool(value))
        detail["diagnosis"] = probabilities
        if on_record is not None:
            on_record(detail)
    return scores
