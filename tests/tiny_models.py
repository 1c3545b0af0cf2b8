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


# A Gemma-3-style chat template written for the tests (Gemma's turn format: BOS, then
# "<start_of_turn>user\n...<end_of_turn>\n" per turn, "model" for the assistant, text items trimmed, an image
# as <start_of_image>), for the tiny Gemma 3 below; a downloaded MedGemma folder brings its own.
GEMMA_CHAT = ("{{ bos_token }}{% for m in messages %}"
              "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n' }}"
              "{% if m['content'] is string %}{{ m['content'] | trim }}{% else %}{% for c in m['content'] %}"
              "{% if c['type'] == 'image' %}{{ '<start_of_image>' }}"
              "{% elif c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
              "{{ '<end_of_turn>\\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")
GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                  "<start_of_image>", "<end_of_image>", "<image_soft_token>")


def write_gemma_tokenizer(folder: Path):
    """A Gemma tokenizer made offline: the Gemma special tokens, then one token per printable ASCII character
    ("\u2581" for a space, as Gemma's normaliser writes it) and Gemma's byte-fallback tokens; BOS added when
    tokenising with special tokens, as Gemma's tokenizer does."""
    import string

    from transformers import GemmaTokenizer

    chars = ["\u2581", "\n", *(c for c in string.printable if c.strip())]
    tokens = [*GEMMA_SPECIALS, *chars, *(f"<0x{b:02X}>" for b in range(256))]
    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
             "image_token": "<image_soft_token>"}
    tokenizer = GemmaTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[],
                               add_bos_token=True, extra_special_tokens=named)
    tokenizer.add_special_tokens({"extra_special_tokens": ["<start_of_turn>", "<end_of_turn>"]},
                                 replace_extra_special_tokens=False)
    return tokenizer


def write_tiny_gemma3(folder: Path, *, image_size: int = 32, tokens_per_image: int = 4,
                      sliding_window: int = 512, config_sections: dict | None = None, seed: int = 0) -> Path:
    """A tiny random-weight Gemma 3 (``Gemma3ForConditionalGeneration``: SigLIP tower, Gemma 3 text model)
    with its ``Gemma3Processor`` (a ``Gemma3ImageProcessor`` at ``image_size`` and the chat template above),
    saved as a folder; ``config_sections`` (``preprocess``, ``prompt``, ``scope``) go into its config.json."""
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
    )

    tokenizer = write_gemma_tokenizer(folder)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in GEMMA_SPECIALS}
    config = Gemma3Config(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "head_dim": 8, "sliding_window": sliding_window, "max_position_embeddings": 4096,
                     "pad_token_id": ids["<pad>"], "bos_token_id": ids["<bos>"],
                     "eos_token_id": ids["<eos>"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": image_size, "patch_size": image_size // 4},
        mm_tokens_per_image=tokens_per_image, image_token_index=ids["<image_soft_token>"],
        boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"])
    for key, value in (config_sections or {}).items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    # transformers starts the projector's weight at zero: every image would give zero features, and nothing
    # the model writes would depend on the image
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.5)
    model.generation_config.eos_token_id = [ids["<eos>"], ids["<end_of_turn>"]]
    model.generation_config.pad_token_id = ids["<pad>"]
    model.save_pretrained(folder)
    images = Gemma3ImageProcessor(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=images, tokenizer=tokenizer, chat_template=GEMMA_CHAT,
                                image_seq_length=tokens_per_image)
    processor.save_pretrained(folder)
    return folder


def loaded_engine(folder, **load):
    """For a fixture, ``yield from loaded_engine(folder)``: an Engine that reads studies outside the
    model's scope (a tiny or phantom model has nothing to say about a real scan's scope), loaded from
    ``folder`` (None: the demo model) with ``load``'s options, shut down when the fixture ends."""
    from napari_radreport.engine import Engine

    engine = Engine()
    engine.allow_out_of_scope = True
    engine.load(folder, **load)
    yield engine
    engine.shutdown()
