"""Grounding on the engine's thread: a report's, an answer's or a diagnosis label's sentences located and
put in patient space (``grounding/locate.py``).

Methods, each the default for a model that has what it needs: ``m3d-segmentation``, M3D-LaMed's own SegVol
head asked to segment each sentence's finding; ``head``, the model's trained grounding head
(``modeling/grounding_head.py``); both give a probability per voxel, the mask is where it reaches
``HEAD_THRESHOLD``. ``m3d-box``: a model that writes M3D-LaMed's boxes is asked where each finding is and
its box is the mask. Else ``gradient_x_input`` (or ``saliency``), attribution through the whole model
(``attribution.py``), for any model of this project's processor, on a volume or on a set of radiographs
(where a location is in the pixels of the radiograph it falls on: ``grounding/radiographs.py``). A box the
model writes in a chat answer locates its sentence whatever the method (``ground_answer``).

Runs after generation, never during it; each heatmap set is cached per (study, method, question, answer), so
clicking through a draft or exporting it twice costs one pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np

from napari_radreport.engine.attribution import (
    METHODS,
    attribute,
    attribute_image_tokens,
    sentence_token_groups,
)
from napari_radreport.engine.events import EventCallback, ignore
from napari_radreport.engine.stages import Stage
from napari_radreport.grounding.locate import (
    interior_peak,
    location_from_heatmap,
    location_from_model_box,
    location_from_model_mask,
    model_box_mask,
)
from napari_radreport.grounding.location import GroundedSentence
from napari_radreport.grounding.radiographs import location_from_radiograph_heatmap
from napari_radreport.grounding.sentences import report_sentences
from napari_radreport.grounding.support import grounding_refusal
from napari_radreport.modeling.processor import model_grid, radiograph_black, radiograph_grids

REPORT_SECTIONS = ("findings", "impression")
CACHED = 8  # heatmap sets kept (each a few model grids of float32)
NO_IMAGE_DEPENDENCE = "the sentence's probability does not depend on the image here"
HEAD = "head"
SEGMENT = "m3d-segmentation"  # M3D-LaMed's SegVol asked to segment a finding (modeling/m3d_segmentation.py)
BOX = "m3d-box"  # a model that writes M3D-LaMed's boxes asked where the finding is (modeling/m3d_boxes.py)
HEAD_THRESHOLD = 0.5  # a probability map (the head's, SegVol's sigmoid) is the mask from here
NOTHING_ABOVE = f"no voxel reaches probability {HEAD_THRESHOLD}"
NO_BOX = "the model wrote no box"
BOX_ANSWER_TOKENS = 48  # a box answer: a few words and six numbers


class GroundingError(ValueError):
    """This model or study cannot be grounded; the message says why in one line."""


def check_groundable(runner, study) -> None:
    """A GroundingError unless the model reads this study's pixels through our processor (volumes)."""
    refusal = grounding_refusal(runner.family.name, runner.family.modality, study)
    if refusal:
        raise GroundingError(refusal)


def writes_boxes(runner) -> bool:
    """Whether the runner's model reads and writes M3D-LaMed's boxes (its tokenizer has their markers)."""
    from napari_radreport.modeling.m3d_boxes import reads_boxes

    return reads_boxes(runner.family.tokenizer)


def default_method(runner) -> str:
    """The model's own segmentation head, else its grounding head, else its boxes, else attribution
    (gradient x input)."""
    if getattr(runner.model, "segmentation", None) is not None:
        return SEGMENT
    if getattr(runner.model, "grounding_head", None) is not None:
        return HEAD
    return BOX if writes_boxes(runner) else "gradient_x_input"


