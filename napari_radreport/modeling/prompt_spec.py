"""A model's ``prompt`` section (the recipe's, kept in its config): what it is asked and how it answers.

``PromptSpec.parse`` checks and resolves it once, when the model loads: the task questions with the recipe's
``prompt.tasks`` overrides, the diagnosis labels (CT-RATE's 18 in CT-RATE's order for CT, CheXpert's 14 for
radiographs, unless ``prompt.labels``), how reports are guided and how multiple choice is answered. The
diagnosis question is E3D-GPT's ("Does this image show signs of {label}?").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

CT_RATE_LABELS = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
)
# CheXpert's 14 observations: what radiograph models are usually trained to name.
CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
DEFAULT_TASKS = {
    "findings": "Write the findings section of a radiology report for this {modality}.",
    "impression": "Write the impression section of a radiology report for this {modality}.",
    "region_findings": "Write the findings for the {region} in this CT.",
    "diagnosis": "Does this image show signs of {label}?",
    "choice": "{question}\n{choices}\nAnswer with the letter of the correct option.",
    # referring segmentation (models with a segmentation head: M3D-LaMed's [SEG]); the question and answer are
    # the forms of M3D's own segmentation data (LaMed/src/dataset/prompt_templates.py)
    "segment": "Can you segment the {phrase} in this image?",
    "segment_answer": "It is [SEG].",
    # boxes (models that read and write M3D-LaMed's <bx_start>[...]<bx_end>): where a finding is, and what is
    # in a region; forms of M3D's positioning questions (the same file); {box}: the box's text with markers
    "locate_box": "Where is {phrase} in this image? Please output the box.",
    "region": "What is in the region {box}?",
}
SEGMENTATION_TASKS = ("segment", "segment_answer")  # asked only of a model with a segmentation head
BOX_TASKS = ("locate_box", "region")  # asked only of a model that reads boxes (m3d_boxes.reads_boxes)
# How a model answers a multiple-choice question (the recipe's ``prompt.choice_answer``): with the option's
# letter (AMOS-MM; the engine reads the letter's odds), or with the option's words (the engine compares how
# likely the model finds each option's whole text, so no letter has to be tied to an option).
CHOICE_ANSWERS = ("letter", "text")
# What a report section's prompt is given besides the image (the recipe's ``prompt.report_guidance``):
# nothing, or the abnormalities the model's own diagnosis finds, named after the request (the diagnosis-driven
# prompts of PromptMRG, Jin et al., AAAI 2024). Training writes the record's true labels there; the engine,
# the diagnosis's.
REPORT_GUIDANCE = ("none", "diagnosis")


def indication_template(config_prompt: dict | None) -> str | None:
    """``prompt.indication_template`` of a model's config: how a report question carries the clinical
    indication ("Clinical indication: {indication}\n{question}"), or None when the model does not read one."""
    template = (config_prompt or {}).get("indication_template")
    if template is None:
        return None
    if not isinstance(template, str) or "{indication}" not in template or "{question}" not in template:
        raise ValueError("prompt.indication_template must be a text holding {indication} and {question}, "
                         f"got {template!r}")
    return template


def task_prompts(config_prompt: dict | None) -> dict[str, str]:
    """The default task questions with a recipe's overrides (``prompt.tasks`` in the recipe) applied."""
    overrides = (config_prompt or {}).get("tasks", {})
    unknown = sorted(set(overrides) - set(DEFAULT_TASKS))
    if unknown:
        raise ValueError(f"prompt.tasks has unknown task(s) {', '.join(unknown)}; "
                         f"known: {', '.join(DEFAULT_TASKS)}")
    return {**DEFAULT_TASKS, **overrides}


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


def choice_answer(config_prompt: dict | None) -> str:
    """``prompt.choice_answer`` of a model's config: "letter" (the default) or "text"."""
    mode = (config_prompt or {}).get("choice_answer", "letter")
    if mode not in CHOICE_ANSWERS:
        raise ValueError(f"prompt.choice_answer must be {' or '.join(CHOICE_ANSWERS)}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class PromptSpec:
    """A model's ``prompt`` section, checked and resolved once when the model loads (see ``parse``)."""

    tasks: Mapping[str, str]  # every task's question, the recipe's overrides applied (read-only)
    labels: tuple[str, ...]  # what diagnosis asks about
    report_guidance: str = "none"  # one of REPORT_GUIDANCE
    choice_answer: str = "letter"  # one of CHOICE_ANSWERS
    chat_template: bool = False  # whether the prompt goes through the tokenizer's chat template
    indication_template: str | None = None  # how a report question carries the indication; None: not read

    @classmethod
    def parse(cls, config_prompt: dict | None, modality: str) -> PromptSpec:
        """The spec of a config's ``prompt`` dict for a ``modality`` model; a ValueError names a bad field."""
        return cls(tasks=MappingProxyType(task_prompts(config_prompt)),
                   labels=model_labels(config_prompt, modality),
                   report_guidance=report_guidance(config_prompt), choice_answer=choice_answer(config_prompt),
                   chat_template=bool((config_prompt or {}).get("chat_template")),
                   indication_template=indication_template(config_prompt))
