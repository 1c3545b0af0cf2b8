"""What a training step minimises, as modules so that accelerate / DDP see a single forward per step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_radreport.training.data import IGNORE_INDEX


def answer_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of each text's answer, averaged over its tokens: (texts with an answer,).

    A step's loss is the mean of these over answers, so each answer weighs the same whatever its length, and
    with equal answers per process the mean over a global batch equals the mean of the processes' means:
    data-parallel runs follow the one-process loss curve.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    token_losses = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                   reduction="none")
    mask = labels != IGNORE_INDEX
    per_answer = (token_losses * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_answer[mask.any(1)]


def length_groups(lengths: list[int], max_groups: int = 3) -> list[list[int]]:
    """Split texts (by index) into at most ``max_groups`` groups of similar length,
    fewest padded tokens first.

    Short answers (questions) and long ones (reports) share a batch; run together, every text is padded to the
    longest. The split points are chosen exactly (dynamic programming over the sorted lengths).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    n = len(sizes)
    # cost[g][j]: fewest tokens to cover the first j sorted texts with g groups (each padded to its longest)
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
    cost[0][0] = 0
    for g in range(1, max_groups + 1):
        for j in range(1, n + 1):
            for i in range(g - 1, j):
                c = cost[g - 1][i] + (j - i) * sizes[j - 1]
                if c < cost[g][j]:
                    cost[g][j], cut[g][j] = c, i
    best = min(range(1, max_groups + 1), key=lambda g: (cost[g][n], g))
    groups, j = [], n
    for g in range(best, 0, -1):
        i = cut[g][j]
        groups.append(order[i:j])
        j = i
    return [group for group in reversed(groups) if group]


class ReportObjective(nn.Module):
    """Encode each image once, give every text the features of its image(s), and score the answers.

    Texts run through the language model in groups of similar length (``length_groups``), each trimmed to its
    own longest text: the padding is on the right, so the trimmed positions never reach a kept one.
    """

    def __init__(self, model: nn.Module, *, max_groups: int = 3):
        super().__init__()
        self.model, self.max_groups = model, max_groups

    def forward(self, pixel_values, input_ids, attention_mask, labels, image_rows) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values)[image_rows]
        lengths = attention_mask.sum(1).tolist()
        losses = []
        for group in length_groups(lengths, self.max_groups):
            rows, width = torch.tensor(group, device=input_ids.device), max(lengths[i] for i in group)
            out = self.model(input_ids=input_ids[rows, :width], attention_mask=attention_mask[rows, :width],
                             image_features=features[rows])
            losses.append(answer_losses(out.logits, labels[rows, :width]))
        return torch.cat(losses).mean()


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
