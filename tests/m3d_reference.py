"""M3D-LaMed written from its published equations in plain torch, and tiny checkpoints in its format.

Used by the tests as the independent reference for our model and converter. The segmentation head (SegVol,
``seg_module`` / ``seg_projector``) is restated from M3D's code (BAAI-DCAI/M3D ``LaMed/src/model``:
``lamed_arch.py``, ``language_model/lamed_*.py`` ``generate(seg_enable=True)``,
``segmentation_module/segvol.py`` and ``segment_anything_volumetric/build_sam.py`` with its ``modeling/``):
``segvol_shapes`` is its state-dict layout, ``reference_segvol`` / ``reference_segment`` its equations;
``real_code`` loads the originals (RADREPORT_M3D_CODE = a checkout of M3D, with monai==1.3.0, its pin, and
einops importable).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

VIT = "model.vision_tower.vision_tower."


def reference_vit3d(sd: dict, pixels: torch.Tensor, patch: tuple, heads: int,
                    prefix: str = "", cls: bool = True) -> torch.Tensor:
    """M3D-CLIP ViT: rearrange + Linear, + position, CLS in front (unless not ``cls``: SegVol's), pre-norm
    blocks with explicit softmax."""
    b, c, s0, s1, s2 = pixels.shape
    p1, p2, p3 = patch
    x = pixels.reshape(b, c, s0 // p1, p1, s1 // p2, p2, s2 // p3, p3)
    x = torch.einsum("bchpwqdr->bhwdpqrc", x).reshape(b, -1, p1 * p2 * p3 * c)
    x = (x @ sd[prefix + "patch_embedding.patch_embeddings.1.weight"].T
         + sd[prefix + "patch_embedding.patch_embeddings.1.bias"])
    x = x + sd[prefix + "patch_embedding.position_embeddings"]
    if cls:
        x = torch.cat([sd[prefix + "cls_token"].expand(b, -1, -1), x], dim=1)
    width = x.shape[-1]
    n_blocks = len({k.split(".")[len(prefix.split(".")) ] for k in sd if k.startswith(prefix + "blocks.")})
    for i in range(n_blocks):
        p = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-5)
        qkv = (h @ sd[p + "attn.qkv.weight"].T).reshape(b, -1, 3, heads, width // heads)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        attn = torch.softmax(q @ k.transpose(-1, -2) * (width // heads) ** -0.5, dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(b, -1, width)
        x = x + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-5)
        h = F.gelu(h @ sd[p + "mlp.linear1.weight"].T + sd[p + "mlp.linear1.bias"])
        x = x + h @ sd[p + "mlp.linear2.weight"].T + sd[p + "mlp.linear2.bias"]
    x = F.layer_norm(x, (width,), sd[prefix + "norm.weight"], sd[prefix + "norm.bias"], 1e-5)
    return x[:, 1:] if cls else x


def reference_spp(sd: dict, features: torch.Tensor, grid: tuple, pool: int = 2) -> torch.Tensor:
    """M3D spatial pooling projector: b (p1 p2 p3) d -> b d p1 p2 p3, avg-pool, back, Linear-GELU-Linear."""
    b, n, d = features.shape
    x = features.transpose(1, 2).reshape(b, d, *grid)
    x = F.avg_pool3d(x, kernel_size=pool, stride=pool).flatten(2).transpose(1, 2)
    x = F.gelu(x @ sd["model.mm_projector.projector.0.weight"].T + sd["model.mm_projector.projector.0.bias"])
    return x @ sd["model.mm_projector.projector.2.weight"].T + sd["model.mm_projector.projector.2.bias"]


def write_tiny_tokenizer(folder: Path, base_vocab: int) -> None:
    """A word-level tokenizer with ``base_vocab`` tokens, then M3D's four added tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, base_vocab)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>")
    tokenizer.add_tokens(M3D_TOKENS, special_tokens=True)
    tokenizer.save_pretrained(str(folder))


M3D_TOKENS = ["<im_patch>", "<bx_start>", "<bx_end>", "[SEG]"]


def write_sentencepiece_tokenizer(folder: Path, base_vocab: int) -> None:
    """Only ``tokenizer.model`` (a SentencePiece BPE model trained here on report words, ``base_vocab``
    pieces) and ``tokenizer_config.json`` naming LlamaTokenizer with M3D's four added tokens: how the released
    Llama-2 M3D-LaMed folder ships its tokenizer."""
    import io
    import random

    import sentencepiece as spm

    words = ("there is a small nodule in the right upper lower lobe no pleural effusion heart size normal "
             "lungs are clear consolidation emphysema").split()
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=base_vocab,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   byte_fallback=True, character_coverage=1.0, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    added = {str(base_vocab + i): {"content": token, **flags} for i, token in enumerate(M3D_TOKENS)}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False, "added_tokens_decoder": added}))


