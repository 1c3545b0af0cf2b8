"""M3D-LaMed's referring segmentation: the [SEG] token's hidden state -> a prompt -> SegVol -> mask logits.

How M3D-LaMed does it (facts read from BAAI-DCAI/M3D, ``LaMed/src/model``; no code copied): the language
model answers a "segment the ..." question with text holding a ``[SEG]`` token. The last (normed) hidden state
at the position *before* each ``[SEG]`` (the one whose output predicts it: ``ids[:, 1:] == seg_token_id``) is
taken, several are averaged, and ``seg_projector`` (Linear, ReLU, Linear to SegVol's width, Dropout) turns
it into a text prompt. ``seg_module`` is SegVol: a MONAI ViT without CLS token on the same pixels the vision
tower reads, SAM's prompt encoder (the prompt becomes one sparse token, the dense prompt is ``no_mask_embed``,
positions are random Fourier features of the voxel centres) and SAM's two-way transformer mask decoder in
3-D, whose first mask is added to the similarity of the upscaled image embedding with the prompt
(``txt_align_upscaled_embedding``) and resized trilinearly to the input size. ``sigmoid(logits) > 0.5`` is
M3D's mask.

Our modules keep M3D's parameter names below ``seg_module`` and ``seg_projector``, so the converter maps them
by prefix only (``modeling/m3d.py``): ``model.seg_module.*`` -> ``segmentation.segvol.*`` and
``model.seg_projector.*`` -> ``segmentation.projector.*``. The prompt encoder's point, box and mask parts and
the decoder's IoU head are held (they are in the weights) but SegVol's text path never runs them.

``segment(model, input_ids, pixel_values)`` is the entry point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_radreport.modeling.configuration import SegVolSpec, ViT3DConfig
from napari_radreport.modeling.vit3d import ViT3DEncoder


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis (dim 1) of a (B, C, ...) tensor; SAM's ``LayerNorm2d`` (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


class FourierPositions(nn.Module):
    """Random Fourier features of positions in [0, 1]^3: sin and cos of 2 pi (2p - 1) G, G a fixed Gaussian
    (3, width / 2) matrix saved with the weights."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(3, width // 2))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 3) positions in [0, 1] -> (..., width)."""
        projected = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix * (2 * math.pi)
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def grid(self, size: tuple[int, int, int]) -> torch.Tensor:
        """(width, *size): each voxel centre's features. SegVol orders a centre's coordinates (axis 1, axis 0,
        axis 2), each (index + 0.5) / size, as SAM's 2-D code named its (x, y) and a third was appended."""
        matrix = self.positional_encoding_gaussian_matrix
        axes = [(torch.arange(n, device=matrix.device, dtype=matrix.dtype) + 0.5) / n for n in size]
        a0, a1, a2 = torch.meshgrid(*axes, indexing="ij")
        return self.encode(torch.stack([a1, a0, a2], dim=-1)).permute(3, 0, 1, 2)


