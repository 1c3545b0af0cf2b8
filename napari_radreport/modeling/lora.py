"""Named LoRA adapters (peft) on the language model: findings, impression, vqa, ... switched at inference.

LoRA touches only the language model's attention and MLP projections unless a recipe widens
``target_modules``; a recipe that trains the perceiver saves it with the adapter (``modules_to_save``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Attention and MLP projections of Llama, Mistral, Qwen2 (q/k/v/o, gate/up/down) and Phi-3 (qkv, gate_up).
LANGUAGE_MODEL_TARGETS = (
    r"language_model\..*\.(q_proj|k_proj|v_proj|o_proj|qkv_proj|gate_proj|up_proj|down_proj|gate_up_proj)"
)


def lora_config(
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.1,
    target_modules: str | list[str] = LANGUAGE_MODEL_TARGETS,
    train_perceiver: bool = False,
    random_init: bool = False,
    modules_to_save: list[str] | None = None,
):
    """A peft LoraConfig; defaults are E3D-GPT's (r 16, alpha 32, dropout 0.1) on the language model only."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save or (["perceiver"] if train_perceiver else None),
        init_lora_weights=not random_init,
        bias="none",
    )


def add_adapter(model, name: str, config=None):
    """Wrap ``model`` with a first adapter, or add another named adapter to a PeftModel."""
    from peft import PeftModel, get_peft_model

    config = config if config is not None else lora_config()
    if isinstance(model, PeftModel):
        model.add_adapter(name, config)
        return model
    return get_peft_model(model, config, adapter_name=name)


def load_adapter(model, path: str | Path, name: str, *, allow_pickle: bool = False):
    """Load a saved adapter for inference (it stays frozen) without reloading the base model. An adapter
    whose weights are only a pickle (``adapter_model.bin``) is a CheckpointError naming it unless
    ``allow_pickle``: unpickling runs whatever code the file holds."""
    from peft import PeftModel

    from napari_radreport.modeling.checkpoints import CheckpointError, require_local_folder

    folder = require_local_folder(path)
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if not (folder / "adapter_model.safetensors").is_file() and pickles and not allow_pickle:
        raise CheckpointError(f"{folder}: the adapter's weights are a pickle ({', '.join(pickles)}), which "
                              "can run code when read; save it as adapter_model.safetensors, or pass "
                              "--allow-pickle if you trust its source")
    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)


def use_adapter(model, name: str) -> None:
    """Activate adapter ``name`` for inference (``inference_mode`` keeps it frozen)."""
    if name not in model.peft_config:
        raise KeyError(f"no adapter named {name!r}; loaded: {', '.join(model.peft_config)}")
    model.set_adapter(name, inference_mode=True)


@contextmanager
def without_adapters(model) -> Iterator[None]:
    """Run the base model; the active adapter stays frozen afterwards (peft's own context unfreezes it)."""
    active = model.active_adapter
    with model.disable_adapter():
        yield
    use_adapter(model, active)


def merged(model, name: str):
    """The base model with adapter ``name`` merged into its weights (for export)."""
    use_adapter(model, name)
    return model.merge_and_unload(adapter_names=[name])
