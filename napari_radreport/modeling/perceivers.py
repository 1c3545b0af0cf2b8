"""Perceivers: encoder tokens on a (D, H, W) grid -> a fixed number of LLM-width tokens.

One class per family; ``build_perceiver`` picks it from ``PerceiverConfig.perceiver_type`` and every
perceiver reports the token count it produces (``num_tokens``), which the processor uses to expand the
image placeholder. 2-D encoders (CLIP) pass a grid of depth 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from napari_radreport.modeling.configuration import ConfigError, PerceiverConfig

Grid = tuple[int, int, int]


def _mlp(in_dim: int, out_dim: int, depth: int, act: str) -> nn.Sequential:
    """Linear(in, out) then (act, Linear(out, out)) x (depth - 1): M3D's projector.0 / projector.2 layout."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [ACT2FN[act], nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def _kernel(grid: Grid, size: int | list[int], name: str) -> Grid:
    """Pooling kernel per axis: ``size`` (one for every axis, or [D, H, W]) where the axis is longer than 1
    (2-D grids keep depth 1)."""
    sizes = list(size) if isinstance(size, (list, tuple)) else [size] * 3
    kernel = tuple(k if g > 1 else 1 for g, k in zip(grid, sizes))
    for g, k in zip(grid, kernel):
        if g % k:
            raise ConfigError(
                f"perceiver_config.pooling_size={size} does not divide the encoder grid {grid} ({name})"
            )
    return kernel  # type: ignore[return-value]


def _to_volume(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, *grid)


class PoolingPerceiver(nn.Module):
    """Average (M3D ``spp``) or max pooling over the grid, optionally batch-standardised, then an MLP.

    With ``feature_norm="batch"`` every pooled feature (channel x token position) is standardised over the
    batch (running statistics at inference): what all images share at a position (the anatomy) is removed, so
    the language model sees what differs between them from the first step.
    """

    def __init__(self, config: PerceiverConfig, in_dim: int, grid: Grid, out_dim: int, mode: str):
        super().__init__()
        self.grid, self.mode = grid, mode
        self.kernel = _kernel(grid, config.pooling_size, config.perceiver_type)
        self.num_tokens = math.prod(g // k for g, k in zip(grid, self.kernel))
        self.feature_norm = (nn.BatchNorm1d(in_dim * self.num_tokens) if config.feature_norm == "batch"
                             else None)
        self.projector = _mlp(in_dim, out_dim, config.projector_depth, config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.avg_pool3d if self.mode == "avg" else F.max_pool3d
        x = pool(_to_volume(x, self.grid), kernel_size=self.kernel,
                 stride=self.kernel).flatten(2)  # (B, C, tokens)
        if self.feature_norm is not None:
            if self.training and x.shape[0] < 2:
                raise ValueError(
                    "perceiver_config.feature_norm='batch' needs at least 2 images per training batch"
                )
            x = self.feature_norm(x.flatten(1)).reshape(x.shape)
        return self.projector(x.transpose(1, 2))


class Conv3dPerceiver(nn.Module):
    """E3D-GPT: a 3-D convolution with kernel = stride, then an MLP (14^3 -> 7^3 tokens for kernel 2)."""

    def __init__(self, config: PerceiverConfig, in_dim: int, grid: Grid, out_dim: int):
        super().__init__()
        self.grid = grid
        kernel = _kernel(grid, config.pooling_size, "conv3d")
        self.num_tokens = math.prod(g // k for g, k in zip(grid, kernel))
        self.conv = nn.Conv3d(in_dim, out_dim, kernel_size=kernel, stride=kernel)
        self.projector = _mlp(out_dim, out_dim, max(1, config.projector_depth - 1), config.hidden_act)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_to_volume(x, self.grid)).flatten(2).transpose(1, 2)
        return self.projector(self.act(x))


class MLPPerceiver(nn.Module):
    """LLaVA / RRG24 adapter: the same MLP on every encoder token."""

    def __init__(self, config: PerceiverConfig, in_dim: int, grid: Grid, out_dim: int):
        super().__init__()
        self.num_tokens = math.prod(grid)
        self.projector = _mlp(in_dim, out_dim, config.projector_depth, config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(x)


class CrossAttentionLayer(nn.Module):
    """Queries attend to keys/values, then a feed-forward layer (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int, act: str):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"perceiver_config.num_heads={heads} does not divide the encoder width {dim}")
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), ACT2FN[act], nn.Linear(4 * dim, dim))

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(context)
        queries = queries + self.attn(self.norm_q(queries), kv, kv, need_weights=False)[0]
        return queries + self.ff(self.norm_ff(queries))


class GlobalQFormer(nn.Module):
    """``num_queries`` learned queries attend to all encoder tokens."""

    def __init__(self, config: PerceiverConfig, in_dim: int, grid: Grid, out_dim: int):
        super().__init__()
        self.num_tokens = config.num_queries
        self.queries = nn.Parameter(torch.zeros(1, config.num_queries, in_dim))
        self.layers = nn.ModuleList(CrossAttentionLayer(in_dim, config.num_heads, config.hidden_act)
                                    for _ in range(config.num_layers))
        self.projector = _mlp(in_dim, out_dim, config.projector_depth, config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.queries.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, x)
        return self.projector(q)


class LocalQFormer(nn.Module):
    """One learned query per local window of ``pooling_size`` cells per axis, attending within its window."""

    def __init__(self, config: PerceiverConfig, in_dim: int, grid: Grid, out_dim: int):
        super().__init__()
        self.grid = grid
        self.kernel = _kernel(grid, config.pooling_size, "qformer_local")
        self.windows = tuple(g // k for g, k in zip(grid, self.kernel))
        self.num_tokens = math.prod(self.windows)
        self.query = nn.Parameter(torch.zeros(1, 1, in_dim))
        self.layers = nn.ModuleList(CrossAttentionLayer(in_dim, config.num_heads, config.hidden_act)
                                    for _ in range(config.num_layers))
        self.projector = _mlp(in_dim, out_dim, config.projector_depth, config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        (wd, wh, ww), (kd, kh, kw) = self.windows, self.kernel
        v = x.reshape(b, wd, kd, wh, kh, ww, kw, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
        context = v.reshape(b * self.num_tokens, kd * kh * kw, c)
        q = self.query.expand(context.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, context)
        return self.projector(q.reshape(b, self.num_tokens, c))


class MixerLayer(nn.Module):
    def __init__(self, tokens: int, dim: int, act: str):
        super().__init__()
        self.norm_tokens, self.norm_channels = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, tokens), ACT2FN[act], nn.Linear(tokens, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, 4 * dim), ACT2FN[act], nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm_tokens(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm_channels(x))


class MLPMixerPerceiver(nn.Module):
    """A token-mixing Linear from the encoder's tokens to ``num_queries`` tokens, then Mixer layers."""

    def __init__(self, config: PerceiverConfig, in_dim: int, grid: Grid, out_dim: int):
        super().__init__()
        self.num_tokens = config.num_queries
        self.reduce = nn.Linear(math.prod(grid), config.num_queries)
        self.layers = nn.ModuleList(MixerLayer(config.num_queries, in_dim, config.hidden_act)
                                    for _ in range(config.num_layers))
        self.projector = _mlp(in_dim, out_dim, config.projector_depth, config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x.transpose(1, 2)).transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return self.projector(x)


class AttentionalPool(nn.Module):
    """``num_queries`` learned queries read all encoder tokens in one multi-head cross-attention: queries and
    tokens LayerNormed, no biases, softmax(q k^T / sqrt(head_dim)) v, an output Linear; no residual, no
    feed-forward (CT-CHAT's ``AttentionalPooler``, after CoCa)."""

    def __init__(self, dim: int, num_queries: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"perceiver_config.num_heads={heads} does not divide the encoder width {dim}")
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(num_queries, dim))
        self.ln_q, self.ln_k = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, q.shape[2], -1))


