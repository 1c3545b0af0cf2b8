"""The model a training run starts from: a saved model folder, or a recipe built fresh (with a tokenizer
trained on the manifest's texts when the recipe asks for one), optionally with pretrained text or vision
weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from napari_radreport.modeling.families import RadReportFamily
from napari_radreport.modeling.loading import LoadedModel

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0, 1, 2, 3


def prompt_texts() -> list[str]:
    """Every question the engine can ask, filled in, so the tokenizer learns them as whole pieces."""
    from napari_radreport.engine import prompts
    from napari_radreport.modeling import prompt_spec

    texts = []
    for modality in ("ct", "xray"):
        texts += [prompts.section_prompt(prompt_spec.DEFAULT_TASKS, s, modality) for s in prompts.SECTIONS]
    texts += [prompts.section_prompt(prompt_spec.DEFAULT_TASKS, "findings", "ct", r) for r in prompts.REGIONS]
    labels = (*prompt_spec.CT_RATE_LABELS, *prompt_spec.CHEXPERT_LABELS)
    texts += [prompts.diagnosis_prompt(prompt_spec.DEFAULT_TASKS, label) for label in labels]
    texts += [prompts.choice_prompt(prompt_spec.DEFAULT_TASKS, "Which?", ["a", "b", "c", "d"]), "Yes", "No"]
    return texts


def train_tokenizer(texts: Iterable[str], folder: str | Path, *, image_token: str, vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained here on ``texts`` (plus the engine's
    questions), saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator([*texts, *prompt_texts()], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.add_tokens([image_token], special_tokens=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_from_recipe(recipe, folder: str | Path, texts: Iterable[str], *, tiny: bool = False,
                      tokenizer_folder: str | Path | None = None) -> LoadedModel:
    """A fresh model of ``recipe`` with its tokenizer, saved to ``folder`` as a loadable model folder.

    The tokenizer comes from ``tokenizer_folder`` when given, else it is trained on ``texts`` when the
    recipe's ``train.tokenizer`` section says so (the demo model) or for a tiny build; real recipes take their
    LLM's tokenizer folder.
    """
    import torch
    from transformers import AutoTokenizer

    from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = recipe.train.get("tokenizer")
    if tokenizer_folder is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
        tokenizer.add_tokens([recipe.image_token], special_tokens=True)
        tokenizer.save_pretrained(str(folder))
    elif spec or tiny:  # a tiny build has no real language model whose tokenizer it could use
        tokenizer = train_tokenizer(texts, folder, image_token=recipe.image_token,
                                    vocab_size=int((spec or {}).get("vocab_size", 512)))
    else:
        raise ValueError(
            f"recipe {recipe.name} has no 'train.tokenizer' section: give the tokenizer folder of its "
            "language model (--tokenizer) or start from a model folder (--init)"
        )
    config = recipe.config(tiny=tiny)
    text = config.text_config
    text.vocab_size, text.bos_token_id = len(tokenizer), tokenizer.bos_token_id
    text.eos_token_id, text.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    config.image_token_id = tokenizer.convert_tokens_to_ids(recipe.image_token)
    model = RadReportForConditionalGeneration(config)
    with torch.no_grad():
        model.save_pretrained(str(folder))
    return LoadedModel(model, family=RadReportFamily.from_model(model, tokenizer))


def load_encoder_weights(model, folder: str | Path) -> None:
    """Put pretrained vision weights into ``model`` (anything with ``vision_tower`` and ``perceiver``): the
    encoder (``encoder.safetensors`` from ``--stage mae`` or ``--stage labels``, with
    ``perceiver.safetensors`` from the latter), or only the conv stem (``stem.safetensors`` from
    ``--stage candidates``)."""
    from safetensors.torch import load_file

    path, stem = Path(folder) / "encoder.safetensors", Path(folder) / "stem.safetensors"
    if not path.is_file():
        if stem.is_file():
            return _load_stem(model, stem)
        raise FileNotFoundError(
            f"{folder}: no encoder.safetensors (the output of --stage mae or --stage labels) "
            "and no stem.safetensors (--stage candidates)"
        )
    perceiver = Path(folder) / "perceiver.safetensors"
    if perceiver.is_file():
        try:
            model.perceiver.load_state_dict(load_file(str(perceiver)))
        except RuntimeError as exc:
            raise ValueError(
                f"{perceiver}: weights do not fit this model's perceiver ({_detail(exc)})"
            ) from None
    state = load_file(str(path))
    missing, unexpected = model.vision_tower.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("cls_token")]:
        raise ValueError(f"{path}: encoder weights do not fit this model's vision tower "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def _load_stem(model, path: Path) -> None:
    from safetensors.torch import load_file

    stem = conv_stem(model)
    if stem is None:
        raise ValueError(
            f"{path}: this model's vision tower has no conv stem (vision_config.conv_stem_channels)"
        )
    try:
        stem.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit this model's conv stem ({_detail(exc)})") from None


def conv_stem(model):
    """The conv stem of ``model``'s vision tower, or None (CLIP, or a ViT without one)."""
    return getattr(getattr(getattr(model, "vision_tower", None), "patch_embedding", None), "stem", None)


def _detail(exc: Exception) -> str:
    """The last line of torch's load_state_dict error, which names the mismatch."""
    return [line.strip() for line in str(exc).splitlines() if line.strip()][-1]
