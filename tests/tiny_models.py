"""Tiny random-weight model folders in our format, with a word-level tokenizer that knows the task words.

Random weights: the text they write is meaningless; the tests check the mechanics (streaming, caches,
stopping, batching, export), never the content.
"""

from __future__ import annotations

import re
from pathlib import Path

from napari_radreport.engine import prompts

EXTRA_WORDS = ("Yes No yes no A B C D There is a no the left right lung nodule pleural effusion heart normal size "
               "mild small large findings impression unremarkable chest abdomen pelvis is present absent")


def _words() -> list[str]:
    text = " ".join([*prompts.DEFAULT_TASKS.values(), *prompts.MODALITY_WORDS.values(), *prompts.REGIONS,
                     *prompts.CT_RATE_LABELS, *prompts.CHEXPERT_LABELS, EXTRA_WORDS]).lower() + " " + EXTRA_WORDS
    found = re.findall(r"\w+|[^\w\s]+", text.replace("{", " ").replace("}", " "))
    return list(dict.fromkeys(found))


def write_tokenizer(folder: Path, image_token: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for word in _words():
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.add_tokens([image_token], special_tokens=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def write_tiny_radreport(folder: Path, modality: str = "ct", seed: int = 0, layers: int = 2) -> Path:
    """A loadable model folder (config, safetensors, tokenizer) for CT volumes or radiograph sets."""
    import torch

    from napari_radreport.modeling import RadReportConfig, RadReportForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image_token = "<im_patch>"
    tokenizer = write_tokenizer(folder, image_token)
    text = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(tokenizer), "bos_token_id": 1,
            "eos_token_id": 2, "pad_token_id": 0, "max_position_embeddings": 2048}
    if modality == "ct":
        vision = {"model_type": "radreport_vit3d", "image_size": [8, 64, 64], "patch_size": [4, 16, 16],
                  "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
        preprocess = {"target_shape": [8, 64, 64], "intensity": "hu_window", "hu_window": [-1000, 1000]}
        perceiver = {"perceiver_type": "spp"}
    else:
        vision = {"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8, "hidden_size": 32,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "projection_dim": 16,
                  "num_channels": 3}
        preprocess = {"target_shape": [32, 32], "stitch": "horizontal", "max_images": 4, "channels": 3,
                      "intensity": "clip_normalize"}
        perceiver = {"perceiver_type": "mlp2x"}
    config = RadReportConfig(vision_config=vision, perceiver_config=perceiver, text_config=text,
                             image_token=image_token, image_token_id=tokenizer.convert_tokens_to_ids(image_token),
                             preprocess=preprocess, prompt={"chat_template": False})
    torch.manual_seed(seed)
    RadReportForConditionalGeneration(config).save_pretrained(str(folder))
    return folder
