"""Supervised pretraining of the vision side on the manifest's abnormality labels (``--stage labels``).

The recipe's vision tower and perceiver, with a linear head over the perceiver's tokens, learn the labels
(multi-label binary cross-entropy; a label a record does not give is left out of its loss), as CT-RATE's
classification baselines train a 3-D encoder on its 18 labels. A report run then starts from these weights
(``--encoder``): its language model meets image features that already separate the findings, instead of
learning to read the image and to write at once from random weights. The labels are the recipe's
``prompt.labels`` (the ones the model is asked about), else every label that the training records give.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_radreport.data.manifest import ManifestError, ManifestRecord

MISSING = -1.0  # a label the record does not give: no loss


def label_names(recipe, records: list[ManifestRecord]) -> list[str]:
    """The recipe's ``prompt.labels`` when it names them, else the labels of the records, sorted."""
    names = list((getattr(recipe, "prompt", None) or {}).get("labels") or [])
    if not names:
        names = sorted({name for r in records for name in r.labels})
    if not names or not any(name in r.labels for r in records for name in names):
        raise ManifestError("--stage labels: no training record has any of the labels "
                            f"{', '.join(names) if names else '(none named)'}")
    return names


def label_vector(record: ManifestRecord, names: list[str]) -> torch.Tensor:
    return torch.tensor([float(record.labels[n]) if n in record.labels else MISSING for n in names])


class StudyLabels(torch.utils.data.Dataset):
    """``dataset[i]`` -> {"pixel_values": (1, C, ...), "labels": (L,)}; pixels come from ``images``."""

    def __init__(self, records: list[ManifestRecord], images, names: list[str]):
        self.images, self.names, self.targets = images, names, [label_vector(r, names) for r in records]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "labels": self.targets[index]}


def collate_labels(items: list[dict]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.cat([i["pixel_values"] for i in items]),
            "labels": torch.stack([i["labels"] for i in items])}


class LabelClassifier(nn.Module):
    """Vision tower -> perceiver -> one linear head over all image tokens -> one logit per label."""

    def __init__(self, model_config, num_labels: int):
        super().__init__()
        from napari_radreport.modeling.perceivers import build_perceiver
        from napari_radreport.modeling.vit3d import ViT3DEncoder

        self.vision_tower = ViT3DEncoder(model_config.vision_config)
        self.perceiver = build_perceiver(model_config.perceiver_config, self.vision_tower.output_dim,
                                         self.vision_tower.grid, model_config.text_config.hidden_size,
                                         model_config.vision_config.conv_stem_detectors)
        self.head = nn.Linear(self.perceiver.num_tokens * model_config.text_config.hidden_size, num_labels)
        nn.init.trunc_normal_(self.vision_tower.patch_embedding.position_embeddings, std=0.02)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.perceiver(self.vision_tower(pixel_values)).flatten(1))


class LabelObjective(nn.Module):
    """The mean binary cross-entropy over the labels each record gives."""

    def __init__(self, classifier: LabelClassifier):
        super().__init__()
        self.model = classifier

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values).float()
        given = labels != MISSING
        loss = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).float(), reduction="none")
        return (loss * given).sum() / given.sum().clamp(min=1)
