"""A trained grounding head: where in the volume a sentence's finding is, as a mask on the model's input grid.

The sentence is read by the language model (the mean of its last hidden states over the sentence's tokens,
teacher-forced after the prompt), the volume by the vision tower: its patch features, brought back to full
resolution, plus its conv stem's full-resolution channels (the pixels themselves when the tower has no stem).
A 1x1x1 convolution mixes the two; the mask logit of each voxel is the dot product of its feature with the
sentence's query (as referring segmentation heads condition a mask on a text embedding, e.g. LISA's [SEG]
query). Config: ``grounding_head: {"channels": 32}`` (``RadReportConfig.grounding_head``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroundingHead(nn.Module):
    """(patch features, stem features, sentence queries) -> one mask logit map per query."""

    def __init__(self, spec: dict, vision_dim: int, grid: tuple[int, int, int], stem_dim: int, text_dim: int):
        super().__init__()
        channels = int(spec.get("channels", 32))
        self.grid, self.channels = tuple(int(n) for n in grid), channels
        self.patch_proj = nn.Linear(vision_dim, channels)
        self.stem_proj = nn.Conv3d(stem_dim, channels, kernel_size=1)
        # a 1x1x1 mix: the stem's two 3x3x3 layers and the patches already see the neighbourhood; a 3x3x3 mix
        # at full resolution cost 27x the arithmetic and made a training step 2-5 s on this CPU
        self.mix = nn.Conv3d(channels, channels, kernel_size=1)
        self.query = nn.Linear(text_dim, channels)
        self.bias = nn.Parameter(torch.full((), -7.0))  # about 1 voxel in 1,000 of a volume is the finding

    def volume_features(self, patches: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        """(B, channels, D, H, W) from (B, N, vision_dim) patch features and (B, stem_dim, D, H, W)."""
        b = patches.shape[0]
        coarse = self.patch_proj(patches).transpose(1, 2).reshape(b, self.channels, *self.grid)
        fine = F.interpolate(coarse, size=stem.shape[-3:], mode="trilinear", align_corners=False)
        return F.gelu(self.mix(F.gelu(fine + self.stem_proj(stem))))

    def forward(self, patches: torch.Tensor, stem: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(B, Q, D, H, W) mask logits for (B, Q, text_dim) sentence states."""
        features = self.volume_features(patches, stem)
        keys = self.query(queries)
        return torch.einsum("bcdhw,bqc->bqdhw", features, keys) / self.channels ** 0.5 + self.bias


def sentence_states(hidden: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """(Q, hidden) the mean last hidden state over each group of token positions (an empty group: zeros)."""
    rows = [hidden[group].mean(dim=0) if group else hidden.new_zeros(hidden.shape[-1]) for group in groups]
    return torch.stack(rows) if rows else hidden.new_zeros((0, hidden.shape[-1]))


def stem_dim(vision_config) -> int:
    """Channels of what the head reads at full resolution: the conv stem's output stacked on the pixels."""
    stem = list(getattr(vision_config, "conv_stem_channels", None) or [])
    return int(vision_config.in_channels) + (stem[-1] if stem else 0)


def full_resolution(tower, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision tower's full-resolution channels: its conv stem's output on the pixels, or the pixels."""
    stem = getattr(getattr(tower, "patch_embedding", None), "stem", None)
    return stem(pixel_values) if stem is not None else pixel_values


@torch.no_grad()
def head_inputs(model, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                groups: list[list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the head reads, from the (frozen) model: patch features, full-resolution channels, and the
    sentence states (B, Q, hidden) of each item's ``groups`` of token positions, padded with zeros."""
    tower = model.vision_tower
    dtype = next(tower.parameters()).dtype
    patches = tower(pixel_values.to(dtype))
    features = model.perceiver(patches.to(next(model.perceiver.parameters()).dtype))
    out = model(input_ids=input_ids, attention_mask=attention_mask, image_features=features,
                output_hidden_states=True, use_cache=False)
    hidden = out.hidden_states[-1].float()
    states = [sentence_states(hidden[i], item) for i, item in enumerate(groups)]
    width = max((len(s) for s in states), default=0)
    queries = hidden.new_zeros((len(states), width, hidden.shape[-1]))
    for i, s in enumerate(states):
        queries[i, :len(s)] = s
    return patches.float(), full_resolution(tower, pixel_values.to(dtype)).float(), queries
