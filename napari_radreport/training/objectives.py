"""What a training step minimises, as modules so that accelerate / DDP see a single forward per step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_radreport.training.data import IGNORE_INDEX


def sequence_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy averaged over each answer, then over answers.

    Each answer weighs the same whatever its length, so the mean over a global batch equals the mean of the
    processes' means (equal answers per process): data-parallel runs follow the one-process loss curve.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    mask = labels != IGNORE_INDEX
    per_answer = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_answer[mask.any(1)].mean()


class ReportObjective(nn.Module):
    """Encode each image once, give every text the features of its image(s), and score the answers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, input_ids, attention_mask, labels, image_rows) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values)[image_rows]
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, image_features=features)
        return sequence_mean_loss(out.logits, labels)


class MAEObjective(nn.Module):
    """The masked-autoencoder loss of a batch of volumes (``pixel_values`` (B, C, D, H, W))."""

    def __init__(self, mae: nn.Module):
        super().__init__()
        self.model = mae

    def forward(self, pixel_values, **_ignored) -> torch.Tensor:
        return self.model(pixel_values)


def set_trainable(model: nn.Module, modules: list[str]) -> int:
    """Freeze everything but the named top-level modules; returns the number of trainable parameters."""
    for param in model.parameters():
        param.requires_grad_(False)
    for name in modules:
        for param in getattr(model, name).parameters():
            param.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