def write_tiny_m3d_checkpoint(folder: Path, text_type: str, seed: int = 0, *, base_vocab: int | None = None,
                              tokenizer=None, segmentation: bool = False,
                              segmentation_module: str | None = "segvol") -> dict:
    """A tiny M3D-LaMed folder: released config keys, random weights under M3D's names. ``base_vocab``
    (default: the released text model's) and ``tokenizer(folder, base_vocab)`` (default: a word-level
    tokenizer.json) stand in for another tokenizer. ``segmentation``: the weights hold a tiny SegVol head
    (``TINY_SEGVOL`` sizes, ``segvol_shapes`` names); ``segmentation_module``: config.json's field."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from napari_radreport.modeling.configuration import ViT3DConfig
    from napari_radreport.modeling.vit3d import ViT3DEncoder

    torch.manual_seed(seed)
    base_vocab = base_vocab or {"llama": 32000, "phi3": 32011}[text_type]
    folder.mkdir(parents=True, exist_ok=True)
    (tokenizer or write_tiny_tokenizer)(folder, base_vocab)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
            "num_hidden_layers": 2, "vocab_size": base_vocab + 4, "max_position_embeddings": 512,
            "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "hidden_act": "silu", "tie_word_embeddings": False, "use_cache": True}
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(text_type, **text))
    config = {
        "architectures": [f"Lamed{'Llama' if text_type == 'llama' else 'Phi3'}ForCausalLM"],
        "model_type": f"lamed_{text_type}", **text, "torch_dtype": "float32",
        "transformers_version": "4.40.1", "image_channel": 1, "image_size": [8, 64, 64],
        "patch_size": [4, 16, 16], "vision_tower": "vit3d", "vision_select_layer": -1,
        "vision_select_feature": "patch", "mm_projector_type": "spp", "proj_layer_type": "mlp",
        "proj_layer_num": 2, "proj_pooling_type": "spatial", "proj_pooling_size": 2, "mm_hidden_size": 48,
        "segmentation_module": segmentation_module, "seg_token_id": base_vocab + 3, "num_new_tokens": 4,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    vit = ViT3DEncoder(ViT3DConfig(image_size=[8, 64, 64], patch_size=[4, 16, 16], hidden_size=48,
                                   num_hidden_layers=2, num_attention_heads=12, intermediate_size=96))
    state = {VIT + k: torch.randn_like(v) * 0.2 for k, v in vit.state_dict().items()}
    state.update({f"model.{k[len('model.'):]}" if k.startswith("model.") else k: v.clone()
                  for k, v in lm.state_dict().items()})
    state["model.mm_projector.projector.0.weight"] = torch.randn(32, 48) * 0.1
    state["model.mm_projector.projector.0.bias"] = torch.randn(32) * 0.1
    state["model.mm_projector.projector.2.weight"] = torch.randn(32, 32) * 0.1
    state["model.mm_projector.projector.2.bias"] = torch.randn(32) * 0.1
    if segmentation:
        state.update(random_segvol_state(segvol_shapes(**TINY_SEGVOL, text_hidden=32)))
    from safetensors.torch import save_file

    half = len(state) // 2
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: state[k].contiguous() for k in keys}, str(folder / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return state


def _reference_lm(state: dict, text_type: str):
    """The tiny checkpoint's language model, loaded into transformers' own class."""
    from transformers import AutoConfig, AutoModelForCausalLM

    lm_state = {k: v for k, v in state.items()
                if k.startswith(("model.embed_tokens", "model.layers", "model.norm"))
                or k == "lm_head.weight"}
    vocab = state["lm_head.weight"].shape[0]
    text = AutoConfig.for_model(text_type, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                num_key_value_heads=4, num_hidden_layers=2, vocab_size=vocab,
                                max_position_embeddings=512, rms_norm_eps=1e-5, bos_token_id=1,
                                eos_token_id=2, pad_token_id=0, hidden_act="silu", tie_word_embeddings=False)
    lm = AutoModelForCausalLM.from_config(text).eval()
    lm.load_state_dict(lm_state, strict=True)
    return lm


def reference_generate(state: dict, text_type: str, ids: torch.Tensor, pixels: torch.Tensor, steps: int):
    """Logits of the prompt and greedy ids, M3D style: features overwrite positions 1..N, no cache."""
    lm = _reference_lm(state, text_type)
    features = reference_spp(state, reference_vit3d(state, pixels, (4, 16, 16), 12, prefix=VIT), (2, 4, 4))
    n = features.shape[1]
    sequence = ids.clone()
    first_logits = None
    for _ in range(steps):
        emb = lm.get_input_embeddings()(sequence)
        emb = torch.cat([emb[:, :1], features, emb[:, 1 + n:]], dim=1)
        logits = lm(inputs_embeds=emb, use_cache=False).logits
        first_logits = logits if first_logits is None else first_logits
        sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return features, first_logits, sequence[:, ids.shape[1]:]


# -- the segmentation head (SegVol) ---------------------------------------------------------------------
SEG = "model.seg_module."
# tiny SegVol sizes in M3D's layout; its code fixes 12 ViT heads and 8 decoder heads, whatever the width
TINY_SEGVOL = {"image_size": (8, 64, 64), "patch_size": (4, 16, 16), "width": 48, "depth": 2, "mlp": 96,
               "decoder_depth": 2, "decoder_mlp": 64, "downsample": 2, "mask_tokens": 4, "iou_depth": 3,
               "iou_hidden": 16, "mask_chans": 16}
VIT_HEADS, DECODER_HEADS = 12, 8


def _linear(name: str, out: int, inp: int) -> dict[str, tuple]:
    return {name + ".weight": (out, inp), name + ".bias": (out,)}


def _norm(name: str, *shape: int) -> dict[str, tuple]:
    return {name + ".weight": shape, name + ".bias": shape}


def _attention(name: str, width: int, inner: int) -> dict[str, tuple]:
    shapes = {}
    for proj in ("q_proj", "k_proj", "v_proj"):
        shapes.update(_linear(f"{name}.{proj}", inner, width))
    return {**shapes, **_linear(f"{name}.out_proj", width, inner)}


def segvol_shapes(image_size, patch_size, width, depth, mlp, decoder_depth, decoder_mlp, downsample,
                  mask_tokens, iou_depth, iou_hidden, mask_chans, text_hidden) -> dict[str, tuple]:
    """M3D-LaMed's segmentation tensors (``LamedMetaModel.state_dict()``: ``model.seg_module.*`` from
    ``build_sam`` and ``SegVol``, ``model.seg_projector.*``), names and shapes, from reading its code."""
    grid = [i // p for i, p in zip(image_size, patch_size)]
    vit, dec, prompt = SEG + "image_encoder.", SEG + "mask_decoder.", SEG + "prompt_encoder."
    shapes = {vit + "patch_embedding.position_embeddings": (1, math.prod(grid), width),
              **_linear(vit + "patch_embedding.patch_embeddings.1", width, math.prod(patch_size)),
              **_norm(vit + "norm", width)}
    for i in range(depth):
        b = f"{vit}blocks.{i}."
        shapes.update({**_linear(b + "mlp.linear1", mlp, width), **_linear(b + "mlp.linear2", width, mlp),
                       **_norm(b + "norm1", width), **_linear(b + "attn.out_proj", width, width),
                       b + "attn.qkv.weight": (3 * width, width), **_norm(b + "norm2", width)})
    shapes.update({prompt + "pe_layer.positional_encoding_gaussian_matrix": (3, width // 2),
                   prompt + "not_a_point_embed.weight": (1, width),
                   prompt + "no_mask_embed.weight": (1, width),
                   **{f"{prompt}point_embeddings.{i}.weight": (1, width) for i in range(4)},
                   prompt + "mask_downscaling.0.weight": (mask_chans // 4, 1, 2, 2),
                   prompt + "mask_downscaling.0.bias": (mask_chans // 4,),
                   **_norm(prompt + "mask_downscaling.1", mask_chans // 4),
                   prompt + "mask_downscaling.3.weight": (mask_chans, mask_chans // 4, 2, 2),
                   prompt + "mask_downscaling.3.bias": (mask_chans,),
                   **_norm(prompt + "mask_downscaling.4", mask_chans),
                   prompt + "mask_downscaling.6.weight": (width, mask_chans, 1, 1),
                   prompt + "mask_downscaling.6.bias": (width,)})
    inner = width // downsample
    for i in range(decoder_depth):
        b = f"{dec}transformer.layers.{i}."
        shapes.update({**_attention(b + "self_attn", width, width),
                       **_attention(b + "cross_attn_token_to_image", width, inner),
                       **_attention(b + "cross_attn_image_to_token", width, inner),
                       **_linear(b + "mlp.lin1", decoder_mlp, width),
                       **_linear(b + "mlp.lin2", width, decoder_mlp),
                       **{k: v for n in range(1, 5) for k, v in _norm(f"{b}norm{n}", width).items()}})
    up = [2 * g for g in grid]
    shapes.update({**_attention(dec + "transformer.final_attn_token_to_image", width, inner),
                   **_norm(dec + "transformer.norm_final_attn", width),
                   dec + "iou_token.weight": (1, width), dec + "mask_tokens.weight": (mask_tokens, width),
                   dec + "output_upscaling.0.weight": (width, width // 4, 2, 2, 2),
                   dec + "output_upscaling.0.bias": (width // 4,),
                   **_norm(dec + "output_upscaling.1", width // 4, *up),
                   dec + "output_upscaling.3.weight": (width // 4, width // 8, 2, 2, 2),
                   dec + "output_upscaling.3.bias": (width // 8,),
                   **_linear(dec + "txt_align_upscaled_embedding", width // 8, width)})
    for k in range(mask_tokens):
        for j, (out, inp) in enumerate([(width, width), (width, width), (width // 8, width)]):
            shapes.update(_linear(f"{dec}output_hypernetworks_mlps.{k}.layers.{j}", out, inp))
    sizes = [width] + [iou_hidden] * (iou_depth - 1) + [mask_tokens]
    for j in range(iou_depth):
        shapes.update(_linear(f"{dec}iou_prediction_head.layers.{j}", sizes[j + 1], sizes[j]))
    shapes.update({**_linear("model.seg_projector.0", text_hidden, text_hidden),
                   **_linear("model.seg_projector.2", width, text_hidden)})
    return shapes


def random_segvol_state(shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Random tensors of these shapes, norms near 1 and 0, the rest wide enough that a wrong step shows."""
    state = {}
    for name, shape in shapes.items():
        is_norm = ".norm" in name or "mask_downscaling.1" in name or "mask_downscaling.4" in name or (
            "output_upscaling.1" in name)
        if is_norm:
            state[name] = (1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(shape)
        elif name.endswith("gaussian_matrix"):
            state[name] = torch.randn(shape)
        else:
            state[name] = torch.randn(shape) * 0.2
    return state


def _attend(sd: dict, name: str, q, k, v, heads: int):
    """SAM's attention: project, split heads, softmax(q k^T / sqrt(d)) v, join heads, project."""
    def split(x):
        return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    q = split(q @ sd[name + ".q_proj.weight"].T + sd[name + ".q_proj.bias"])
    k = split(k @ sd[name + ".k_proj.weight"].T + sd[name + ".k_proj.bias"])
    v = split(v @ sd[name + ".v_proj.weight"].T + sd[name + ".v_proj.bias"])
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(q.shape[0], -1, heads * q.shape[-1])
    return out @ sd[name + ".out_proj.weight"].T + sd[name + ".out_proj.bias"]


def _ln(sd: dict, name: str, x, eps: float = 1e-5):
    weight = sd[name + ".weight"]
    return F.layer_norm(x, tuple(weight.shape), weight, sd[name + ".bias"], eps)


def _mlp(sd: dict, name: str, x, layers: int):
    for j in range(layers):
        x = x @ sd[f"{name}.layers.{j}.weight"].T + sd[f"{name}.layers.{j}.bias"]
        x = F.relu(x) if j < layers - 1 else x
    return x


def _linear_of(sd: dict, name: str, x):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def _two_way_layer(sd: dict, p: str, first: bool, queries, tokens, keys, key_pe):
    """One of SAM's two-way blocks: token self-attention (the first without positions or residual), tokens to
    image, MLP, image to tokens; each residual then LayerNorm."""
    if first:
        queries = _ln(sd, p + "norm1", _attend(sd, p + "self_attn", queries, queries, queries, DECODER_HEADS))
    else:
        q = queries + tokens
        queries = _ln(sd, p + "norm1", queries + _attend(sd, p + "self_attn", q, q, queries, DECODER_HEADS))
    attended = _attend(sd, p + "cross_attn_token_to_image", queries + tokens, keys + key_pe, keys,
                       DECODER_HEADS)
    queries = _ln(sd, p + "norm2", queries + attended)
    hidden = _linear_of(sd, p + "mlp.lin2", F.relu(_linear_of(sd, p + "mlp.lin1", queries)))
    queries = _ln(sd, p + "norm3", queries + hidden)
    attended = _attend(sd, p + "cross_attn_image_to_token", keys + key_pe, queries + tokens, queries,
                       DECODER_HEADS)
    return queries, _ln(sd, p + "norm4", keys + attended)


def _fourier_grid(matrix: torch.Tensor, grid) -> torch.Tensor:
    """(N, C) features of each voxel centre, (index + 0.5) / size ordered (axis 1, axis 0, axis 2)."""
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in grid]
    c0, c1, c2 = torch.meshgrid(*axes, indexing="ij")
    coords = torch.stack([c1, c0, c2], dim=-1).reshape(-1, 3)
    projected = 2 * math.pi * ((2 * coords - 1) @ matrix)
    return torch.cat([projected.sin(), projected.cos()], dim=-1)


