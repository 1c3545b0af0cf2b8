"""Grounding on the engine's thread: a report's, an answer's or a diagnosis label's sentences located by
attribution (``attribution.py``) and put in patient space (``locate.py``).

Runs after generation, never during it; each heatmap set is cached per (study, method, question, answer), so
clicking through a draft or exporting it twice costs one pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np

from napari_radreport.engine.events import EventCallback, ignore
from napari_radreport.engine.stages import Stage
from napari_radreport.grounding.attribution import METHODS, attribute, sentence_token_groups
from napari_radreport.grounding.geometry import ModelGrid
from napari_radreport.grounding.locate import location_from_heatmap
from napari_radreport.grounding.location import GroundedSentence
from napari_radreport.grounding.sentences import report_sentences

REPORT_SECTIONS = ("findings", "impression")
CACHED = 8  # heatmap sets kept (each a few model grids of float32)
NO_IMAGE_DEPENDENCE = "the sentence's probability does not depend on the image here"


class GroundingError(ValueError):
    """This model or study cannot be grounded; the message says why in one line."""


def check_groundable(runner, study) -> None:
    """A GroundingError unless the model reads this study's pixels through our processor (volumes)."""
    family = runner.family
    if family.name != "radreport":
        raise GroundingError(f"grounding needs a model whose pixels come from this project's processor; "
                             f"this one ({family.name}) prepares its images with its own processor")
    if family.modality != "ct" or not study.is_volume:
        raise GroundingError("grounding works on CT volumes for now; radiographs are not located yet")


class Grounder:
    """The heatmaps a runner's model gives, cached; one per engine."""

    def __init__(self, runner, method: str = "gradient_x_input"):
        if method not in METHODS:
            raise GroundingError(f"unknown grounding method {method!r}; use one of {', '.join(METHODS)}")
        self.runner, self.method = runner, method
        self._cache: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()

    def heatmaps(self, study, question: str, answer: str, spans: list[tuple[int, int]],
                 history=()) -> list[np.ndarray]:
        """One raw heatmap (model grid) per character span of ``answer``, the answer following the prompt
        of ``question`` about ``study``."""
        key = (study.key, self.method, question, tuple(map(tuple, history)), answer, tuple(spans))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        runner = self.runner
        prompt, _ = runner.prompt(study, question, history)
        encoded = runner.family.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(prompt) + list(encoded["input_ids"])
        groups = sentence_token_groups([tuple(o) for o in encoded["offset_mapping"]], spans, len(prompt))
        maps = attribute(runner.model, runner.family.pixel_values(study), ids, groups, self.method)
        self._cache[key] = maps
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        return maps

    def locate(self, study, sentences: list[GroundedSentence], question: str, text: str, history=(),
               on_event: EventCallback = ignore) -> None:
        """Set the location of each of ``sentences`` that states a finding (spans in ``text``); the answer
        the model is scored on runs from the first of ``sentences`` to the last."""
        targets = [s for s in sentences if s.finding]
        if not targets:
            return
        start, end = sentences[0].start, sentences[-1].end
        stage = Stage(on_event, "ground", "Locating the findings in the image", total=len(targets),
                      unit="sentences")
        maps = self.heatmaps(study, question, text[start:end],
                             [(s.start - start, s.end - start) for s in targets], history)
        grid = ModelGrid.of(study, self.runner.family.preprocess)
        for n, (sentence, heat) in enumerate(zip(targets, maps), 1):
            sentence.location = location_from_heatmap(heat, grid, f"attribution:{self.method}")
            sentence.why_none = "" if sentence.location else NO_IMAGE_DEPENDENCE
            stage.advance(n)
        stage.finish()


def ground_report(grounder: Grounder, study, text: str, questions: Mapping[str, str],
                  on_event: EventCallback = ignore,
                  use_adapter: Callable[[str], None] = lambda _section: None) -> list[GroundedSentence]:
    """Every sentence of a report's text; those of its Findings and Impression that state a finding are
    located, each section scored as the answer to its question (``questions``: section -> question) with
    the section's adapter (``use_adapter``, where the model has one per section)."""
    check_groundable(grounder.runner, study)
    sentences = report_sentences(text)
    for section in REPORT_SECTIONS:
        members = [s for s in sentences if s.section == section]
        if not members:
            continue
        question = questions.get(section)
        if question is None:
            for s in members:
                s.why_none = f"no question for the {section} section" if s.finding else ""
            continue
        use_adapter(section)
        grounder.locate(study, members, question, text, on_event=on_event)
    return sentences


def ground_answer(grounder: Grounder, study, question: str, answer: str, history=(),
                  on_event: EventCallback = ignore) -> list[GroundedSentence]:
    """Every sentence of a chat answer; those stating a finding located."""
    check_groundable(grounder.runner, study)
    sentences = report_sentences(answer, section="answer")
    if sentences:
        grounder.locate(study, sentences, question, answer, history, on_event)
    return sentences


def ground_label(grounder: Grounder, study, label: str, question: str,
                 on_event: EventCallback = ignore) -> GroundedSentence:
    """Where the model's answer "Yes" to a diagnosis ``question`` about ``label`` comes from."""
    from napari_radreport.consistency import finding_of_label

    check_groundable(grounder.runner, study)
    answer = "Yes"
    sentence = GroundedSentence("diagnosis", f"{label}: yes", 0, len(answer), finding_of_label(label))
    sentence.finding = sentence.finding or label
    grounder.locate(study, [sentence], question, answer, on_event=on_event)
    return sentence