class Grounder:
    """The heatmaps a runner's model gives, cached; one per engine."""

    def __init__(self, runner, method: str | None = None):
        has_head = getattr(runner.model, "grounding_head", None) is not None
        method = method or default_method(runner)
        if method == HEAD and not has_head:
            raise GroundingError("this model has no grounding head; use gradient_x_input or saliency")
        if method == SEGMENT and getattr(runner.model, "segmentation", None) is None:
            raise GroundingError("this model has no segmentation head (M3D-LaMed's SegVol); use "
                                 "gradient_x_input or saliency")
        if method == BOX and not writes_boxes(runner):
            raise GroundingError("this model does not write boxes (M3D-LaMed's <bx_start>...<bx_end>); use "
                                 "gradient_x_input or saliency")
        if method not in (HEAD, SEGMENT, BOX, *METHODS):
            raise GroundingError(f"unknown grounding method {method!r}; use one of "
                                 f"{', '.join((HEAD, SEGMENT, BOX, *METHODS))}")
        self.runner, self.method = runner, method
        # a model of another processor whose image tokens' place is known: attribution stops at those tokens
        self.on_tokens = hasattr(runner.family, "token_grid")
        self._cache: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()

    @property
    def method_name(self) -> str:
        """The method as the locations name it: "grounding-head" or "attribution:<kind>"."""
        if self.method in (HEAD, SEGMENT, BOX):
            return "grounding-head" if self.method == HEAD else self.method
        return f"attribution:{self.method}" + (":image-tokens" if self.on_tokens else "")

    def heatmaps(self, study, question: str, answer: str, spans: list[tuple[int, int]],
                 history=()) -> list[np.ndarray]:
        """One raw heatmap (model grid) per character span of ``answer``, the answer following the prompt
        of ``question`` about ``study``."""
        key = (study.key, self.method, question, tuple(map(tuple, history)), answer, tuple(spans))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        runner = self.runner
        prompt, extra = runner.prompt(study, question, history)
        encoded = runner.family.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(prompt) + list(encoded["input_ids"])
        groups = sentence_token_groups([tuple(o) for o in encoded["offset_mapping"]], spans, len(prompt))
        if not study.is_volume and self.method not in METHODS:
            raise GroundingError(f"{self.method} locates findings in CT volumes; on radiographs use "
                                 f"{' or '.join(METHODS)}")
        if self.on_tokens:  # (images, tokens) -> (images, rows, columns) of tokens
            grid = self.grid(study)
            rows, columns = (grid[0] if isinstance(grid, list) else grid).model_shape[-2:]
            maps = [heat.reshape(len(heat), rows, columns)
                    for heat in attribute_image_tokens(runner, study, ids, extra, groups, self.method)]
            return self._keep(key, maps)
        pixels = runner.family.pixel_values(study)
        if self.method == SEGMENT:
            maps = self._segmentations(study, pixels, [answer[a:b] for a, b in spans])
        elif self.method == BOX:
            maps = self._asked_boxes(study, [answer[a:b] for a, b in spans])
        elif self.method == HEAD:
            maps = head_probabilities(runner.model, pixels, ids, groups)
        else:
            black = 0.0 if study.is_volume else radiograph_black()
            maps = attribute(runner.model, pixels, ids, groups, self.method, black)
        return self._keep(key, maps)

    def _keep(self, key: tuple, maps: list[np.ndarray]) -> list[np.ndarray]:
        self._cache[key] = maps
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        return maps

    def grid(self, study):
        """Where the model's input lies in ``study``: a volume's ``ModelGrid`` (a ``SliceStackGrid`` of image
        tokens for a family that has ``token_grid``), or a ``ViewGrid`` per radiograph."""
        if self.on_tokens:
            return self.runner.family.token_grid(study)
        return study_grid(study, self.runner.family.preprocess)

    def _head_findings(self) -> set[str] | None:
        """The findings the model's grounding head was trained on, when grounding with it and it says."""
        if self.method != HEAD:
            return None
        listed = (self.runner.model.config.grounding_head or {}).get("findings")
        return set(listed) if listed else None

    def _segmentations(self, study, pixels, sentences: list[str]) -> list[np.ndarray]:
        """SegVol's probability map for each sentence's finding, asked as the model's ``segment`` task."""
        import torch

        from napari_radreport.modeling.m3d_segmentation import segment

        runner, tasks = self.runner, self.runner.family.prompt_spec.tasks
        device = next(runner.model.parameters()).device
        maps = []
        for sentence in sentences:
            prompt, _ = runner.prompt(study, tasks["segment"].format(phrase=finding_phrase(sentence)))
            answer = runner.family.tokenizer(tasks["segment_answer"], add_special_tokens=False)["input_ids"]
            logits = segment(runner.model, list(prompt) + list(answer), pixels.to(device))
            maps.append(torch.sigmoid(logits[0, 0]).cpu().numpy())
        return maps

    def _asked_boxes(self, study, sentences: list[str]) -> list[np.ndarray]:
        """Each sentence's finding asked of the model as a box question (greedy); the first box of its answer
        as a 0/1 map on the model grid (all 0 when it wrote none)."""
        from napari_radreport.engine.decoding import GenerationSettings
        from napari_radreport.modeling.m3d_boxes import boxes_with_spans

        runner = self.runner
        grid = model_grid(study, runner.family.preprocess)
        settings = GenerationSettings(max_new_tokens=BOX_ANSWER_TOKENS)
        maps = []
        for sentence in sentences:
            question = runner.family.prompt_spec.tasks["locate_box"].format(phrase=finding_phrase(sentence))
            finished = runner.generate(study, question, settings)
            text = runner.family.tokenizer.decode(finished.token_ids, skip_special_tokens=False)
            boxes = boxes_with_spans(text, grid.model_shape)
            mask = model_box_mask(boxes[0][1].start, boxes[0][1].end, grid) if boxes else None
            maps.append(np.zeros(grid.model_shape, np.float32) if mask is None else mask.astype(np.float32))
        return maps

    def locate(self, study, sentences: list[GroundedSentence], question: str, text: str, history=(),
               on_event: EventCallback = ignore) -> None:
        """Set the location of each of ``sentences`` that states a finding (spans in ``text``); the answer
        the model is scored on runs from the first of ``sentences`` to the last."""
        targets = [s for s in sentences if s.finding and s.location is None]
        if not targets:
            return
        start, end = sentences[0].start, sentences[-1].end
        stage = Stage(on_event, "ground", "Locating the findings in the image", total=len(targets),
                      unit="sentences")
        maps = self.heatmaps(study, question, text[start:end],
                             [(s.start - start, s.end - start) for s in targets], history)
        grid = self.grid(study)
        smoothing = {"smoothing": 0.0} if self.on_tokens else {}  # a token is already a cell's mean
        trained = self._head_findings()
        for n, (sentence, heat) in enumerate(zip(targets, maps), 1):
            if trained is not None and sentence.finding not in trained:
                sentence.why_none = f"the grounding head was not trained to find {sentence.finding}"
            elif self.method == BOX:
                sentence.location = location_from_model_mask(heat >= HEAD_THRESHOLD, grid, BOX)
                sentence.why_none = "" if sentence.location else NO_BOX
            elif self.method in (HEAD, SEGMENT):
                inside = (heat >= HEAD_THRESHOLD) & grid.field_of_view()
                sentence.location = location_from_model_mask(inside, grid, self.method_name, heatmap=heat,
                                                              peak=interior_peak(heat, inside))
                sentence.why_none = "" if sentence.location else NOTHING_ABOVE
            elif not study.is_volume:
                sentence.location = location_from_radiograph_heatmap(heat, grid, self.method_name,
                                                                     **smoothing)
                sentence.why_none = "" if sentence.location else NO_IMAGE_DEPENDENCE
            else:
                sentence.location = location_from_heatmap(heat, grid, self.method_name, **smoothing)
                sentence.why_none = "" if sentence.location else NO_IMAGE_DEPENDENCE
            stage.advance(n)
        stage.finish()


