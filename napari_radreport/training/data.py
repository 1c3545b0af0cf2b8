"""The training dataset: one item per study, its image and a few of its (question, answer) pairs as token ids.

The image is read and preprocessed exactly as at inference (``LoadedModel.pixel_values``) and kept in memory
after the first read. Which pairs an item holds is drawn from a generator seeded by (seed, epoch, index), and
the order of items by (seed, epoch): a run resumed from step k sees the same data as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from napari_radreport.data.manifest import ManifestError, ManifestRecord
from napari_radreport.data.studies import read_record_study
from napari_radreport.training.examples import TextPair, text_pairs

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


class StudyImages(torch.utils.data.Dataset):
    """``images[i]`` -> the (N, C, ...) pixel tensor of record ``i``, read once then kept in memory."""

    def __init__(self, records: list[ManifestRecord], to_pixels):
        self.records, self.to_pixels = records, to_pixels
        self._pixels: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index not in self._pixels:
            self._pixels[index] = self.to_pixels(read_record_study(self.records[index]))
        return self._pixels[index]


class StudyTextDataset(torch.utils.data.Dataset):
    """``dataset[i]`` -> {"pixel_values": (N, C, ...), "texts": [Encoded, ...]} for study ``i``."""

    def __init__(self, records: list[ManifestRecord], loaded, tasks, *, texts_per_image: int = 4,
                 seed: int = 0, max_length: int = 1024):
        self.records, self.loaded, self.seed = records, loaded, seed
        self.texts_per_image, self.max_length, self.epoch = texts_per_image, max_length, 0
        spec = loaded.family.prompt_spec  # the model's prompt section, parsed when it loaded
        questions, mode = dict(spec.tasks), spec.choice_answer
        guide = spec.labels if spec.report_guidance == "diagnosis" else None
        self.pairs = [text_pairs(r, tasks, questions, mode, guide) for r in records]
        if not any(self.pairs):
            raise ManifestError(f"no record has text for the task(s) {', '.join(tasks)}")
        self.images = StudyImages(records, loaded.pixel_values)

    def __len__(self) -> int:
        return len(self.records)

    def encode(self, record: ManifestRecord, pair: TextPair) -> Encoded:
        """Prompt ids (as the engine builds them) then the answer and EOS; the loss sees only the answer."""
        tokenizer = self.loaded.tokenizer
        prompt = self.loaded.prompt_ids(_StudyShape(record), pair.question)[0].tolist()
        answer = tokenizer(pair.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + answer)[: self.max_length]
        labels = ([IGNORE_INDEX] * len(prompt) + answer)[: self.max_length]
        return Encoded(ids, labels)

    def choose_pairs(self, index: int) -> list[TextPair]:
        pairs = self.pairs[index]
        if not pairs:
            return []
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = min(self.texts_per_image, len(pairs))
        return [pairs[i] for i in sorted(rng.choice(len(pairs), size=k, replace=False))]

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        return {"pixel_values": self.images[index],
                "texts": [self.encode(record, pair) for pair in self.choose_pairs(index)]}


class _StudyShape:
    """What ``LoadedModel.n_images`` needs from a study, from the record alone (no image read)."""

    def __init__(self, record: ManifestRecord):
        self.kind = "volume" if record.modality == "ct" else "xray_set"
        self.is_volume = record.modality == "ct"
        self.images = record.images


def collate(items: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Join images; pad texts to one length; ``image_rows`` lists, text by text, the images each one shows."""
    pixels = torch.cat([item["pixel_values"] for item in items])  # (total images, C, ...)
    offsets = np.cumsum([0] + [len(item["pixel_values"]) for item in items])
    texts = [(i, t) for i, item in enumerate(items) for t in item["texts"]]
    length = max(len(t.input_ids) for _, t in texts)
    input_ids = torch.full((len(texts), length), pad_id, dtype=torch.long)
    labels = torch.full((len(texts), length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(texts), length), dtype=torch.long)
    for row, (_, t) in enumerate(texts):
        n = len(t.input_ids)
        input_ids[row, :n], labels[row, :n], attention[row, :n] = (
            torch.tensor(t.input_ids), torch.tensor(t.labels), 1)
    rows = [r for i, _ in texts for r in range(offsets[i], offsets[i + 1])]
    return {"pixel_values": pixels, "input_ids": input_ids, "labels": labels, "attention_mask": attention,
            "image_rows": torch.tensor(rows, dtype=torch.long)}


class RankBatches:
    """This process's share of each global batch, over a per-epoch permutation, from a given position.

    The global batch is ``per_device * world`` items; process ``rank`` takes its contiguous slice, so the
    union over processes is the batch a single process would take with ``per_device * world``.
    """

    def __init__(self, n: int, per_device: int, rank: int, world: int, seed: int):
        self.n, self.per_device, self.rank, self.world, self.seed = n, per_device, rank, world, seed

    @property
    def global_batch(self) -> int:
        return self.per_device * self.world

    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch  # the last partial batch is dropped: every process steps together

    def iterate(self, epoch: int, start: int = 0) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        for b in range(start, self.batches_per_epoch()):
            first = b * self.global_batch + self.rank * self.per_device
            yield order[first:first + self.per_device].tolist()
