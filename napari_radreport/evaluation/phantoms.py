"""The phantom preset: how often a model's reports and answers state a phantom's true findings.

For each held-out phantom the engine writes the report (greedy), answers every question of the record (free
text with ``ask``, multiple choice with ``choose``) and runs the diagnosis; ``read_findings`` reads back what
the text states. A finding counts as right when presence matches and, when present, its side / lobe (and a
nodule's size within 4 mm) match; a Findings section must speak of each finding (present or denied), an
empty section scores nothing. Each study's outcomes are kept (``StudyOutcome``: per finding, the truth, what
was stated and whether it was right; per answer, its kind and whether it was right), so that
``phantom_figures`` can split present from absent findings, resample studies and set a blind baseline beside
each figure; ``PhantomScores.summary`` gives the plain accuracies per part, finding and question kind.
"""

from __future__ import annotations

from collections import Counter, defaultdict
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


PARTS = ("findings", "impression", "diagnosis")  # scored per finding; the questions per question kind
PRESENT, DENIED, SILENT = 1, 0, -1  # what a part states about a finding


@dataclass
class StudyOutcome:
    """What one study's outputs got right, per finding (in ``reports.FINDING_NAMES`` order) and per answer."""

    id: str
    truth: dict[str, tuple[bool, ...]] = field(default_factory=dict)  # part -> finding present in the phantom
    stated: dict[str, tuple[int, ...]] = field(default_factory=dict)  # part -> PRESENT / DENIED / SILENT
    right: dict[str, tuple[bool, ...]] = field(default_factory=dict)  # presence; side / lobe / size too
    answers: list[tuple[str, bool, str | None]] = field(default_factory=list)  # kind, right, yes/no finding
    conflicts: list[str] = field(default_factory=list)  # each conflict's kind in the report (consistency.py)


@dataclass
class PhantomScores:
    """Per-study outcomes; ``summary`` gives the plain accuracies, ``phantom_figures`` the rest."""

    studies: list[StudyOutcome] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Accuracy per part, overall and per finding (diagnosis: per label) or question kind."""
        out: dict[str, Any] = {}
        for part in ("findings", "impression", "questions", "diagnosis"):
            tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # kind -> [right, total]
            for study in self.studies:
                outcomes = ([(kind, ok) for kind, ok, _ in study.answers] if part == "questions" else
                            zip(_names(part), study.right.get(part, ()), strict=False))
                for kind, ok in outcomes:
                    tallies[kind][0] += int(ok)
                    tallies[kind][1] += 1
            right, total = sum(t[0] for t in tallies.values()), sum(t[1] for t in tallies.values())
            out[part] = {"accuracy": right / total if total else None, "right": right, "n": total,
                         "by_kind": {kind: {"accuracy": r / n, "right": r, "n": n}
                                     for kind, (r, n) in tallies.items()}}
        kinds = Counter(kind for study in self.studies for kind in study.conflicts)
        n = len(self.studies)
        total = sum(kinds.values())
        out["conflicts"] = {"reports": n, "with_conflicts": sum(bool(s.conflicts) for s in self.studies),
                            "total": total, "per_report": total / n if n else None, "by_kind": dict(kinds)}
        return out


def _names(part: str) -> tuple[str, ...]:
    """How the summary names a part's findings: the diagnosis by its label names."""
    return tuple(reports.LABELS.values()) if part == "diagnosis" else reports.FINDING_NAMES


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
        present = tuple(bool(getattr(truth, name)) for name in reports.FINDING_NAMES)
        outcome = StudyOutcome(record.id)
        result = engine.report(study, sections=("findings", "impression"))
        sections = {title.lower(): text for title, text in result.sections}
        outcome.conflicts = [c.kind for c in result.conflicts]
        detail: dict[str, Any] = {"id": record.id, "findings": sections.get("findings", ""),
                                  "impression": sections.get("impression", ""), "answers": [],
                                  "conflicts": [c.message for c in result.conflicts]}
        for section in ("findings", "impression"):
            text = sections.get(section, "").strip()
            stated = reports.read_findings(text)
            said_of, right_of = [], []
            for name in reports.FINDING_NAMES:
                # Findings must speak of every finding (present or denied); an impression lists the
                # positive ones.
                said = name in stated.extras["mentioned"] or (section == "impression" and bool(text))
                said_of.append(PRESENT if getattr(stated, name) else DENIED if said else SILENT)
                right_of.append(said and reports.finding_matches(name, truth, stated, SIZE_TOLERANCE_MM))
            outcome.truth[section], outcome.stated[section] = present, tuple(said_of)
            outcome.right[section] = tuple(right_of)
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
            outcome.answers.append((kind, ok, _QUESTION_FINDING.get(qa.question)))
            detail["answers"].append({"question": qa.question, "answer": answer, "right": ok})
        labels = _names("diagnosis")
        probabilities = engine.diagnose(study, list(record.labels))
        outcome.truth["diagnosis"] = tuple(bool(record.labels[label]) for label in labels)
        outcome.stated["diagnosis"] = tuple(PRESENT if probabilities[label] >= 0.5 else DENIED
                                            for label in labels)
        outcome.right["diagnosis"] = tuple((said == PRESENT) == present for said, present
                                           in zip(outcome.stated["diagnosis"], outcome.truth["diagnosis"],
                                                  strict=True))
        detail["diagnosis"] = probabilities
        scores.studies.append(outcome)
        if on_record is not None:
            on_record(detail)
    return scores
