"""The questions the engine puts to a model for each task, built from the model's ``PromptSpec``
(``modeling.prompt_spec``: the task questions, a recipe's overrides applied, and the labels).

Report sections and regions (chest, abdomen, pelvis, as in the AMOS-MM seed), multiple-choice letters, and
parsing a question typed with its options.
"""

from __future__ import annotations

from collections.abc import Mapping

REGIONS = ("chest", "abdomen", "pelvis")
SECTIONS = ("findings", "impression")
LETTERS = "ABCD"

MODALITY_WORDS = {"ct": "CT scan", "xray": "chest radiograph"}
DIAGNOSIS_THRESHOLD = 0.5


def section_prompt(tasks: Mapping[str, str], section: str, modality: str, region: str | None = None) -> str:
    """The question that asks for one report section (findings of one region, or the impression)."""
    if section not in SECTIONS:
        raise ValueError(f"unknown report section {section!r}; use {' or '.join(SECTIONS)}")
    if region is not None:
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; use one of {', '.join(REGIONS)}")
        if section == "findings":
            return tasks["region_findings"].format(region=region)
    return tasks[section].format(modality=MODALITY_WORDS.get(modality, "image"))


def guided_section_prompt(question: str, positives: list[str]) -> str:
    """A section's question followed by the abnormalities found (in the model's label order), or "none"."""
    return f"{question}\nAbnormalities: {', '.join(positives) if positives else 'none'}."


def with_indication(template: str | None, question: str, indication: str) -> str:
    """A report question carrying the clinical indication where the model reads one (``template``, the prompt
    spec's ``indication_template``); the question unchanged without a template or an indication."""
    indication = " ".join(indication.split())
    if template is None or not indication:
        return question
    return template.replace("{indication}", indication).replace("{question}", question)


def section_title(section: str, region: str | None = None) -> str:
    return section.capitalize() + (f" ({region})" if region and section == "findings" else "")


def choice_prompt(tasks: Mapping[str, str], question: str, choices: list[str]) -> str:
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"a multiple-choice question needs 2 to {len(LETTERS)} choices, got {len(choices)}")
    lines = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices))
    return tasks["choice"].format(question=question.strip(), choices=lines)


def choice_target(mode: str, choices: list[str], index: int) -> str:
    """What a model answering in ``mode`` says for option ``index``."""
    return LETTERS[index] if mode == "letter" else choices[index]


def diagnosis_prompt(tasks: Mapping[str, str], label: str) -> str:
    return tasks["diagnosis"].format(label=label.lower())


def parse_choices(text: str) -> tuple[str, list[str]] | None:
    """A question typed with options on their own lines ("A. ...", "B) ...") -> (question, options)."""
    import re

    question, options = [], []
    for line in text.strip().splitlines():
        match = re.match(r"^\s*([A-Da-d])[.):]\s+(.+)$", line)
        if match and match.group(1).upper() == LETTERS[len(options)]:
            options.append(match.group(2).strip())
        elif not options:
            question.append(line)
        else:
            return None
    return (" ".join(question).strip(), options) if len(options) >= 2 and question else None
