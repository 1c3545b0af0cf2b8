"""A trained grounding head: where in the volume a sentence's finding is, as a mask on the model's input grid.

The sentence is read by the language model (the mean of its last hidden states over the sentence's tokens,
teacher-forced after the prompt), the volume by the vision tower: its patch features plus its conv stem's
full-resolution channels (the pixels themselves when the tower has no stem), made into one feature per voxel
(the kinds below); the mask logit of each voxel is the dot product of its feature with the sentence's query
(as referring segmentation heads condition a mask on a text embedding, e.g. LISA's [SEG] query). Config:
``grounding_head: {"channels": 32, "kind": ...}`` (``RadReportConfig.grounding_head``).

Two kinds read the volume: ``"mix"`` (the default of a config without ``kind``) mixes the two at each voxel
with a 1x1x1 convolution, so a voxel sees only the stem's few neighbours and its coarse patch; ``"unet"``
runs a small encoder-decoder over them and the voxel coordinates (two stride-2 levels, the patch features
joined at the coarsest, skips back to full resolution), so a voxel's feature knows the shape around it and
where it is in the volume: a round nodule from a lobe-filling consolidation, the left side from the right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(inputs: int, outputs: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv3d, GroupNorm (8 groups or fewer), GELU."""
    return nn.Sequential(nn.Conv3d(inputs, outputs, kernel, stride=stride, padding=kernel // 2),
                         nn.GroupNorm(min(8, outputs), outputs), nn.GELU())


def _coordinates(like: torch.Tensor) -> torch.Tensor:
    """(B, 3, D, H, W) each voxel's position along the three axes, from -1 to 1."""
    b, _, *size = like.shape
    axes = [torch.linspace(-1.0, 1.0, n, device=like.device, dtype=like.dtype) for n in size]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return grid.unsqueeze(0).expand(b, -1, -1, -1, -1)


class _MixVolume(nn.Module):
    """Kind "mix": the patches brought to full resolution plus the stem, mixed voxel by voxel."""

    def __init__(self, channels: int, vision_dim: int, stem_dim: int):
        super().__init__()
        self.channels = channels
        self.patch_proj = nn.Linear(vision_dim, channels)
        self.stem_proj = nn.Conv3d(stem_dim, channels, kernel_size=1)
        # a 1x1x1 mix: the stem's two 3x3x3 layers and the patches already see the neighbourhood; a 3x3x3 mix
        # at full resolution cost 27x the arithmetic and made a training step 2-5 s on this CPU
        self.mix = nn.Conv3d(channels, channels, kernel_size=1)

    def forward(self, patches: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        coarse = self.patch_proj(patches.movedim(1, -1)).movedim(-1, 1)
        fine = F.interpolate(coarse, size=stem.shape[-3:], mode="trilinear", align_corners=False)
        return F.gelu(self.mix(F.gelu(fine + self.stem_proj(stem))))


class _UNetVolume(nn.Module):
    """Kind "unet": full resolution (stem + coordinates) -> 1/2 -> 1/4 (+ patches) -> 1/2 -> full, with skips.
    The 3x3x3 layers run at 1/2 and 1/4 resolution only (about 2.6 GFLOP a volume at 32 x 64 x 64, 32
    channels); full resolution has 1x1x1 layers."""

    def __init__(self, channels: int, vision_dim: int, stem_dim: int):
        super().__init__()
        c = channels
        self.to_full = _block(stem_dim + 3, c // 2, kernel=1)
        self.to_half = nn.Sequential(_block(c // 2, c, stride=2), _block(c, c))
        self.to_quarter = _block(c, 2 * c, stride=2)
        self.patch_proj = nn.Linear(vision_dim, 2 * c)
        self.bottom = _block(2 * c, 2 * c)
        self.up_half = _block(3 * c, c)
        self.up_full = _block(c + c // 2, c, kernel=1)

    def forward(self, patches: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        full = self.to_full(torch.cat([stem, _coordinates(stem)], dim=1))
        half = self.to_half(full)
        quarter = self.to_quarter(half)
        coarse = self.patch_proj(patches.movedim(1, -1)).movedim(-1, 1)
        quarter = self.bottom(quarter + F.interpolate(coarse, size=quarter.shape[-3:], mode="trilinear",
                                                      align_corners=False))
        up = F.interpolate(quarter, size=half.shape[-3:], mode="trilinear", align_corners=False)
        half = self.up_half(torch.cat([half, up], dim=1))
        up = F.interpolate(half, size=full.shape[-3:], mode="trilinear", align_corners=False)
        return self.up_full(torch.cat([full, up], dim=1))


KINDS = {"mix": _MixVolume, "unet": _UNetVolume}  # configuration.GROUNDING_HEAD_KINDS names them


class GroundingHead(nn.Module):
    """(patch features, stem features, sentence queries) -> one mask logit map per query."""

    def __init__(self, spec: dict, vision_dim: int, grid: tuple[int, int, int], stem_dim: int, text_dim: int):
        super().__init__()
        channels, kind = int(spec.get("channels", 32)), spec.get("kind", "mix")
        if kind not in KINDS:
            raise ValueError(f"grounding_head kind {kind!r}: expected one of {sorted(KINDS)}")
        self.grid, self.channels, self.kind = tuple(int(n) for n in grid), channels, kind
        self.volume = KINDS[kind](channels, vision_dim, stem_dim)
        self.query = nn.Linear(text_dim, channels)
        self.bias = nn.Parameter(torch.full((), -7.0))  # about 1 voxel in 1,000 of a volume is the finding

    def volume_features(self, patches: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        """(B, channels, D, H, W) from (B, N, vision_dim) patch features and (B, stem_dim, D, H, W)."""
        grid = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[-1], *self.grid)
        return self.volume(grid, stem)

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
