"""The (question, answer) pairs a training record gives, as the engine will ask them."""

from __future__ import annotations

import pytest

from napari_radreport.data.manifest import ManifestRecord, QAPair
from napari_radreport.engine import prompts
from napari_radreport.modeling import prompt_spec
from napari_radreport.training.examples import text_pairs


def _record() -> ManifestRecord:
    qa = [QAPair("On which side is the pleural effusion?", "left side",
                 ["right side", "left side", "both sides"], 1),
          QAPair("Is there a pleural effusion?", "Yes, a left pleural effusion.")]
    return ManifestRecord(id="r", modality="ct", images=["x.nii.gz"], split="train",
                          findings="Left effusion.", qa=qa, labels={"Pleural effusion": 1})


@pytest.mark.parametrize(("mode", "answer"), [("letter", "B"), ("text", "left side")])
def test_a_multiple_choice_answer_is_the_letter_or_the_words_of_the_right_option(mode, answer):
    tasks = prompt_spec.task_prompts(None)
    pairs = text_pairs(_record(), ["qa"], tasks, mode)
    asked = prompts.choice_prompt(tasks, "On which side is the pleural effusion?", ["right side", "left side",
                                                                                   "both sides"])
    assert [(p.question, p.answer) for p in pairs] == [
        (asked, answer), ("Is there a pleural effusion?", "Yes, a left pleural effusion.")]


def test_every_task_gives_its_pairs():
    tasks = prompt_spec.task_prompts(None)
    pairs = text_pairs(_record(), ["findings", "diagnosis"], tasks)
    assert [(p.task, p.answer) for p in pairs] == [("findings", "Left effusion."), ("diagnosis", "Yes")]
    assert pairs[1].question == "Does this image show signs of pleural effusion?"
    with pytest.raises(ValueError, match="choice_answer must be letter or text"):
        prompt_spec.choice_answer({"choice_answer": "index"})


def test_guided_report_prompts_name_the_records_positive_labels_in_the_models_order():
    tasks = prompt_spec.task_prompts(None)
    record = ManifestRecord(id="r", modality="ct", images=["x.nii.gz"], split="train", findings="F.",
                            impression="I.",
                            labels={"Pleural effusion": 1, "Cardiomegaly": 0, "Lung nodule": 1})
    order = ("Lung nodule", "Cardiomegaly", "Pleural effusion", "Emphysema")
    findings, impression = text_pairs(record, ["findings", "impression"], tasks, guide_labels=order)
    plain = prompts.section_prompt(tasks, "findings", "ct")
    assert findings.question == plain + "\nAbnormalities: Lung nodule, Pleural effusion."
    assert impression.question.endswith("\nAbnormalities: Lung nodule, Pleural effusion.")
    normal = ManifestRecord(id="n", modality="ct", images=["x.nii.gz"], split="train", findings="F.",
                            labels={"Lung nodule": 0})
    assert (text_pairs(normal, ["findings"], tasks, guide_labels=order)[0].question
            == plain + "\nAbnormalities: none.")
    assert text_pairs(record, ["findings"], tasks)[0].question == plain  # unguided: the plain request
    with pytest.raises(ValueError, match="report_guidance must be none or diagnosis"):
        prompt_spec.report_guidance({"report_guidance": "labels"})
