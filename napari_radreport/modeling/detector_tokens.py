"""One extra image token per conv stem detector: where in the volume its strongest patch is, and how strong.

The encoder appends each detector's highest probability within every patch to the patch's features
(``ViT3DEncoder``, ``vision_config.conv_stem_detectors``). Pooled and projected with everything else, a
finding a few voxels wide stays one small feature among many, and a report model trained from scratch did not
learn to read it (docs/training.md, "Nodules"). Here the strongest patch of each detector becomes a token of
its own: its probability and its normalised (D, H, W) grid position through a small MLP, so presence and place
(side, lobe) reach the language model directly.
"""

from __future__ import annotations

import torch
from torch import nn


class DetectorTokens(nn.Module):
    """``pool`` (any perceiver) on all features, then one token per detector from the
    last ``detectors`` ones."""

    def __init__(self, pool: nn.Module, detectors: int, grid: tuple[int, int, int], out_dim: int):
        super().__init__()
        self.pool, self.detectors, self.grid = pool, detectors, tuple(grid)
        self.num_tokens = pool.num_tokens + detectors
        self.summary = nn.Sequential(nn.Linear(4, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.kind = nn.Parameter(torch.zeros(detectors, out_dim))  # which detector a token speaks for

    def peaks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, detectors, 4): each detector's highest patch probability and that
        patch's centre in [0, 1]^3."""
        probabilities = x[..., -self.detectors:].transpose(1, 2)  # (B, detectors, N)
        best, index = probabilities.max(dim=-1)
        d, h, w = self.grid
        position = torch.stack([index // (h * w), (index // w) % h, index % w], dim=-1).to(x.dtype)
        centre = (position + 0.5) / torch.tensor([d, h, w], dtype=x.dtype, device=x.device)
        return torch.cat([best[..., None], centre], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.summary(self.peaks(x)) + self.kind
        return torch.cat([self.pool(x), tokens.to(x.dtype)], dim=1)
