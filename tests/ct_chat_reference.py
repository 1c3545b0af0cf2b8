"""CT-CHAT written from its released code's equations in plain torch, tiny checkpoints in its layout, and a
harness that runs its own code when a copy of it is at hand.

Re-expressed (facts from the code, no code copied): CT-CLIP
``transformer_maskgit/transformer_maskgit/ctvit.py`` and ``attention.py`` (CT-ViT's encoder, and its vector
quantiser from vector-quantize-pytorch 1.1.2, the version CT-CLIP pins), CT-CHAT
``llava/model/multimodal_projector/coca_attentional_pooler.py`` (the projector), ``llava/conversation.py``
(``SeparatorStyle.MPT``) with ``llava/serve/gradio_web_server.py`` (the first question), ``llava/mm_utils.py``
(``tokenizer_image_token``), ``llava/model/builder.py`` (its LoRA loading) and
``llava/serve/encode_script.py`` (``nii_img_to_tensor``). The tests use these as the independent reference;
``real_code`` loads the originals (RADREPORT_CT_CHAT_CODE = a folder holding CT-CHAT/ and CT-CLIP/ checkouts,
with einops, einops-exts, beartype and vector-quantize-pytorch importable) to check the re-expression itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

IMAGE_TOKEN_INDEX = -200  # llava/constants.py
TASKS = ("<multiple_choice>", "<long_answer>", "<short_answe>", "<report_generation>")  # llava/constants.py
LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                   "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
                   "<|eot_id|>", "<|python_tag|>")
USER = "<|start_header_id|>user<|end_header_id|>\n\n"
ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"
SEP = "<|eot_id|>"
# A stand-in for CT-CHAT's system text (its real text is read from its conversation.py by the converter; the
# tests that have its code use the real one): the same shape, a second <|begin_of_text|> in front.
STAND_IN_SYSTEM = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n. A stand-in system text: "
                   "answer about the chest CT only when the <provided> token is in a question; the task "
                   "tokens <multiple_choice>, <report_generation>, <long_answer> and <short_answer> say how "
                   "to answer. Otherwise reply \u201cPlease provide the CT volume.\u201d")
STAND_IN_CONVERSATION = f'''"""A stand-in laid out as CT-CHAT's llava/conversation.py (conv_llama3 only)."""
from enum import Enum, auto


class SeparatorStyle(Enum):
    MPT = auto()


class Conversation:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


