"""From manifest records to (question, answer) pairs, using the engine's own task questions.

The questions are exactly the ones the engine asks at inference (``engine.prompts``), so a model trained here
answers the Report, Chat and Findings docks without a prompt mismatch. Task names:

- ``findings`` / ``impression``: the report sections;
- ``region_findings``: one pair per region the record has (chest / abdomen / pelvis);
- ``qa``: free-text questions as asked; multiple choice as the engine asks it, answered with the letter;
- ``diagnosis``: the diagnosis question for each labelled abnormality, answered ``Yes`` or ``No``.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_radreport.engine import prompts
from napari_radreport.training.manifest import ManifestRecord

TASKS = ("findings", "impression", "region_findings", "qa", "diagnosis")


@dataclass(frozen=True)
class TextPair:
    task: str
    question: str
    answer: str


def check_tasks(tasks) -> tuple[str, ...]:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; use some of {', '.join(TASKS)}")
    return tuple(tasks)


def text_pairs(record: ManifestRecord, tasks, task_questions: dict[str, str],
               choice_answer: str = "letter") -> list[TextPair]:
    """Every (question, answer) pair of ``record`` for the chosen ``tasks``; a multiple-choice answer is the
    option's letter or its text (``choice_answer``, engine.prompts.CHOICE_ANSWERS)."""
    pairs: list[TextPair] = []
    for task in check_tasks(tasks):
        if task in ("findings", "impression"):
            text = getattr(record, task)
            if text:
                pairs.append(TextPair(task, prompts.section_prompt(task_questions, task, record.modality), text))
        elif task == "region_findings":
            for region, text in record.regions.items():
                if text:
                    question = prompts.section_prompt(task_questions, "findings", record.modality, region)
                    pairs.append(TextPair(task, question, text))
        elif task == "qa":
            for qa in record.qa:
                if qa.choices:
                    question = prompts.choice_prompt(task_questions, qa.question, qa.choices)
                    pairs.append(TextPair(task, question, prompts.choice_target(choice_answer, qa.choices,
                                                                                qa.answer_index)))
                else:
                    pairs.append(TextPair(task, qa.question, qa.answer))
        else:
            for label, value in record.labels.items():
                pairs.append(TextPair(task, prompts.diagnosis_prompt(task_questions, label), "Yes" if value else "No"))
    return pairs