class PromptEncoder(nn.Module):
    """SAM's prompt encoder in 3-D; only the text prompt and the dense "no mask" embedding are used."""

    def __init__(self, spec: SegVolSpec):
        super().__init__()
        width, chans = spec.hidden_size, spec.mask_in_chans
        self.grid_size = spec.grid
        self.pe_layer = FourierPositions(width)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, width) for _ in range(4))  # held, not used
        self.not_a_point_embed = nn.Embedding(1, width)  # held, not used
        # held, not used: M3D builds these as 2-D convolutions, which a 3-D mask prompt could not pass
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, chans // 4, kernel_size=2, stride=2), ChannelNorm(chans // 4), nn.GELU(),
            nn.Conv2d(chans // 4, chans, kernel_size=2, stride=2), ChannelNorm(chans), nn.GELU(),
            nn.Conv2d(chans, width, kernel_size=1))
        self.no_mask_embed = nn.Embedding(1, width)

    def dense_positions(self) -> torch.Tensor:
        """(1, width, *grid): the positional encoding of the image embedding's grid."""
        return self.pe_layer.grid(self.grid_size).unsqueeze(0)

    def text_prompt(self, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, width) prompt -> sparse tokens (B, 1, width) and the dense embedding (B, width, *grid)."""
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(prompt.shape[0], -1, *self.grid_size)
        return prompt.unsqueeze(1), dense


class TokenMLP(nn.Module):
    """Linear, ReLU, Linear (the two-way blocks' MLP: ``lin1``, ``lin2``)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(width, hidden)
        self.lin2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class MLP(nn.Module):
    """``depth`` Linear layers (``layers.N``) with ReLU between them."""

    def __init__(self, width: int, hidden: int, out: int, depth: int):
        super().__init__()
        sizes = [width] + [hidden] * (depth - 1) + [out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class DownsampledAttention(nn.Module):
    """Multi-head attention whose queries, keys and values are projected to ``width / downsample``."""

    def __init__(self, width: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = width // downsample
        self.heads = heads
        self.q_proj = nn.Linear(width, inner)
        self.k_proj = nn.Linear(width, inner)
        self.v_proj = nn.Linear(width, inner)
        self.out_proj = nn.Linear(inner, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(self._split(self.q_proj(q)), self._split(self.k_proj(k)),
                                             self._split(self.v_proj(v)))
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayBlock(nn.Module):
    """Tokens attend to themselves, tokens to the image, an MLP on the tokens, the image to the tokens; each
    step residual then LayerNorm. The first block's self-attention has neither positions nor residual."""

    def __init__(self, spec: SegVolSpec, first: bool):
        super().__init__()
        width, heads, down = spec.hidden_size, spec.decoder_heads, spec.attention_downsample_rate
        self.first = first
        self.self_attn = DownsampledAttention(width, heads)
        self.norm1 = nn.LayerNorm(width)
        self.cross_attn_token_to_image = DownsampledAttention(width, heads, down)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = TokenMLP(width, spec.decoder_mlp_dim)
        self.norm3 = nn.LayerNorm(width)
        self.norm4 = nn.LayerNorm(width)
        self.cross_attn_image_to_token = DownsampledAttention(width, heads, down)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            queries = self.norm1(self.self_attn(queries, queries, queries))
        else:
            q = queries + query_pe
            queries = self.norm1(queries + self.self_attn(q, q, queries))
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, spec: SegVolSpec):
        super().__init__()
        width = spec.hidden_size
        self.layers = nn.ModuleList(TwoWayBlock(spec, first=i == 0) for i in range(spec.decoder_depth))
        self.final_attn_token_to_image = DownsampledAttention(width, spec.decoder_heads,
                                                              spec.attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(width)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe (B, C, *grid); tokens (B, T, C) -> tokens (B, T, C), image tokens (B, N, C)."""
        keys, key_pe = image.flatten(2).transpose(1, 2), image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attended = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attended), keys


class MaskDecoder(nn.Module):
    """SAM's mask decoder in 3-D with SegVol's text similarity; returns the first mask only (SegVol's
    ``multimask_output=False``), at 4x the image embedding's grid."""

    def __init__(self, spec: SegVolSpec):
        super().__init__()
        width, tokens = spec.hidden_size, spec.num_mask_tokens
        upscaled = tuple(2 * g for g in spec.grid)
        self.transformer = TwoWayTransformer(spec)
        self.iou_token = nn.Embedding(1, width)
        self.mask_tokens = nn.Embedding(tokens, width)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(width, width // 4, kernel_size=2, stride=2),
            nn.LayerNorm((width // 4, *upscaled)), nn.GELU(),
            nn.ConvTranspose3d(width // 4, width // 8, kernel_size=2, stride=2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(width, width, width // 8, 3)
                                                       for _ in range(tokens))
        self.iou_prediction_head = MLP(width, spec.iou_head_hidden_dim, tokens, spec.iou_head_depth)  # held
        self.txt_align_upscaled_embedding = nn.Linear(spec.prompt_dim, width // 8)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                prompt: torch.Tensor) -> torch.Tensor:
        """image (B, C, *grid), image_pe (1, C, *grid), sparse (B, T, C), dense (B, C, *grid), prompt (B, C)
        -> the first mask's logits (B, 1, *4 grid)."""
        b = sparse.shape[0]
        outputs = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([outputs, sparse], dim=1)
        hs, keys = self.transformer(image + dense, image_pe.expand(b, -1, -1, -1, -1), tokens)
        image_out = keys.transpose(1, 2).reshape(image.shape)
        upscaled = self.output_upscaling(image_out).flatten(2)  # (B, C / 8, N')
        hyper = self.output_hypernetworks_mlps[0](hs[:, 1])  # the first mask token
        text = self.txt_align_upscaled_embedding(prompt)
        logits = ((hyper + text).unsqueeze(1) @ upscaled)  # the mask's logits plus the text similarity
        return logits.reshape(b, 1, *(4 * g for g in image.shape[2:]))


class SegVol(nn.Module):
    """Pixels (B, C, D, H, W) and a prompt (B, hidden) -> mask logits (B, 1, D, H, W)."""

    def __init__(self, spec: SegVolSpec):
        super().__init__()
        self.spec = spec
        self.image_encoder = ViT3DEncoder(ViT3DConfig(
            in_channels=spec.in_channels, image_size=list(spec.image_size), patch_size=list(spec.patch_size),
            hidden_size=spec.hidden_size, num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads, intermediate_size=spec.intermediate_size,
            qkv_bias=spec.qkv_bias, use_cls_token=False))
        self.prompt_encoder = PromptEncoder(spec)
        self.mask_decoder = MaskDecoder(spec)

    def forward(self, pixel_values: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        tokens = self.image_encoder(pixel_values)  # (B, N, C), N in (D, H, W) order
        image = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *self.spec.grid)
        sparse, dense = self.prompt_encoder.text_prompt(prompt)
        low = self.mask_decoder(image, self.prompt_encoder.dense_positions(), sparse, dense, prompt)
        return F.interpolate(low, size=tuple(pixel_values.shape[2:]), mode="trilinear", align_corners=False)


class SegmentationHead(nn.Module):
    """``projector`` (M3D's ``seg_projector``: the [SEG] hidden state -> a SegVol prompt) and ``segvol``
    (M3D's ``seg_module``)."""

    def __init__(self, spec: SegVolSpec, text_hidden: int):
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(text_hidden, text_hidden), nn.ReLU(),
                                       nn.Linear(text_hidden, spec.prompt_dim), nn.Dropout(0.1))
        self.segvol = SegVol(spec)

    def forward(self, pixel_values: torch.Tensor, seg_hidden: torch.Tensor) -> torch.Tensor:
        """Pixels (B, C, D, H, W) and each row's [SEG] hidden state (B, text hidden) -> logits
        (B, 1, D, H, W)."""
        dtype = self.projector[0].weight.dtype
        prompt = self.projector(seg_hidden.to(dtype))
        return self.segvol(pixel_values.to(dtype), prompt)


def seg_positions(input_ids: torch.Tensor, seg_token_id: int) -> torch.Tensor:
    """(B, L) bool: True at each position whose next token is [SEG] (the hidden state M3D-LaMed reads)."""
    following = input_ids[:, 1:] == seg_token_id
    return torch.cat([following, torch.zeros_like(following[:, :1])], dim=1)


def _seg_hidden(hidden_states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, hidden): the mean of each row's hidden states at its [SEG] positions."""
    counts = positions.sum(1)
    if bool((counts == 0).any()):
        rows = [int(i) for i in torch.nonzero(counts == 0).flatten()]
        raise ValueError(f"no [SEG] token in row(s) {rows} of input_ids: the answer holds no segmentation "
                         "(the model did not write [SEG]; nothing to segment)")
    weights = positions.to(hidden_states.dtype) / counts.unsqueeze(1).to(hidden_states.dtype)
    return torch.einsum("bl,blh->bh", weights, hidden_states)


def _last_hidden_states(model, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
                        image_features: torch.Tensor | None) -> torch.Tensor:
    """The language model's last (normed) hidden states (B, L, hidden) for the whole sequence."""
    out = model(input_ids=input_ids, pixel_values=None if image_features is not None else pixel_values,
                image_features=image_features, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return out.hidden_states[-1]


@torch.no_grad()
def segment(model, input_ids, pixel_values: torch.Tensor, *, image_features: torch.Tensor | None = None,
            hidden_states: torch.Tensor | None = None) -> torch.Tensor:
    """Mask logits (B, 1, D, H, W), float32, for the [SEG] token(s) of a sequence, in the model's pixel space.

    ``model``: a ``RadReportForConditionalGeneration`` with a segmentation head (a converted M3D-LaMed whose
    weights had ``seg_module``/``seg_projector``; else a ValueError says so). ``input_ids``: (B, L) or (L,)
    tensor or list, the whole sequence the model read and wrote: the prompt with its image tokens expanded,
    then the generated answer holding [SEG] (``config.seg_token_id``; a row without one is a ValueError).
    ``pixel_values``: (B, C, D, H, W), the pixels the model read (``LoadedModel.pixel_values(study)``); SegVol
    reads them too, so the logits are on that grid, voxel for voxel. ``image_features``: the cached encoding
    (skips the vision tower in the language pass). ``hidden_states``: the language model's last hidden states
    (B, L, hidden) for ``input_ids`` when already at hand (skips the language pass).

    The hidden state before each [SEG] is taken (several are averaged), projected, and given to SegVol with
    the pixels, as M3D-LaMed's ``generate(seg_enable=True)`` does (which, unlike this, skips a [SEG] that is
    the very first generated token). ``torch.sigmoid(logits) > 0.5`` is M3D's mask.
    """
    head = getattr(model, "segmentation", None)
    if head is None:
        raise ValueError("this model has no segmentation head (config.segmentation): only M3D-LaMed weights "
                         "with seg_module / seg_projector tensors can segment")
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=pixel_values.device)
    ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
    positions = seg_positions(ids, model.config.seg_token_id)
    if hidden_states is None:
        hidden_states = _last_hidden_states(model, ids, pixel_values, image_features)
    seg_hidden = _seg_hidden(hidden_states.float(), positions.to(hidden_states.device))
    return head(pixel_values, seg_hidden).float()
