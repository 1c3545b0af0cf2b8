"""Training the grounding head (``--stage grounding``): where each finding sentence of a report is.

The model (``--init``) stays frozen; a ``GroundingHead`` (modeling/grounding_head.py) is added when it has
none and is the only part trained. An example is one (question, answer) pair of a record whose answer states
a finding the record's masks draw (Findings, Impression, free-text answers, and the "Yes" of a diagnosis
question): the answer's sentence states (the language model reading the record's own text after the question,
as the engine's report asked it) against each sentence's truth mask on the model's input grid. The truth of a
sentence is its finding's regions (``data/truth.py``: the manifest's ``masks``), the
side's own region where a sentence names one side of a paired finding ("right pleural effusion"). Loss: binary
cross-entropy plus soft Dice over each sentence's mask, the mean over the batch's sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_radreport.data.manifest import ManifestError, ManifestRecord

TASKS = ("findings", "impression", "qa", "diagnosis")


@dataclass
class Example:
    question: str
    answer: str
    spans: list[tuple[int, int]]  # the answer's sentences that have a truth mask
    regions: list[tuple[str, str | None]]  # each one's (finding, side)


def _statement_sides(answer: str) -> dict[int, tuple[str, str | None]]:
    from napari_radreport.consistency import read_statements

    found: dict[int, tuple[str, str | None]] = {}
    for s in read_statements(answer):
        if s.stance == "present":
            found.setdefault(s.start, (s.finding, s.side))
    return found


def record_examples(record: ManifestRecord, questions: dict[str, str], mode: str,
                    guide: tuple[str, ...] | None, drawn: set[str]) -> list[Example]:
    """The record's (question, answer) pairs whose answer states a finding of ``drawn`` (those with masks)."""
    from napari_radreport.consistency import finding_of_label, sentence_spans
    from napari_radreport.engine.prompts import diagnosis_prompt
    from napari_radreport.training.examples import text_pairs

    asks = {diagnosis_prompt(questions, label): label for label in record.labels}
    examples = []
    for pair in text_pairs(record, TASKS, questions, mode, guide):
        if pair.task == "diagnosis":
            finding = finding_of_label(asks[pair.question]) if pair.answer == "Yes" else None
            if finding in drawn:
                examples.append(Example(pair.question, pair.answer, [(0, len(pair.answer))],
                                        [(finding, None)]))
            continue
        stated = _statement_sides(pair.answer)
        kept = [((start, end), stated[start]) for _, start, end in sentence_spans(pair.answer)
                if start in stated and stated[start][0] in drawn]
        if kept:
            examples.append(Example(pair.question, pair.answer, [s for s, _ in kept], [r for _, r in kept]))
    return examples


def _truth_mask(truth, finding: str, side: str | None) -> np.ndarray | None:
    regions = [r for r in truth.regions if r.finding == finding and r.mask is not None]
    if side in ("right", "left"):
        regions = [r for r in regions if f"({side})" in r.name] or regions
    if not regions:
        return None
    return np.logical_or.reduce([r.mask for r in regions])


