"""The 3-D ViT encoder with M3D-CLIP's parameter layout (so M3D-LaMed weights load by name).

Equations (M3D-CLIP / MONAI ViT): patches ``b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)`` then a
Linear; a learned position embedding is added; the CLS token is concatenated in front *after* that (it gets
no position embedding); pre-norm blocks x += attn(norm1(x)); x += mlp(norm2(x)) with qkv laid out as
(qkv, heads, head_dim) and exact GELU; a final LayerNorm; the CLS token is dropped from the output.
Attention uses torch's scaled_dot_product_attention (flash / memory-efficient kernels where available).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_radreport.modeling.configuration import ViT3DConfig


class PatchRearrange(nn.Module):
    """``b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)`` without einops."""

    def __init__(self, patch_size: tuple[int, int, int]):
        super().__init__()
        self.patch_size = tuple(patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, s0, s1, s2 = x.shape
        p1, p2, p3 = self.patch_size
        h, w, d = s0 // p1, s1 // p2, s2 // p3
        x = x.reshape(b, c, h, p1, w, p2, d, p3).permute(0, 2, 4, 6, 3, 5, 7, 1)
        return x.reshape(b, h * w * d, p1 * p2 * p3 * c)


class ConvStem(nn.Module):
    """3x3x3 convolutions with GELU at full resolution, whose last channels are stacked on the pixels;
    optionally ``detectors``: 1x1 convolutions of those channels giving one logit map per finding.

    A linear patch embedding sees a patch as one vector, so a small bright blob anywhere in it looks like part
    of a bright edge; a few local nonlinear filters before the patches can tell the two apart ("early
    convolutions", Xiao et al. 2021, arXiv:2106.14881).
    """

    def __init__(self, in_channels: int, channels: list[int], detectors: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv3d(in_channels, out, kernel_size=3, padding=1), nn.GELU()]
            in_channels = out
        self.layers = nn.Sequential(*layers)
        self.detector = nn.Conv3d(in_channels, detectors, kernel_size=1) if detectors else None

    def response(self, features: torch.Tensor) -> torch.Tensor:
        """The detectors' logit maps (B, detectors, D, H, W) from the last layer's ``features``."""
        if self.detector is None:
            raise ValueError("this conv stem has no detectors (vision_config.conv_stem_detectors)")
        return self.detector(features)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.cat([pixel_values, self.layers(pixel_values)], dim=1)


class PatchEmbedding(nn.Module):
    def __init__(self, config: ViT3DConfig):
        super().__init__()
        self.stem = (ConvStem(config.in_channels, config.conv_stem_channels, config.conv_stem_detectors)
                     if config.conv_stem_channels else None)
        # index 1 of the Sequential is the Linear, as in M3D's key names (patch_embeddings.1.weight)
        self.patch_embeddings = nn.Sequential(PatchRearrange(config.patch_size),
                                              nn.Linear(config.embedding_input_dim, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches, config.hidden_size))
        self.patch_size = tuple(config.patch_size)
        # a finding a few voxels wide is lost in the patch Linear's sum over 256 voxels; its detector's
        # highest probability within the patch is not
        self.detector_embedding = (nn.Linear(config.conv_stem_detectors, config.hidden_size)
                                   if config.conv_stem_detectors else None)

    def embed(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(patch tokens (B, N, hidden), each patch's highest detector probability (B,
        N, detectors) or None)."""
        if self.stem is None:
            return self.patch_embeddings(pixel_values) + self.position_embeddings, None
        stacked = self.stem(pixel_values)
        x = self.patch_embeddings(stacked) + self.position_embeddings
        if self.detector_embedding is None:
            return x, None
        logits = self.stem.response(stacked[:, pixel_values.shape[1]:])
        peaks = torch.sigmoid(F.max_pool3d(logits, kernel_size=self.patch_size, stride=self.patch_size))
        peaks = peaks.flatten(2).transpose(1, 2)
        return x + self.detector_embedding(peaks), peaks

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.embed(pixel_values)[0]


class SelfAttention(nn.Module):
    def __init__(self, config: ViT3DConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class MLP(nn.Module):
    def __init__(self, config: ViT3DConfig):
        super().__init__()
        self.linear1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.linear2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))


class ViT3DBlock(nn.Module):
    def __init__(self, config: ViT3DConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = SelfAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT3DEncoder(nn.Module):
    """(B, C, D, H, W) -> (B, num_patches, output_dim), patch tokens only: hidden_size features, then each
    conv stem detector's highest probability within the patch (vision_config.conv_stem_detectors)."""

    def __init__(self, config: ViT3DConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = PatchEmbedding(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if config.use_cls_token else None
        self.blocks = nn.ModuleList(ViT3DBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.config.grid

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (self.config.in_channels, *self.config.image_size)
        if tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values of shape {tuple(pixel_values.shape)}; this encoder expects (B, {expected})"
            )
        x, peaks = self.patch_embedding.embed(pixel_values)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.norm(x)
        x = x[:, 1:] if self.cls_token is not None else x
        # the detectors' patch probabilities ride along unchanged, so the perceiver sees them as they are
        return x if peaks is None else torch.cat([x, peaks.to(x.dtype)], dim=-1)
