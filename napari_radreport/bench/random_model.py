"""Random-weight model folders in our format, for benchmarks and tests: sizes are real, weights are not.

The text such a model writes is meaningless; it is there to measure speed and memory (benchmarks) or to
exercise the mechanics (tests). A word-level tokenizer knows the task words, then ``w<i>`` fillers up to
the vocabulary size, so every token id decodes to a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_radreport.engine import prompts
from napari_radreport.modeling import prompt_spec

IMAGE_TOKEN = "<im_patch>"
EXTRA_WORDS = (
    "Yes No yes no A B C D There is a no the left right lung nodule pleural effusion heart normal size "
    "mild small large findings impression unremarkable chest abdomen pelvis is present absent")


def prompt_words() -> list[str]:
    """Every word and punctuation mark of the task prompts (not segmentation's or boxes': these random models
    have no segmentation head and no box tokens), labels and a few answer words, in a fixed order."""
    asked_only_of_some = (*prompt_spec.SEGMENTATION_TASKS, *prompt_spec.BOX_TASKS)
    tasks = [q for task, q in prompt_spec.DEFAULT_TASKS.items() if task not in asked_only_of_some]
    text = " ".join([*tasks, *prompts.MODALITY_WORDS.values(), *prompts.REGIONS,
                     *prompt_spec.CT_RATE_LABELS, *prompt_spec.CHEXPERT_LABELS,
                     EXTRA_WORDS]).lower() + " " + EXTRA_WORDS
    found = re.findall(r"\w+|[^\w\s]+", text.replace("{", " ").replace("}", " "))
    return list(dict.fromkeys(found))


def write_word_tokenizer(folder: Path, image_token: str = IMAGE_TOKEN, vocab_size: int | None = None):
    """A word-level tokenizer (pad 0, BOS 1, EOS 2, unk 3, the prompt words, fillers), image token last."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for word in prompt_words():
        vocab.setdefault(word, len(vocab))
    filler = 0
    while vocab_size is not None and len(vocab) < vocab_size - 1:  # the image token takes the last id
        vocab.setdefault(f"w{filler}", len(vocab))
        filler += 1
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.add_tokens([image_token], special_tokens=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


@dataclass
class ModelSize:
    """The parts of a RadReportConfig that set a model's size (the vocabulary comes from the tokenizer)."""

    vision: dict[str, Any]
    text: dict[str, Any]
    perceiver: dict[str, Any]
    preprocess: dict[str, Any]
    vocab_size: int | None = None  # None: just the prompt words
    prompt: dict[str, Any] = field(default_factory=lambda: {"chat_template": False})


_TINY_TEXT = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 2048}

TINY_CT = ModelSize(
    vision={"model_type": "radreport_vit3d", "image_size": [8, 64, 64], "patch_size": [4, 16, 16],
            "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
    text={**_TINY_TEXT, "num_hidden_layers": 2},
    perceiver={"perceiver_type": "spp"},
    preprocess={"target_shape": [8, 64, 64], "intensity": "hu_window", "hu_window": [-1000, 1000]},
)
TINY_XRAY = ModelSize(
    vision={"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "projection_dim": 16,
            "num_channels": 3},
    text={**_TINY_TEXT, "num_hidden_layers": 2},
    perceiver={"perceiver_type": "mlp2x"},
    preprocess={"target_shape": [32, 32], "stitch": "horizontal", "max_images": 4, "channels": 3,
                "intensity": "clip_normalize"},
)
# M3D-LaMed's vision tower and projector as released (ViT-B, 2048 patches pooled to 256 image tokens, its
# preprocessing) in front of a ~0.17 B-parameter Llama (width 1024, 8 layers, 32k vocabulary).
M3D_VISION_SMALL_LLAMA = ModelSize(
    vision={"model_type": "radreport_vit3d", "image_size": [32, 256, 256], "patch_size": [4, 16, 16],
            "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
            "qkv_bias": False},
    text={"model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
          "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 4096},
    perceiver={"perceiver_type": "spp", "pooling_size": 2, "projector_depth": 2},
    preprocess={"target_shape": [32, 256, 256], "intensity": "minmax", "resize": "resize"},
    vocab_size=32000,
)
# The same layout, small enough for the CI variant: 512 patches pooled to 64 image tokens.
QUICK = ModelSize(
    vision={"model_type": "radreport_vit3d", "image_size": [32, 128, 128], "patch_size": [4, 16, 16],
            "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512},
    text={"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
          "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 2048},
    perceiver={"perceiver_type": "spp", "pooling_size": 2, "projector_depth": 2},
    preprocess={"target_shape": [32, 128, 128], "intensity": "minmax", "resize": "resize"},
    vocab_size=4096,
)


def write_random_radreport(folder: Path, size: ModelSize, seed: int = 0, *, only_words: bool = False) -> Path:
    """Save a random-weight model of ``size`` with its tokenizer into ``folder``.

    ``only_words`` zeroes the output rows of EOS, padding, BOS, unknown and the image token, so greedy
    decoding never picks them (their logit is 0 while the largest random logit is far above): a benchmark
    then decodes exactly the tokens it asks for, and ``model.generate`` (which masks nothing) picks the
    same tokens as our decoding loop (which never answers with those tokens).
    """
    import torch

    from napari_radreport.modeling import RadReportConfig, RadReportForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = write_word_tokenizer(folder, IMAGE_TOKEN, size.vocab_size)
    text = {**size.text, "vocab_size": len(tokenizer),
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    config = RadReportConfig(vision_config=dict(size.vision), perceiver_config=dict(size.perceiver),
                             text_config=text, image_token=IMAGE_TOKEN,
                             image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                             preprocess=dict(size.preprocess), prompt=dict(size.prompt))
    torch.manual_seed(seed)
    model = RadReportForConditionalGeneration(config)
    if only_words:
        silent = [0, 1, 2, tokenizer.unk_token_id, config.image_token_id]
        with torch.no_grad():
            model.get_output_embeddings().weight[silent] = 0.0
    model.save_pretrained(str(folder))
    return folder
