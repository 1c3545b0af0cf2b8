"""CT-CLIP's CT-ViT encoder as CT-CHAT runs it: a CT volume -> quantised tokens on a (D, H, W) grid.

Equations (CT-CLIP ``transformer_maskgit/transformer_maskgit/ctvit.py`` and ``attention.py``, the encoder half
that CT-CHAT's ``llava/serve/encode_script.py`` calls with ``return_encoded_tokens=True``):

* patches ``b c (t pt) (h p1) (w p2) -> b t h w (c pt p1 p2)``, then LayerNorm, Linear, LayerNorm;
* a spatial transformer over each slab's h x w tokens with a continuous position bias (an MLP of the
  signed log distances between positions, one value per head), then a temporal transformer over each
  position's t tokens (no bias);
* each block: a causal depthwise 3x3x3 convolution (padded (2, 0) along t) added to the tokens, attention
  whose queries come from the LayerNormed tokens and whose keys and values from the tokens as they are,
  cosine similarity of L2-normalised queries and keys (each scaled by a learned vector) times 8, and a
  GEGLU feed-forward; LayerNorms without bias (a gain only) except the feed-forward's;
* in the temporal pass the convolution reshapes the (b h w) t token order as (b t h w), as CT-ViT does; the
  weights were trained with it, so it is kept;
* the tokens are replaced by their nearest codebook rows by cosine similarity (the rows themselves, not
  normalised), as its vector quantiser does in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_radreport.modeling.configuration import CTViTConfig

Grid = tuple[int, int, int]
_BIAS_ROWS = 64  # positions whose bias rows are computed at once (each row: n x hidden floats)
_CODE_ROWS = 2048  # tokens compared with the codebook at once


class GainLayerNorm(nn.Module):
    """LayerNorm with a learned gain and no bias (CT-ViT's ``LayerNorm``)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, None, self.eps)


class PositionConv(nn.Module):
    """CT-ViT's PEG: a depthwise 3x3x3 convolution over the token volume, causal along its first axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor, batch: int, grid: Grid) -> torch.Tensor:
        shape = x.shape
        volume = x.reshape(batch, *grid, shape[-1]).permute(0, 4, 1, 2, 3)
        volume = self.conv(F.pad(volume, (1, 1, 1, 1, 2, 0)))
        return volume.permute(0, 2, 3, 4, 1).reshape(shape)


class CTViTAttention(nn.Module):
    def __init__(self, config: CTViTConfig):
        super().__init__()
        inner = config.num_attention_heads * config.head_dim
        self.heads, self.scale = config.num_attention_heads, config.attention_scale
        self.norm = GainLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.to_q = nn.Linear(config.hidden_size, inner, bias=False)
        self.to_kv = nn.Linear(config.hidden_size, 2 * inner, bias=False)
        self.q_scale = nn.Parameter(torch.ones(config.head_dim))
        self.k_scale = nn.Parameter(torch.ones(config.head_dim))
        self.to_out = nn.Linear(inner, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(x).chunk(2, dim=-1)  # keys and values from the tokens before the norm
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        mask = None if bias is None else bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLUFeedForward(nn.Module):
    def __init__(self, config: CTViTConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.proj_in = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.proj_out = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(F.gelu(gate) * x)


class CTViTBlock(nn.Module):
    def __init__(self, config: CTViTConfig):
        super().__init__()
        self.peg = PositionConv(config.hidden_size)
        self.attn = CTViTAttention(config)
        self.ff = GEGLUFeedForward(config)

    def forward(self, x: torch.Tensor, batch: int, grid: Grid, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.peg(x, batch, grid) + x
        x = self.attn(x, bias) + x
        return self.ff(x) + x


class CTViTTransformer(nn.Module):
    def __init__(self, config: CTViTConfig, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(CTViTBlock(config) for _ in range(depth))
        self.norm_out = GainLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, batch: int, grid: Grid,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, batch, grid, bias, use_reentrant=False)
            else:
                x = layer(x, batch, grid, bias)
        return self.norm_out(x)


class ContinuousPositionBias(nn.Module):
    """One attention bias per head from the signed log distance (sign(d) log(|d| + 1)) between two positions
    of an h x w slab, through an MLP with LeakyReLU(0.1); computed in float32 as CT-ViT does."""

    def __init__(self, config: CTViTConfig):
        super().__init__()
        dim = config.hidden_size
        self.hidden = nn.ModuleList([nn.Linear(2, dim)] + [nn.Linear(dim, dim)
                                                            for _ in range(config.position_bias_layers - 1)])
        self.out = nn.Linear(dim, config.num_attention_heads)

    def forward(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                    indexing="ij")
        positions = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=-1).float()
        chunks = []
        for start in range(0, positions.shape[0], _BIAS_ROWS):
            rel = positions[start:start + _BIAS_ROWS, None] - positions[None]
            x = torch.sign(rel) * torch.log(rel.abs() + 1)
            for layer in self.hidden:
                x = F.leaky_relu(F.linear(x, layer.weight.float(), layer.bias.float()), 0.1)
            chunks.append(F.linear(x, self.out.weight.float(), self.out.bias.float()))
        return torch.cat(chunks).permute(2, 0, 1)  # (heads, n, n)


class CTViTEncoder(nn.Module):
    """(B, C, D, H, W) -> (B, D' * H' * W', hidden_size) tokens in (D', H', W') order, quantised to the
    codebook when ``config.quantize`` (CT-CHAT's image features before its projector)."""

    def __init__(self, config: CTViTConfig):
        super().__init__()
        self.config = config
        self.patch_norm_in = nn.LayerNorm(config.patch_dim, eps=config.layer_norm_eps)
        self.patch_proj = nn.Linear(config.patch_dim, config.hidden_size)
        self.patch_norm_out = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.position_bias = ContinuousPositionBias(config)
        self.spatial = CTViTTransformer(config, config.spatial_depth)
        self.temporal = CTViTTransformer(config, config.temporal_depth)
        self.register_buffer("codebook", torch.zeros(config.codebook_size, config.hidden_size))

    @property
    def grid(self) -> Grid:
        return self.config.grid

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    @property
    def gradient_checkpointing(self) -> bool:
        return self.spatial.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.spatial.gradient_checkpointing = self.temporal.gradient_checkpointing = value

    def patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``b c (t pt) (h p1) (w p2) -> b t h w (c pt p1 p2)``, then the patch embedding: (B, t, h, w,
        dim)."""
        b, c = pixel_values.shape[:2]
        (t, h, w), (pt, p1, p2) = self.grid, self.config.patch_size
        x = pixel_values.reshape(b, c, t, pt, h, p1, w, p2).permute(0, 2, 4, 6, 1, 3, 5, 7)
        x = x.reshape(b, t, h, w, c * pt * p1 * p2)
        return self.patch_norm_out(self.patch_proj(self.patch_norm_in(x)))

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tokens before quantisation: (B, t * h * w, dim) in (t, h, w) order."""
        expected = (self.config.in_channels, *self.config.image_size)
        if tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"pixel_values of shape {tuple(pixel_values.shape)}; this encoder expects "
                             f"(B, {', '.join(str(n) for n in expected)})")
        x = self.patches(pixel_values)
        b, (t, h, w), d = x.shape[0], self.grid, x.shape[-1]
        bias = self.position_bias(h, w, x.device)
        x = self.spatial(x.reshape(b * t, h * w, d), b, self.grid, bias)
        x = x.reshape(b, t, h, w, d).permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d)
        x = self.temporal(x, b, self.grid)
        return x.reshape(b, h, w, t, d).permute(0, 3, 1, 2, 4).reshape(b, t * h * w, d)

    def code_indices(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N) index of each token's nearest codebook row by cosine similarity (computed in float32)."""
        codes = F.normalize(self.codebook.float(), dim=-1)
        flat = tokens.reshape(-1, tokens.shape[-1])
        found = [(F.normalize(flat[i:i + _CODE_ROWS].float(), dim=-1) @ codes.T).argmax(-1)
                 for i in range(0, flat.shape[0], _CODE_ROWS)]
        return torch.cat(found).reshape(tokens.shape[:-1])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.encode(pixel_values)
        if not self.config.quantize:
            return tokens
        return self.codebook[self.code_indices(tokens)].to(tokens.dtype)
