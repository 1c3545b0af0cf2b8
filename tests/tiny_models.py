"""Tiny random-weight model folders in our format (with a word-level tokenizer that knows the task words) and
in LLaVA's, and copies of a folder with another ``prompt`` section.

Random weights: the text they write is meaningless; the tests check the mechanics (streaming, caches,
stopping, batching, export), never the content. The builders live in ``napari_radreport.bench.random_model``
(the benchmarks use them at real sizes).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from napari_radreport.bench.random_model import (
    EXTRA_WORDS,  # noqa: F401 (tests import it from here)
    TINY_CT,
    TINY_XRAY,
    write_random_radreport,
    write_word_tokenizer,
)


def write_tokenizer(folder: Path, image_token: str):
    return write_word_tokenizer(folder, image_token)


def write_tiny_radreport(folder: Path, modality: str = "ct", seed: int = 0, layers: int = 2) -> Path:
    """A loadable model folder (config, safetensors, tokenizer) for CT volumes or radiograph sets."""
    size = TINY_CT if modality == "ct" else TINY_XRAY
    size = dataclasses.replace(size, text={**size.text, "num_hidden_layers": layers})
    return write_random_radreport(folder, size, seed)


CHAT = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %} ASSISTANT:{% endfor %}")


def write_tiny_llava(folder):
    """A tiny random-weight LLaVA folder (CLIP tower, Llama) with its processor and a plain chat template."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from m3d_reference import write_tiny_tokenizer

    write_tiny_tokenizer(folder, 100)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8,
                       "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "intermediate_size": 64, "projection_dim": 16},
        text_config={"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
                     "vocab_size": len(tokenizer), "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=16)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=CHAT)
    processor.save_pretrained(folder)
    return folder


def with_prompt(folder, target, **changes):
    """A copy of a model folder whose config's ``prompt`` section has ``changes``."""
    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    config["prompt"] = {**(config.get("prompt") or {}), **changes}
    (target / "config.json").write_text(json.dumps(config))
    return target
