"""The questions the engine puts to a model for each task; a recipe's ``prompt.tasks`` may override them.

The diagnosis question is E3D-GPT's ("Does this image show signs of {label}?"); the labels are CT-RATE's 18,
in CT-RATE's order. Regions follow the AMOS-MM seed (chest, abdomen, pelvis).
"""

from __future__ import annotations

CT_RATE_LABELS = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
)
# CheXpert's 14 observations: what radiograph models are usually trained to name.
CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
REGIONS = ("chest", "abdomen", "pelvis")
SECTIONS = ("findings", "impression")
LETTERS = "ABCD"

DEFAULT_TASKS = {
    "findings": "Write the findings section of a radiology report for this {modality}.",
    "impression": "Write the impression section of a radiology report for this {modality}.",
    "region_findings": "Write the findings for the {region} in this CT.",
    "diagnosis": "Does this image show signs of {label}?",
    "choice": "{question}\n{choices}\nAnswer with the letter of the correct option.",
}
MODALITY_WORDS = {"ct": "CT scan", "xray": "chest radiograph"}
# How a model answers a multiple-choice question (the recipe's ``prompt.choice_answer``): with the option's letter
# (AMOS-MM; the engine reads the letter's odds), or with the option's words (the engine compares how likely the
# model finds each option's whole text, so no letter has to be tied to an option).
CHOICE_ANSWERS = ("letter", "text")
# What a report section's prompt is given besides the image (the recipe's ``prompt.report_guidance``): nothing, or
# the abnormalities the model's own diagnosis finds, named after the request (the diagnosis-driven prompts of
# PromptMRG, Jin et al., AAAI 2024). Training writes the record's true labels there; the engine, the diagnosis's.
REPORT_GUIDANCE = ("none", "diagnosis")
DIAGNOSIS_THRESHOLD = 0.5


def task_prompts(config_prompt: dict | None) -> dict[str, str]:
    """The default task questions with a recipe's overrides (``prompt.tasks`` in the recipe) applied."""
    overrides = (config_prompt or {}).get("tasks", {})
    unknown = sorted(set(overrides) - set(DEFAULT_TASKS))
    if unknown:
        raise ValueError(f"prompt.tasks has unknown task(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_TASKS)}")
    return {**DEFAULT_TASKS, **overrides}


def section_prompt(tasks: dict[str, str], section: str, modality: str, region: str | None = None) -> str:
    """The question that asks for one report section (findings of one region, or the impression)."""
    if section not in SECTIONS:
        raise ValueError(f"unknown report section {section!r}; use {' or '.join(SECTIONS)}")
    if region is not None:
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; use one of {', '.join(REGIONS)}")
        if section == "findings":
            return tasks["region_findings"].format(region=region)
    return tasks[section].format(modality=MODALITY_WORDS.get(modality, "image"))


def model_labels(config_prompt: dict | None, modality: str) -> tuple[str, ...]:
    """The abnormality labels a model is asked about: its ``prompt.labels``, else CT-RATE's or CheXpert's."""
    labels = (config_prompt or {}).get("labels")
    return tuple(labels) if labels else (CT_RATE_LABELS if modality == "ct" else CHEXPERT_LABELS)


def report_guidance(config_prompt: dict | None) -> str:
    """``prompt.report_guidance`` of a model's config: "none" (the default) or "diagnosis"."""
    mode = (config_prompt or {}).get("report_guidance", "none")
    if mode not in REPORT_GUIDANCE:
        raise ValueError(f"prompt.report_guidance must be {' or '.join(REPORT_GUIDANCE)}, got {mode!r}")
    return mode


def guided_section_prompt(question: str, positives: list[str]) -> str:
    """A section's question followed by the abnormalities found (in the model's label order), or "none"."""
    return f"{question}\nAbnormalities: {', '.join(positives) if positives else 'none'}."


def section_title(section: str, region: str | None = None) -> str:
    return section.capitalize() + (f" ({region})" if region and section == "findings" else "")


def choice_prompt(tasks: dict[str, str], question: str, choices: list[str]) -> str:
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"a multiple-choice question needs 2 to {len(LETTERS)} choices, got {len(choices)}")
    lines = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices))
    return tasks["choice"].format(question=question.strip(), choices=lines)


def choice_answer(config_prompt: dict | None) -> str:
    """``prompt.choice_answer`` of a model's config: "letter" (the default) or "text"."""
    mode = (config_prompt or {}).get("choice_answer", "letter")
    if mode not in CHOICE_ANSWERS:
        raise ValueError(f"prompt.choice_answer must be {' or '.join(CHOICE_ANSWERS)}, got {mode!r}")
    return mode


def choice_target(mode: str, choices: list[str], index: int) -> str:
    """What a model answering in ``mode`` says for option ``index``."""
    return LETTERS[index] if mode == "letter" else choices[index]


def diagnosis_prompt(tasks: dict[str, str], label: str) -> str:
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
