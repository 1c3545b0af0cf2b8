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

from napari_radreport.data.manifest import ManifestRecord
from napari_radreport.engine import prompts

TASKS = ("findings", "impression", "region_findings", "qa", "diagnosis")


@dataclass(frozen=True)
class TextPair:
    task: str
    question: str
    answer: str


def check_tasks(tasks) -> tuple[str, ...]:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; "
                         f"use some of {', '.join(TASKS)}")
    return tuple(tasks)


def text_pairs(record: ManifestRecord, tasks, task_questions: dict[str, str],
               choice_answer: str = "letter", guide_labels: tuple[str, ...] | None = None) -> list[TextPair]:
    """Every (question, answer) pair of ``record`` for the chosen ``tasks``; a multiple-choice answer is the
    option's letter or its text (``choice_answer``, modeling.prompt_spec.CHOICE_ANSWERS). With
    ``guide_labels`` (a model with ``prompt.report_guidance: "diagnosis"``) each report prompt names the
    record's positive labels among them, in that order, as the engine names its diagnosis's (a label the
    record lacks counts as absent)."""
    pairs: list[TextPair] = []

    def report_question(section: str, region: str | None = None) -> str:
        question = prompts.section_prompt(task_questions, section, record.modality, region)
        if guide_labels is None:
            return question
        return prompts.guided_section_prompt(
            question, [label for label in guide_labels if record.labels.get(label)])

    for task in check_tasks(tasks):
        if task in ("findings", "impression"):
            text = getattr(record, task)
            if text:
                pairs.append(TextPair(task, report_question(task), text))
        elif task == "region_findings":
            for region, text in record.regions.items():
                if text:
                    pairs.append(TextPair(task, report_question("findings", region), text))
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
                pairs.append(TextPair(task, prompts.diagnosis_prompt(task_questions, label),
                                      "Yes" if value else "No"))
    return pairs