class GroundingExamples(torch.utils.data.Dataset):
    """``dataset[i]`` -> one example of record ``i`` (picked by a generator seeded with (seed, epoch, i)):
    its pixels, prompt + answer ids, the answer's sentence token groups and their masks on the model grid."""

    def __init__(self, records: list[ManifestRecord], loaded, seed: int = 0):
        from napari_radreport.consistency import finding_of_label

        spec = loaded.family.prompt_spec
        guide = spec.labels if spec.report_guidance == "diagnosis" else None
        self.loaded, self.seed, self.epoch = loaded, seed, 0
        self.records, self.examples = [], []
        for record in records:
            drawn = {finding_of_label(n) for n in (record.masks or {}).get("labels", {})} - {None}
            found = record_examples(record, dict(spec.tasks), spec.choice_answer, guide, drawn)
            if found:
                self.records.append(record)
                self.examples.append(found)
        if not self.records:
            raise ManifestError("--stage grounding: no record has masks ('masks') for a finding its texts "
                                "state")
        self._cache: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.records)

    def findings(self) -> list[str]:
        """The findings these examples teach (``consistency.FINDINGS`` keys), sorted."""
        return sorted({finding for examples in self.examples for e in examples for finding, _ in e.regions})

    def _study_parts(self, index: int) -> tuple:
        """(pixels, {(finding, side): target on the model grid}) of record ``index``, read and resampled once;
        the study and its masks on the study's grid are not kept."""
        if index not in self._cache:
            from napari_radreport.data.studies import read_record_study
            from napari_radreport.data.truth import truth_from_record
            from napari_radreport.modeling.processor import model_grid

            study = read_record_study(self.records[index])
            grid = model_grid(study, self.loaded.family.preprocess)
            truth = truth_from_record(self.records[index], study)
            regions = {region for example in self.examples[index] for region in example.regions}
            targets = {(finding, side): grid.to_model(_truth_mask(truth, finding, side).astype(np.float32))
                       for finding, side in regions}
            self._cache[index] = (self.loaded.pixel_values(study), targets)
        return self._cache[index]

    def _prompt(self, question: str) -> list[int]:
        """The prompt's ids as the engine builds them for one CT volume."""
        from napari_radreport.modeling.processor import prompt_ids

        family = self.loaded.family
        return prompt_ids(family.tokenizer, question, image_token=family.image_token,
                          num_image_tokens=family.num_image_tokens, n_images=1,
                          chat_template=family.prompt_spec.chat_template)[0].tolist()

    def __getitem__(self, index: int) -> dict:
        from napari_radreport.engine.attribution import sentence_token_groups

        rng = np.random.default_rng([self.seed, self.epoch, index])
        example = self.examples[index][int(rng.integers(len(self.examples[index])))]
        pixels, targets = self._study_parts(index)
        prompt = self._prompt(example.question)
        encoded = self.loaded.family.tokenizer(example.answer, add_special_tokens=False,
                                               return_offsets_mapping=True)
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        groups = sentence_token_groups(offsets, example.spans, len(prompt))
        masks = np.stack([targets[region] for region in example.regions])
        return {"pixel_values": pixels, "input_ids": torch.tensor(list(prompt) + encoded["input_ids"]),
                "groups": groups, "targets": torch.from_numpy(masks).float()}


def collate_grounding(items: list[dict], pad_id: int = 0) -> dict:
    width = max(len(i["input_ids"]) for i in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):  # right padding: the groups' positions stay as they are
        ids[row, :len(item["input_ids"])] = item["input_ids"]
        mask[row, :len(item["input_ids"])] = 1
    return {"pixel_values": torch.cat([i["pixel_values"] for i in items]), "input_ids": ids,
            "attention_mask": mask, "groups": [i["groups"] for i in items],
            "targets": [i["targets"] for i in items]}


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits) against a [0, 1] target, per leading row."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)


class GroundingObjective(nn.Module):
    """Binary cross-entropy plus soft Dice of the head's masks, the model frozen around it (and kept in eval
    mode, so that the perceiver's batch statistics and any dropout stay as the model was trained)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        model.requires_grad_(False)
        model.grounding_head.requires_grad_(True)

    def train(self, mode: bool = True) -> GroundingObjective:
        super().train(mode)
        self.model.eval()
        self.model.grounding_head.train(mode)
        return self

    def forward(self, pixel_values, input_ids, attention_mask, groups, targets) -> torch.Tensor:
        from napari_radreport.modeling.grounding_head import head_inputs

        patches, stem, queries = head_inputs(self.model, pixel_values, input_ids, attention_mask, groups)
        logits = self.model.grounding_head(patches, stem, queries)
        losses = []
        for row, target in enumerate(targets):
            predicted = logits[row, :len(target)]
            target = target.to(predicted.device)
            bce = F.binary_cross_entropy_with_logits(predicted, target, reduction="none").flatten(1).mean(1)
            losses.append(bce + soft_dice_loss(predicted, target))
        return torch.cat(losses).mean()
