"""Step 3: the 3-D ViT on the CPU in fp32: ours (scaled-dot-product attention) vs explicit attention.

The baseline runs the same weights the way M3D-LaMed's encoder (MONAI's ``SABlock``) computes attention:
``softmax(einsum(q, k) * scale)`` materialised as a (heads, tokens, tokens) matrix, then ``einsum`` with v.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from napari_radreport.bench.measure import ratio, timed
from napari_radreport.modeling.recipes import MODELS_DIR

SIZES = {"m3d": "m3d-lamed-phi3-4b", "e3d-gpt": "e3d-gpt-vicuna-7b"}


def encoder_config(name: str, layers: int | None = None):
    from napari_radreport.modeling.configuration import ViT3DConfig

    vision = dict(json.loads((MODELS_DIR / SIZES[name] / "recipe.json").read_text())["vision"])
    vision.pop("model_type")
    if layers is not None:
        vision["num_hidden_layers"] = layers
    return ViT3DConfig(**vision)


def _explicit_attention(attn, x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    heads = attn.num_heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    weights = (torch.einsum("bhxd,bhyd->bhxy", q, k) * (c // heads) ** -0.5).softmax(dim=-1)
    out = torch.einsum("bhxy,bhyd->bhxd", weights, v)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, c))


def explicit_forward(encoder, pixel_values: torch.Tensor) -> torch.Tensor:
    """``encoder(pixel_values)`` with explicit attention (same weights, same equations otherwise)."""
    x = encoder.patch_embedding(pixel_values)
    if encoder.cls_token is not None:
        x = torch.cat([encoder.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    for block in encoder.blocks:
        x = x + _explicit_attention(block.attn, block.norm1(x))
        x = x + block.mlp(block.norm2(x))
    x = encoder.norm(x)
    return x[:, 1:] if encoder.cls_token is not None else x


def run(name: str, repeats: int, layers: int | None = None) -> dict[str, Any]:
    """Both forwards of a random-weight encoder of recipe ``name``'s size (``layers`` to shorten it)."""
    from napari_radreport.modeling.vit3d import ViT3DEncoder

    config = encoder_config(name, layers)
    torch.manual_seed(0)
    encoder = ViT3DEncoder(config).eval()
    pixels = torch.rand(1, config.in_channels, *config.image_size)
    with torch.inference_mode():
        ours = timed(lambda: encoder(pixels), repeats)
        explicit = timed(lambda: explicit_forward(encoder, pixels), repeats)
    params = sum(p.numel() for p in encoder.parameters())
    return {
        "size": (f"{SIZES[name]} vision tower: width {config.hidden_size}, "
                 f"{config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
                 f"{config.num_patches} patches ({params / 1e6:.0f} M parameters)"),
        "threads": torch.get_num_threads(),
        "ours_sdpa": ours.as_dict(), "explicit_attention": explicit.as_dict(),
        "explicit_over_ours": ratio(explicit.seconds, ours.seconds),
        "max_abs_difference": float((ours.result - explicit.result).abs().max()),
    }