def study_grid(study, spec):
    """A volume's ``ModelGrid``, or a radiograph set's ``ViewGrid`` per radiograph."""
    return model_grid(study, spec) if study.is_volume else radiograph_grids(study, spec)


def finding_phrase(sentence: str) -> str:
    """What a segmentation prompt names for a sentence: its first stated finding with the side and lobe the
    sentence gives ("right upper lobe nodule"), else the sentence itself."""
    from napari_radreport.consistency import read_statements

    stated = [s for s in read_statements(sentence) if s.stance != "absent"]
    if not stated:
        return sentence.strip().rstrip(".")
    first = stated[0]
    where = " ".join(w for w in (first.side, f"{first.lobe} lobe" if first.lobe else None) if w)
    return f"{where} {first.finding}".strip()


def head_probabilities(model, pixels, ids: list[int], groups: list[list[int]]) -> list[np.ndarray]:
    """The grounding head's probability maps (model grid), one per group of answer token positions."""
    import torch

    from napari_radreport.modeling.grounding_head import head_inputs

    device = next(model.parameters()).device
    input_ids = torch.as_tensor(ids, device=device).reshape(1, -1)
    with torch.inference_mode():
        patches, stem, queries = head_inputs(model, pixels.to(device), input_ids, torch.ones_like(input_ids),
                                             [groups])
        dtype = next(model.grounding_head.parameters()).dtype
        logits = model.grounding_head(patches.to(dtype), stem.to(dtype), queries.to(dtype))[0]
    return list(torch.sigmoid(logits.float()).cpu().numpy())


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
    if study.is_volume and writes_boxes(grounder.runner):
        locate_written_boxes(sentences, answer, model_grid(study, grounder.runner.family.preprocess))
    if sentences:
        grounder.locate(study, sentences, question, answer, history, on_event)
    return sentences


def locate_written_boxes(sentences: list[GroundedSentence], text: str, grid) -> None:
    """Give each sentence that holds a box the model wrote (M3D-LaMed's six numbers) that box as its
    location; a sentence naming no finding is about "region"."""
    from napari_radreport.modeling.m3d_boxes import boxes_with_spans

    for (start, _end), box in boxes_with_spans(text, grid.model_shape):
        for sentence in sentences:
            if sentence.location is None and sentence.start <= start < sentence.end:
                sentence.location = location_from_model_box(box.start, box.end, grid, BOX)
                sentence.finding = sentence.finding or "region"
                sentence.why_none = "" if sentence.location else "its box lies outside the image"


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