conv_llama3 = Conversation(
    system={STAND_IN_SYSTEM!r},
    roles=({USER!r}, {ASSISTANT!r}),
    version="llama3",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep={SEP!r},
)
'''
# Tiny sizes: a CT-ViT of CT-CHAT's layout, its projector (256 queries, 8 heads, fixed in its code) and a
# Llama of Llama 3's shape (grouped keys and values, untied embeddings)
TINY_GEOMETRY = {"in_channels": 1, "image_size": [6, 16, 16], "patch_size": [2, 4, 4]}
TINY_VIT = {"dim": 32, "heads": 4, "dim_head": 8, "spatial_depth": 2, "temporal_depth": 1, "codebook": 64}
TINY_TEXT = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
             "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": False}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
QUERIES, PROJECTOR_HEADS = 256, 8


# -- tokenizer and base ---------------------------------------------------------------------------------
def write_llama3_tokenizer(folder: Path, vocab_size: int = 420):
    """A byte-level BPE trained here on report-like text, then Llama 3's special tokens after it, BOS added
    by the post-processor (as Llama 3's tokenizer.json does); ``<|eot_id|>`` is EOS (as in 3.1 Instruct)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    words = ("there is a small nodule in the right upper lower lobe no pleural effusion heart size normal "
             "lungs are clear consolidation emphysema chest ct volume report findings impression generate "
             "write "
             "describe does show signs of the this for answer question provided token task please").split()
    generator = torch.Generator().manual_seed(0)
    corpus = [" ".join(words[int(i)] for i in torch.randint(len(words), (14,), generator=generator))
              for _ in range(400)] + [STAND_IN_SYSTEM]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    core.add_special_tokens(list(LLAMA3_SPECIALS))
    bos = core.token_to_id("<|begin_of_text|>")
    core.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                                        special_tokens=[("<|begin_of_text|>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|begin_of_text|>",
                                        eos_token="<|eot_id|>")
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def write_tiny_base(folder: Path, seed: int = 0):
    """A tiny Llama 3-shaped base folder: weights (safetensors), tokenizer, generation_config (3.1's
    EOS)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = write_llama3_tokenizer(folder)
    ids = tokenizer.convert_tokens_to_ids(["<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>",
                                           "<|eot_id|>"])
    config = LlamaConfig(**TINY_TEXT, vocab_size=len(tokenizer), bos_token_id=ids[0],
                         eos_token_id=[ids[1], ids[2], ids[3]])
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    GenerationConfig(bos_token_id=ids[0], eos_token_id=[ids[1], ids[2], ids[3]]).save_pretrained(str(folder))
    return tokenizer


# -- CT-ViT ---------------------------------------------------------------------------------------------
def _vit_shapes(v: dict = TINY_VIT, geometry: dict = TINY_GEOMETRY) -> dict[str, tuple]:
    """CT-ViT's state-dict names and shapes (``CTViT.state_dict()``): the encoder, the decoder-side Linears
    it also holds, the quantiser's buffers, the bias-free norms' zero ``beta`` buffers."""
    dim, inner = v["dim"], v["heads"] * v["dim_head"]
    pt, p1, p2 = geometry["patch_size"]
    patch, first = geometry["in_channels"] * pt * p1 * p2, geometry["in_channels"] * p1 * p2
    ff = int(4 * (2 / 3) * dim)
    shapes = {"spatial_rel_pos_bias.net.0.0.weight": (dim, 2), "spatial_rel_pos_bias.net.0.0.bias": (dim,),
              "spatial_rel_pos_bias.net.1.0.weight": (dim, dim), "spatial_rel_pos_bias.net.1.0.bias": (dim,),
              "spatial_rel_pos_bias.net.2.weight": (v["heads"], dim),
              "spatial_rel_pos_bias.net.2.bias": (v["heads"],),
              "to_patch_emb_first_frame.1.weight": (first,), "to_patch_emb_first_frame.1.bias": (first,),
              "to_patch_emb_first_frame.2.weight": (dim, first), "to_patch_emb_first_frame.2.bias": (dim,),
              "to_patch_emb_first_frame.3.weight": (dim,), "to_patch_emb_first_frame.3.bias": (dim,),
              "to_patch_emb.1.weight": (patch,), "to_patch_emb.1.bias": (patch,),
              "to_patch_emb.2.weight": (dim, patch), "to_patch_emb.2.bias": (dim,),
              "to_patch_emb.3.weight": (dim,), "to_patch_emb.3.bias": (dim,),
              "vq._codebook.initted": (1,), "vq._codebook.cluster_size": (1, v["codebook"]),
              "vq._codebook.embed": (1, v["codebook"], dim),
              "to_pixels_first_frame.0.weight": (first, dim), "to_pixels_first_frame.0.bias": (first,),
              "to_pixels.0.weight": (patch, dim), "to_pixels.0.bias": (patch,)}
    for side in ("spatial", "temporal"):
        prefix = f"enc_{side}_transformer."
        for i in range(v[f"{side}_depth"]):
            p = f"{prefix}layers.{i}."
            shapes.update({p + "0.dsconv.weight": (dim, 1, 3, 3, 3), p + "0.dsconv.bias": (dim,),
                           p + "1.null_kv": (v["heads"], 0, v["dim_head"]), p + "1.q_scale": (v["dim_head"],),
                           p + "1.k_scale": (v["dim_head"],), p + "1.norm.gamma": (dim,),
                           p + "1.norm.beta": (dim,),
                           p + "1.context_norm.gamma": (dim,), p + "1.context_norm.beta": (dim,),
                           p + "1.to_q.weight": (inner, dim), p + "1.to_kv.weight": (2 * inner, dim),
                           p + "1.to_out.weight": (dim, inner), p + "3.0.weight": (dim,),
                           p + "3.0.bias": (dim,),
                           p + "3.1.weight": (2 * ff, dim), p + "3.4.weight": (dim, ff)})
        shapes.update({prefix + "norm_out.gamma": (dim,), prefix + "norm_out.beta": (dim,)})
    return shapes


def tiny_ctvit_state(seed: int = 0) -> dict:
    """Random tensors under CT-ViT's names (beta buffers zero, as CT-ViT's are; codebook rows of any norm)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in _vit_shapes().items():
        if name.endswith(".beta") or "cluster_size" in name:
            state[name] = torch.zeros(shape)
        elif name.endswith("initted"):
            state[name] = torch.ones(shape)
        elif name.endswith(("gamma", "q_scale", "k_scale", "emb.1.weight", "emb.3.weight")):
            state[name] = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[name] = 0.3 * torch.randn(shape, generator=generator)
    return state


def _gain_norm(x, gamma):
    return F.layer_norm(x, x.shape[-1:], gamma, torch.zeros_like(gamma))


def _peg(sd: dict, p: str, x, video_shape):
    """PEG: reshape to video_shape + (d,) (whatever order x is in), pad (1,1,1,1,2,0), depthwise conv."""
    shape = x.shape
    volume = x.reshape(*video_shape, -1)
    volume = torch.einsum("bthwd->bdthw", volume)
    volume = F.conv3d(F.pad(volume, (1, 1, 1, 1, 2, 0)), sd[p + "0.dsconv.weight"], sd[p + "0.dsconv.bias"],
                      groups=volume.shape[1])
    return torch.einsum("bdthw->bthwd", volume).reshape(shape)


def _attention(sd: dict, p: str, x, heads: int, bias=None):
    q = _gain_norm(x, sd[p + "1.norm.gamma"]) @ sd[p + "1.to_q.weight"].T
    k, v = (x @ sd[p + "1.to_kv.weight"].T).chunk(2, dim=-1)
    q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12) * sd[p + "1.q_scale"]
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12) * sd[p + "1.k_scale"]
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * 8
    if bias is not None:
        sim = sim + bias
    out = torch.einsum("bhij,bhjd->bhid", sim.softmax(dim=-1), v)
    return out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1) @ sd[p + "1.to_out.weight"].T


def _feed_forward(sd: dict, p: str, x):
    h = F.layer_norm(x, x.shape[-1:], sd[p + "3.0.weight"], sd[p + "3.0.bias"]) @ sd[p + "3.1.weight"].T
    value, gate = h.chunk(2, dim=-1)
    return (F.gelu(gate) * value) @ sd[p + "3.4.weight"].T


def _transformer(sd: dict, prefix: str, x, video_shape, heads: int, bias=None):
    depth = len({k.split(".")[2] for k in sd if k.startswith(prefix + "layers.")})
    for i in range(depth):
        p = f"{prefix}layers.{i}."
        x = _peg(sd, p, x, video_shape) + x
        x = _attention(sd, p, x, heads, bias) + x
        x = _feed_forward(sd, p, x) + x
    return _gain_norm(x, sd[prefix + "norm_out.gamma"])


def _position_bias(sd: dict, h: int, w: int):
    grid = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).reshape(2, -1).T
    rel = (grid[:, None] - grid[None]).float()
    x = torch.sign(rel) * torch.log(rel.abs() + 1)
    for i in (0, 1):
        x = F.leaky_relu(x @ sd[f"spatial_rel_pos_bias.net.{i}.0.weight"].T
                         + sd[f"spatial_rel_pos_bias.net.{i}.0.bias"], 0.1)
    x = x @ sd["spatial_rel_pos_bias.net.2.weight"].T + sd["spatial_rel_pos_bias.net.2.bias"]
    return x.permute(2, 0, 1)


def reference_ctvit(sd: dict, video: torch.Tensor, patch=(2, 4, 4), heads: int = TINY_VIT["heads"],
                    quantize: bool = True) -> torch.Tensor:
    """CT-ViT ``forward(video, return_encoded_tokens=True)`` in eval mode, flattened as CT-CHAT's
    ``encode_images`` does (``flatten(1, 3)``): (B, t * h * w, dim)."""
    b, c, frames, height, width = video.shape
    pt, p1, p2 = patch
    t, h, w = frames // pt, height // p1, width // p2
    x = video.reshape(b, c, t, pt, h, p1, w, p2)
    x = torch.einsum("bctphqwr->bthwcpqr", x).reshape(b, t, h, w, -1)
    x = F.layer_norm(x, x.shape[-1:], sd["to_patch_emb.1.weight"], sd["to_patch_emb.1.bias"])
    x = x @ sd["to_patch_emb.2.weight"].T + sd["to_patch_emb.2.bias"]
    x = F.layer_norm(x, x.shape[-1:], sd["to_patch_emb.3.weight"], sd["to_patch_emb.3.bias"])
    d, video_shape = x.shape[-1], (b, t, h, w)
    x = _transformer(sd, "enc_spatial_transformer.", x.reshape(b * t, h * w, d), video_shape, heads,
                     _position_bias(sd, h, w))
    x = torch.einsum("bthwd->bhwtd", x.reshape(b, t, h, w, d)).reshape(b * h * w, t, d)
    x = _transformer(sd, "enc_temporal_transformer.", x, video_shape, heads)
    x = torch.einsum("bhwtd->bthwd", x.reshape(b, h, w, t, d)).reshape(b, t * h * w, d)
    if not quantize:
        return x
    embed = sd["vq._codebook.embed"][0]
    similarity = F.normalize(x.float(), dim=-1) @ F.normalize(embed, dim=-1).T
    return embed[similarity.argmax(dim=-1)]


# -- projector ------------------------------------------------------------------------------------------
def tiny_projector_state(text_hidden: int, seed: int = 1, dim: int = TINY_VIT["dim"]) -> dict:
    """non_lora_trainables.bin as CT-CHAT's training saves it: the projector under PEFT's prefixes."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"attn_pool.query": (QUERIES, dim), "attn_pool.ln_k.weight": (dim,),
              "attn_pool.ln_k.bias": (dim,), "attn_pool.ln_q.weight": (dim,), "attn_pool.ln_q.bias": (dim,),
              "attn_pool.to_q.weight": (dim, dim),
              "attn_pool.to_kv.weight": (2 * dim, dim), "attn_pool.to_out.weight": (dim, dim),
              "ln.weight": (dim,), "ln.bias": (dim,), "proj.0.weight": (text_hidden, dim),
              "proj.0.bias": (text_hidden,), "proj.2.weight": (text_hidden, text_hidden),
              "proj.2.bias": (text_hidden,)}
    norms = ("ln.weight", "attn_pool.ln_k.weight", "attn_pool.ln_q.weight")
    return {f"base_model.model.model.mm_projector.{k}": (1.0 if k in norms else 0.0)
            + 0.3 * torch.randn(s, generator=generator) for k, s in shapes.items()}


def reference_projector(sd: dict, x: torch.Tensor, heads: int = PROJECTOR_HEADS) -> torch.Tensor:
    """AttentionalPoolProjector: LayerNormed queries and tokens, scaled dot products with the row maximum
    subtracted, softmax, output Linear; LayerNorm; Linear, GELU, Linear."""
    p = "base_model.model.model.mm_projector."
    b, dim = x.shape[0], x.shape[-1]
    kv = F.layer_norm(x, (dim,), sd[p + "attn_pool.ln_k.weight"], sd[p + "attn_pool.ln_k.bias"])
    q = F.layer_norm(sd[p + "attn_pool.query"], (dim,), sd[p + "attn_pool.ln_q.weight"],
                     sd[p + "attn_pool.ln_q.bias"]).expand(b, -1, -1) @ sd[p + "attn_pool.to_q.weight"].T
    k, v = (kv @ sd[p + "attn_pool.to_kv.weight"].T).chunk(2, dim=-1)
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    sim = torch.einsum("bhid,bhjd->bhij", q * (dim // heads) ** -0.5, k)
    attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
    out = torch.einsum("bhij,bhjd->bhid", attn, v).transpose(1, 2).reshape(b, -1, dim)
    out = out @ sd[p + "attn_pool.to_out.weight"].T
    out = F.layer_norm(out, (dim,), sd[p + "ln.weight"], sd[p + "ln.bias"])
    out = F.gelu(out @ sd[p + "proj.0.weight"].T + sd[p + "proj.0.bias"])
    return out @ sd[p + "proj.2.weight"].T + sd[p + "proj.2.bias"]


# -- a tiny CT-CHAT source folder -----------------------------------------------------------------------
def write_tiny_ct_chat(src: Path, seed: int = 0, *, conversation: str | None = None) -> dict:
    """SRC as a user assembles it: encoder/clip_visual_encoder.pth, llama_3.1_8b/ (CT-CHAT's LoRA folder),
    Meta-Llama-3.1-8B-Instruct/ (the base), CT-CHAT/llava/conversation.py. Returns the tensors written."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base, lora = src / "Meta-Llama-3.1-8B-Instruct", src / "llama_3.1_8b"
    tokenizer = write_tiny_base(base, seed)
    vit = tiny_ctvit_state(seed)
    (src / "encoder").mkdir(parents=True)
    torch.save(vit, src / "encoder" / "clip_visual_encoder.pth")
    torch.manual_seed(seed + 7)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.05,
                                      task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(std=0.2)  # a trained LoRA (PEFT starts lora_B at zero)
    model.save_pretrained(str(lora))
    projector = tiny_projector_state(TINY_TEXT["hidden_size"], seed + 1)
    torch.save(projector, lora / "non_lora_trainables.bin")
    vocab = len(tokenizer)
    llava = {"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", **TINY_TEXT,
             "vocab_size": vocab + 1 + len(TASKS), "pad_token_id": vocab,
             "mm_projector_type": "attn_pool+mlp2x_gelu",
             "mm_hidden_size": TINY_VIT["dim"], "mm_context_size": TINY_VIT["dim"],
             "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_vision_select_layer": -2,
             "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "mm_patch_merge_type": "flat",
             "image_aspect_ratio": "pad", "tokenizer_padding_side": "right", "use_mm_proj": True}
    (lora / "config.json").write_text(json.dumps(llava, indent=1))
    code = src / "CT-CHAT" / "llava"
    code.mkdir(parents=True)
    (code / "conversation.py").write_text(conversation or STAND_IN_CONVERSATION)
    return {"vit": vit, "projector": projector, "base": base, "lora": lora}


# -- CT-CHAT's loader and generation --------------------------------------------------------------------
def ct_chat_load(parts: dict, *, fix_task_rows: bool):
    """CT-CHAT's builder.py LoRA branch on the tiny parts: the base with <pad> added (its rows the mean of the
    base's), the four task tokens added by ``resize_token_embeddings`` (new random rows: what its loader
    does), the LoRA merged by PEFT. ``fix_task_rows``: then set those rows to the mean of the rows before
    them."""
    from peft import PeftModel
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(parts["base"]))
    model = LlamaForCausalLM.from_pretrained(str(parts["base"])).eval()
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[-1:] = weight[:-1].mean(dim=0, keepdim=True)
    for token in TASKS:
        tokenizer.add_tokens(token, special_tokens=True)
    model = PeftModel.from_pretrained(model, str(parts["lora"])).merge_and_unload()
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # builder.py: random new rows
    if fix_task_rows:
        with torch.no_grad():
            for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
                weight[-len(TASKS):] = weight[:-len(TASKS)].double().mean(dim=0, keepdim=True).float()
    return tokenizer, model


def splice(model, ids: list[int], features: torch.Tensor) -> torch.Tensor:
    """CT-CHAT's prepare_inputs_labels_for_multimodal for one prompt with one image: the text's embeddings
    with the image features in place of the IMAGE_TOKEN_INDEX."""
    at = ids.index(IMAGE_TOKEN_INDEX)
    embed = model.get_input_embeddings()
    before, after = embed(torch.tensor([ids[:at]])), embed(torch.tensor([ids[at + 1:]]))
    return torch.cat([before, features.to(before.dtype), after], dim=1)


def reference_generate(model, ids: list[int], features: torch.Tensor, steps: int):
    """Logits of the prompt and greedy ids, recomputed from the spliced embeddings at every step."""
    embeds, first, new = splice(model, ids, features), None, []
    embed = model.get_input_embeddings()
    with torch.no_grad():
        for _ in range(steps):
            logits = model(inputs_embeds=embeds, use_cache=False).logits
            first = logits if first is None else first
            token = int(logits[0, -1].argmax())
            new.append(token)
            embeds = torch.cat([embeds, embed(torch.tensor([[token]]))], dim=1)
    return first, new


# -- the prompt -----------------------------------------------------------------------------------------
def reference_prompt(system: str, turns: list[tuple[str, str | None]], suffixes: list[str]) -> str:
    """Conversation.get_prompt (MPT) of a chat whose first user message is the web UI's
    ``"<image>\\n <provided>" + question + suffix`` (a tuple message: "<image>" moved to the front and the
    rest stripped) and later ones ``question + suffix``."""
    text = system + SEP
    for i, ((question, answer), suffix) in enumerate(zip(turns, suffixes)):
        message = question + suffix
        if i == 0:
            message = "<image>\n" + ("<image>\n <provided>" + message).replace("<image>", "").strip()
        text += USER + message + SEP + ASSISTANT + (answer + SEP if answer else "")
    return text


def reference_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """tokenizer_image_token: each piece between "<image>" tokenized with BOS, the first piece's BOS kept and
    every later piece's dropped, IMAGE_TOKEN_INDEX between them."""
    pieces = [tokenizer(piece).input_ids for piece in prompt.split("<image>")]
    ids, offset = [], 0
    if pieces and pieces[0] and pieces[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(pieces[0][0])
    for i, piece in enumerate(pieces):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(piece[offset:])
    return ids


# -- CT-RATE preprocessing ------------------------------------------------------------------------------
def reference_nii_to_tensor(path, slope: float, intercept: float, xy_spacing: float, z_spacing: float):
    """nii_img_to_tensor: stored voxel order, HU clip, (k, i, j) order, trilinear resampling in float64 to
    floor(n * spacing / target), / 1000, crop or pad with -1 to (480, 480, 240), then (1, k, i, j)."""
    import nibabel
    import numpy as np

    data = np.clip(slope * nibabel.load(str(path)).get_fdata() + intercept, -1000, 1000)
    tensor = torch.tensor(data.transpose(2, 0, 1))[None, None]
    shape, scale = tensor.shape[2:], [z_spacing / 1.5, xy_spacing / 0.75, xy_spacing / 0.75]
    tensor = F.interpolate(tensor, size=[int(n * s) for n, s in zip(shape, scale)], mode="trilinear",
                           align_corners=False)[0, 0].numpy()
    volume = torch.tensor((tensor.transpose(1, 2, 0) / 1000).astype(np.float32))
    out = torch.full((480, 480, 240), -1.0)
    src, dst = [], []
    for have, want in zip(volume.shape, out.shape):
        start = max((have - want) // 2, 0)
        kept = min(have, want)
        before = (want - kept) // 2
        src.append(slice(start, start + kept))
        dst.append(slice(before, before + kept))
    out[tuple(dst)] = volume[tuple(src)]
    return out.permute(2, 0, 1)[None]


# -- CT-CHAT's and CT-CLIP's own code ---------------------------------------------------------------------
class _CPUTorch(types.ModuleType):
    """``torch`` with ``torch.device(...)`` answering the CPU: CT-ViT hard-codes ``torch.device('cuda')``."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def device(*args, **kwargs):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _package(name: str, path: Path) -> None:
    """A namespace package ``name`` over ``path`` whose __init__ is not run (theirs import everything)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def real_code():
    """CT-CHAT's and CT-CLIP's modules (types.SimpleNamespace), or None when their code or its libraries are
    not at hand. Loaded without their packages' __init__ (which import training and serving code);
    torchvision, imported by ctvit.py for its training losses only, is stubbed when absent."""
    root = os.environ.get("RADREPORT_CT_CHAT_CODE")
    if not root:
        return None
    root = Path(root)
    chat, clip = root / "CT-CHAT", root / "CT-CLIP" / "transformer_maskgit" / "transformer_maskgit"
    if not (chat / "llava" / "conversation.py").is_file() or not (clip / "ctvit.py").is_file():
        return None
    for needed in ("einops", "einops_exts", "beartype", "vector_quantize_pytorch"):
        if importlib.util.find_spec(needed) is None:
            return None
    import transformers  # noqa: F401  (before the stub below: it asks whether torchvision is installed)

    stubbed = importlib.util.find_spec("torchvision") is None and "torchvision" not in sys.modules
    if stubbed:
        stub = types.ModuleType("torchvision")
        stub.transforms, stub.utils = types.ModuleType("torchvision.transforms"), types.ModuleType("utils")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stub, stub.transforms
    _package("transformer_maskgit", clip)
    attention = _load("transformer_maskgit.attention", clip / "attention.py")
    ctvit = _load("transformer_maskgit.ctvit", clip / "ctvit.py")
    if stubbed:
        del sys.modules["torchvision"], sys.modules["torchvision.transforms"]
    if not torch.cuda.is_available():
        attention.torch = ctvit.torch = _CPUTorch()
    sys.modules["transformer_maskgit"].CTViT = ctvit.CTViT
    _package("llava", chat / "llava")
    _package("llava.model", chat / "llava" / "model")
    _package("llava.model.multimodal_projector", chat / "llava" / "model" / "multimodal_projector")
    constants = _load("llava.constants", chat / "llava" / "constants.py")
    conversation = _load("llava.conversation", chat / "llava" / "conversation.py")
    mm_utils = _load("llava.mm_utils", chat / "llava" / "mm_utils.py")
    projector = _load("llava.model.multimodal_projector.builder",
                      chat / "llava" / "model" / "multimodal_projector" / "builder.py")
    encode = _load("ct_chat_encode_script", chat / "llava" / "serve" / "encode_script.py")
    # its LLaVA model: llava_arch (the splice, encode_images) and llava_llama; the CLIP vision tower builder
    # is stubbed: CT-CHAT takes CT-CLIP's encoded tokens as its images and never builds a tower at inference
    _package("llava.model.multimodal_encoder", chat / "llava" / "model" / "multimodal_encoder")
    towers = types.ModuleType("llava.model.multimodal_encoder.builder")
    towers.build_vision_tower = lambda *args, **kwargs: None
    sys.modules["llava.model.multimodal_encoder.builder"] = towers
    _package("llava.model.language_model", chat / "llava" / "model" / "language_model")
    _load("llava.model.llava_arch", chat / "llava" / "model" / "llava_arch.py")
    llava_llama = _load("llava.model.language_model.llava_llama",
                        chat / "llava" / "model" / "language_model" / "llava_llama.py")
    return types.SimpleNamespace(root=root, CTViT=ctvit.CTViT, constants=constants, conversation=conversation,
                                 mm_utils=mm_utils, build_vision_projector=projector.build_vision_projector,
                                 encode_script=encode, LlavaConfig=llava_llama.LlavaConfig,
                                 LlavaLlamaForCausalLM=llava_llama.LlavaLlamaForCausalLM)