def reference_segvol(sd: dict, pixels: torch.Tensor, prompt: torch.Tensor, image_size,
                     patch_size) -> torch.Tensor:
    """SegVol's text path: ViT (no CLS) -> SAM's prompt encoder and two-way mask decoder, mask 0 plus the
    text similarity, trilinear to the input size. ``sd`` under ``model.seg_module.``."""
    grid = [i // p for i, p in zip(image_size, patch_size)]
    b = pixels.shape[0]
    image = reference_vit3d(sd, pixels, patch_size, VIT_HEADS, prefix=SEG + "image_encoder.", cls=False)
    width = image.shape[-1]
    matrix = sd[SEG + "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    key_pe = _fourier_grid(matrix, grid).unsqueeze(0).expand(b, -1, -1)
    dec = SEG + "mask_decoder."
    keys = image + sd[SEG + "prompt_encoder.no_mask_embed.weight"]  # the dense "no mask" prompt, every voxel
    tokens = torch.cat([sd[dec + "iou_token.weight"], sd[dec + "mask_tokens.weight"]]).expand(b, -1, -1)
    tokens = torch.cat([tokens, prompt.unsqueeze(1)], dim=1)
    queries = tokens
    layers = len({k.split(".")[5] for k in sd if k.startswith(dec + "transformer.layers.")})
    for i in range(layers):
        queries, keys = _two_way_layer(sd, f"{dec}transformer.layers.{i}.", i == 0, queries, tokens, keys,
                                       key_pe)
    final = _attend(sd, dec + "transformer.final_attn_token_to_image", queries + tokens, keys + key_pe, keys,
                    DECODER_HEADS)
    queries = _ln(sd, dec + "transformer.norm_final_attn", queries + final)
    up = dec + "output_upscaling."
    x = keys.transpose(1, 2).reshape(b, width, *grid)
    x = F.gelu(_ln(sd, up + "1", F.conv_transpose3d(x, sd[up + "0.weight"], sd[up + "0.bias"], stride=2)))
    x = F.gelu(F.conv_transpose3d(x, sd[up + "3.weight"], sd[up + "3.bias"], stride=2))
    hyper = _mlp(sd, dec + "output_hypernetworks_mlps.0", queries[:, 1], 3)
    text = _linear_of(sd, dec + "txt_align_upscaled_embedding", prompt)
    masks = torch.einsum("bc,bcdhw->bdhw", hyper, x) + torch.einsum("bc,bcdhw->bdhw", text, x)
    return F.interpolate(masks.unsqueeze(1), size=tuple(pixels.shape[2:]), mode="trilinear",
                         align_corners=False)


def reference_segment(state: dict, text_type: str, ids: torch.Tensor, pixels: torch.Tensor, seg_token_id: int,
                      image_size=(8, 64, 64), patch_size=(4, 16, 16)) -> torch.Tensor:
    """M3D-LaMed's segmentation of a whole sequence: the LM's last hidden states (features at positions
    1..N), those before each [SEG] averaged, ``seg_projector`` (Linear, ReLU, Linear), then SegVol."""
    lm = _reference_lm(state, text_type)
    features = reference_spp(state, reference_vit3d(state, pixels, (4, 16, 16), 12, prefix=VIT), (2, 4, 4))
    emb = lm.get_input_embeddings()(ids)
    emb = torch.cat([emb[:, :1], features, emb[:, 1 + features.shape[1]:]], dim=1)
    hidden = lm(inputs_embeds=emb, output_hidden_states=True, use_cache=False).hidden_states[-1]
    before = torch.cat([ids[:, 1:] == seg_token_id, torch.zeros_like(ids[:, :1], dtype=torch.bool)], dim=1)
    seg = torch.stack([hidden[i][before[i]].mean(0) for i in range(ids.shape[0])])
    hidden = F.relu(_linear_of(state, "model.seg_projector.0", seg))
    prompt = _linear_of(state, "model.seg_projector.2", hidden)
    return reference_segvol(state, pixels, prompt, image_size, patch_size)


# -- M3D's own code (RADREPORT_M3D_CODE) ---------------------------------------------------------------
def _package(name: str, path: Path) -> types.ModuleType:
    """A namespace package ``name`` over ``path`` whose __init__ is not run."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _accepts_new_cache_name(forward):
    """M3D's forward (written for transformers 4.39) under transformers 5, whose generation loop passes the
    key/value cache as ``cache`` (4.39: ``past_key_values``) and ``logits_to_keep`` (then unknown): the one
    renamed and the other dropped, nothing else changed."""
    def wrapped(self, *args, cache=None, logits_to_keep=None, **kwargs):
        if cache is not None:
            kwargs["past_key_values"] = cache
        return forward(self, *args, **kwargs)
    return wrapped


def real_code():
    """M3D's modules (types.SimpleNamespace), or None when its code or its libraries are not at hand.
    Loaded without the packages' __init__ where those import what the models never run (the segment-anything
    package imports its automatic mask generator, which needs torchvision); its ViTs need MONAI's
    ``pos_embed`` argument, which MONAI 1.4 removed: monai==1.3.0 (M3D's pin) must come first on the path."""
    root = os.environ.get("RADREPORT_M3D_CODE")
    if not root:
        return None
    root = Path(root)
    src = root / "LaMed" / "src" / "model"
    if not (src / "lamed_arch.py").is_file():
        return None
    for needed in ("monai", "einops"):
        if importlib.util.find_spec(needed) is None:
            return None
    import monai

    if tuple(int(v) for v in monai.__version__.split(".")[:2]) >= (1, 4):
        return None
    sys.path.insert(0, str(root))  # lamed_arch imports LaMed.src.model.loss by its absolute name
    for name, path in (("LaMed", root / "LaMed"), ("LaMed.src", root / "LaMed" / "src"),
                       ("LaMed.src.model", src),
                       ("LaMed.src.model.segmentation_module", src / "segmentation_module"),
                       ("LaMed.src.model.language_model", src / "language_model")):
        _package(name, path)
    sam = "LaMed.src.model.segmentation_module.segment_anything_volumetric"
    package = _package(sam, src / "segmentation_module" / "segment_anything_volumetric")
    build_sam = _load(sam + ".build_sam", Path(package.__path__[0]) / "build_sam.py")
    package.sam_model_registry = build_sam.sam_model_registry
    builder = _load("LaMed.src.model.segmentation_module.builder", src / "segmentation_module" / "builder.py")
    llama = _load("LaMed.src.model.language_model.lamed_llama", src / "language_model" / "lamed_llama.py")
    phi3 = _load("LaMed.src.model.language_model.lamed_phi3", src / "language_model" / "lamed_phi3.py")
    for cls in (llama.LamedLlamaForCausalLM, phi3.LamedPhi3ForCausalLM):
        cls.forward = _accepts_new_cache_name(cls.forward)
    utils = _load("m3d_lamed_utils", root / "LaMed" / "src" / "utils" / "utils.py")
    return types.SimpleNamespace(
        root=root, build_segmentation_module=builder.build_segmentation_module, mask2box=utils.mask2box,
        extract_box_from_text=utils.extract_box_from_text,
        models={"llama": (llama.LamedConfig, llama.LamedLlamaForCausalLM),
                "phi3": (phi3.LamedPhi3Config, phi3.LamedPhi3ForCausalLM)})
