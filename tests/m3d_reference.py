"""M3D-LaMed written from its published equations in plain torch, and tiny checkpoints in its format.

Used by the tests as the independent reference for our model and converter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

VIT = "model.vision_tower.vision_tower."


def reference_vit3d(sd: dict, pixels: torch.Tensor, patch: tuple, heads: int,
                    prefix: str = "") -> torch.Tensor:
    """M3D-CLIP ViT: rearrange + Linear, + position, CLS in front, pre-norm blocks with explicit softmax."""
    b, c, s0, s1, s2 = pixels.shape
    p1, p2, p3 = patch
    x = pixels.reshape(b, c, s0 // p1, p1, s1 // p2, p2, s2 // p3, p3)
    x = torch.einsum("bchpwqdr->bhwdpqrc", x).reshape(b, -1, p1 * p2 * p3 * c)
    x = (x @ sd[prefix + "patch_embedding.patch_embeddings.1.weight"].T
         + sd[prefix + "patch_embedding.patch_embeddings.1.bias"])
    x = x + sd[prefix + "patch_embedding.position_embeddings"]
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
    return x[:, 1:]


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
                              tokenizer=None) -> dict:
    """A tiny M3D-LaMed folder: released config keys, random weights under M3D's names (seg_* included).
    ``base_vocab`` (default: the released text model's) and ``tokenizer(folder, base_vocab)`` (default: a
    word-level tokenizer.json) stand in for another tokenizer."""
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
        "segmentation_module": "segvol", "seg_token_id": base_vocab + 3, "num_new_tokens": 4,
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
    state["model.seg_module.image_encoder.patch_embed.weight"] = torch.randn(8, 4)
    state["model.seg_projector.0.weight"] = torch.randn(32, 32)
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


def reference_generate(state: dict, text_type: str, ids: torch.Tensor, pixels: torch.Tensor, steps: int):
    """Logits of the prompt and greedy ids, M3D style: features overwrite positions 1..N, no cache."""
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