class AttentionalPoolPerceiver(nn.Module):
    """CT-CHAT's ``attn_pool+mlp2x_gelu`` projector: the attentional pool, a LayerNorm, then the MLP."""

    def __init__(self, config: PerceiverConfig, in_dim: int, grid: Grid, out_dim: int):
        super().__init__()
        self.num_tokens = config.num_queries
        self.attn_pool = AttentionalPool(in_dim, config.num_queries, config.num_heads)
        self.ln = nn.LayerNorm(in_dim)
        self.projector = _mlp(in_dim, out_dim, config.projector_depth, config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.ln(self.attn_pool(x)))


def build_perceiver(config: PerceiverConfig, in_dim: int, grid: Grid, out_dim: int,
                    detectors: int = 0) -> nn.Module:
    """The perceiver ``config`` names; with ``detectors`` (the encoder's last features are conv stem detector
    probabilities) one more token per detector follows its tokens (modeling/detector_tokens.py)."""
    if detectors:
        from napari_radreport.modeling.detector_tokens import DetectorTokens

        return DetectorTokens(build_perceiver(config, in_dim, grid, out_dim), detectors, grid, out_dim)
    kind = config.perceiver_type
    if kind in ("spp", "avg_pool"):
        return PoolingPerceiver(config, in_dim, grid, out_dim, "avg")
    if kind == "max_pool":
        return PoolingPerceiver(config, in_dim, grid, out_dim, "max")
    builders = {
        "conv3d": Conv3dPerceiver,
        "mlp2x": MLPPerceiver,
        "qformer_global": GlobalQFormer,
        "qformer_local": LocalQFormer,
        "mlp_mixer": MLPMixerPerceiver,
        "attn_pool": AttentionalPoolPerceiver,
    }
    return builders[kind](config, in_dim, grid, out_dim)
