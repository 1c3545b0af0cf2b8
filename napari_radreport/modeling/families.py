"""Model families: what each kind of model needs parsed once at load, and how it turns a study and a question
into the model's inputs.

A family is one class. ``matches(config)`` says whether a folder's config.json is one of its models; ``load``
builds the model and the family object from a local folder; the object holds the facts parsed then (tokenizer
or processor, preprocessing, modality, image token id, prompt spec, scope) and builds prompts and image inputs
the runner, which never asks which family it has. ``FAMILIES`` lists them in the order ``load_model`` tries
them: a new family is one more class, placed before the broad image-text-to-text one (a family in a module of
its own, as MedGemma's in ``medgemma.py``, is put there by ``register``). A family never holds the model
itself: adapters replace ``LoadedModel.model`` and unloading drops it.
``load`` reads weights only through ``checkpoints.from_pretrained_checked``: a folder whose weights do not fit
the model is refused unless ``allow_partial``, and then the notes it returns say what was wrong.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from napari_radreport.modeling.checkpoints import (
    CheckpointError,
    from_pretrained_checked,
    read_config,
    read_tokenizer,
)
from napari_radreport.modeling.prompt_spec import PromptSpec
from napari_radreport.modeling.scope import ModelScope

if TYPE_CHECKING:
    import torch

    from napari_radreport.io.study import Study
    from napari_radreport.modeling.processor import Preprocess

History = Sequence[tuple[str, str]]
LOCAL_ONLY = {"local_files_only": True, "trust_remote_code": False}  # every tokenizer and processor load
# configuration.VOLUME_VISION_TYPES, written here so that reading a config imports no transformers (a test
# checks the two agree)
VOLUME_TOWERS = ("radreport_vit3d", "radreport_ctvit")
# per-token ids a processor may give beside a prompt's input_ids (see ``token_types``)
TOKEN_TYPE_KEYS = ("token_type_ids", "mm_token_type_ids")


class ModelFamily(ABC):
    """One loaded model's facts, parsed once, and the inputs it takes."""

    name: ClassVar[str]  # stable and readable: LoadedModel.kind, ModelInfo.kind
    reads_prior: ClassVar[bool] = False  # compares a study with its prior (Study.extra["prior"])

    def __init__(self, *, tokenizer: Any, modality: str, image_token_id: int, prompt_spec: PromptSpec,
                 scope: ModelScope | None = None, processor: Any = None,
                 preprocess: Preprocess | None = None) -> None:
        self.tokenizer = tokenizer
        self.processor = processor  # the transformers processor, for families that use one
        # "ct" or "xray": what the model reads; a family that reads both (MedGemma) says "ct+xray", lists them
        # in ``scope.modalities`` and builds each study's inputs by its kind
        self.modality = modality
        self.image_token_id = image_token_id  # the placeholder the image's features replace
        self.prompt_spec = prompt_spec
        self.scope = scope or ModelScope.parse(None, modality)  # what the model was made for
        # how studies become pixels, for families that encode images apart (our Preprocess, or a family's own
        # settings with a ``signature``, which keys the runner's feature cache)
        self.preprocess = preprocess

    @classmethod
    @abstractmethod
    def matches(cls, config: dict) -> bool:
        """Whether a folder's config.json (as read) describes a model of this family."""

    @classmethod
    @abstractmethod
    def config_modality(cls, config: dict) -> str:
        """What a model of this family with this config.json reads: "ct" or "xray" (no weights needed)."""

    @classmethod
    def config_scope(cls, config: dict) -> ModelScope:
        """What a model of this family with this config.json was made for: its ``scope`` section, else its
        modality alone (no weights needed; a ValueError names a bad field)."""
        return ModelScope.parse(config.get("scope"), cls.config_modality(config))

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, pretrained: dict[str, Any], *,
             allow_partial: bool = False) -> tuple[Any, ModelFamily, list[str]]:
        """(model, family, notes) from a local folder; ``pretrained``: the model's ``from_pretrained``
        keywords. Weights that do not fit the model are a CheckpointError unless ``allow_partial``; ``notes``
        says what was wrong with them, one line per kind ([] for intact weights)."""

    @classmethod
    @abstractmethod
    def from_model(cls, model: Any, tokenizer: Any, processor: Any = None) -> ModelFamily:
        """The facts of a model in memory (loaded from a folder, or built fresh for training)."""

    @abstractmethod
    def build_prompt(self, study: Study, question: str, history: History = ()) -> tuple[list[int], dict]:
        """The prompt's token ids and the image inputs built with them ({} when ``image_inputs`` encodes)."""

    @abstractmethod
    def image_inputs(self, built: dict, features: Callable[[], torch.Tensor]) -> dict:
        """What the forward pass takes for the prompt's image: ``built`` by ``build_prompt``, or the encoded
        image from ``features()`` (the runner's per-study cache of ``get_image_features(pixel_values)``; a
        family that calls it implements ``pixel_values`` and sets ``preprocess``, whose signature keys it)."""

    @abstractmethod
    def model_inputs(self, study: Study, question: str, history: History = ()) -> dict:
        """Everything ``model(...)`` / ``model.generate(...)`` takes for one prompt about a study."""

    def token_inputs(self, ids: list[int]) -> dict:
        """Per-token inputs the forward pass takes beside ``ids`` when a prompt runs from its first token with
        its image (Gemma 3's ``token_type_ids``); {} for most families."""
        return {}

    def prompt_ids(self, study: Study, question: str, history: History = ()) -> torch.Tensor:
        """(1, L) token ids of the prompt."""
        import torch

        return torch.tensor([self.build_prompt(study, question, history)[0]])

    def pixel_values(self, study: Study) -> torch.Tensor:
        """The image tensor that ``get_image_features`` encodes."""
        raise NotImplementedError(f"{self.name} models take their processor's image inputs (model_inputs)")

    def n_images(self, study: Study) -> int:
        """How many images the prompt holds: one volume or stitched picture, or each radiograph."""
        from napari_radreport.modeling.processor import InputError, check_image_count

        if self.modality == "ct":
            if not study.is_volume:
                raise InputError(f"this model reads CT volumes; the study is a {study.kind}")
            return 1
        if study.kind != "xray_set":
            raise InputError(f"this model reads chest radiographs; the study is a {study.kind}")
        spec = self.preprocess
        check_image_count(study, spec.max_images if spec else 4)
        return len(study.images) if spec is not None and spec.stitch == "separate" else 1


class RadReportFamily(ModelFamily):
    """Our ``RadReportForConditionalGeneration`` (M3D-LaMed folders are converted into it): our processor
    makes the pixels, the runner caches their encoding, the prompt repeats the image token per feature."""

    name = "radreport"

    def __init__(self, *, image_token: str, num_image_tokens: int, **facts: Any) -> None:
        super().__init__(**facts)
        self.image_token, self.num_image_tokens = image_token, num_image_tokens

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "radreport"

    @classmethod
    def config_modality(cls, config: dict) -> str:
        return "ct" if (config.get("vision_config") or {}).get("model_type") in VOLUME_TOWERS else "xray"

    @classmethod
    def load(cls, folder: Path, pretrained: dict[str, Any], *,
             allow_partial: bool = False) -> tuple[Any, RadReportFamily, list[str]]:
        from transformers import AutoTokenizer

        from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

        model, notes = from_pretrained_checked(RadReportForConditionalGeneration, folder, pretrained,
                                               allow_partial=allow_partial)
        tokenizer = read_tokenizer(
            folder, lambda: AutoTokenizer.from_pretrained(str(folder), config=model.config, **LOCAL_ONLY))
        return model, cls.from_model(model, tokenizer), notes

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, processor: Any = None) -> RadReportFamily:
        from napari_radreport.modeling.processor import Preprocess

        config = model.config
        if not (config.preprocess or {}).get("target_shape"):
            raise CheckpointError("config.json has no preprocess.target_shape: the model cannot read a study")
        modality = cls.config_modality(config.to_dict())
        return cls(tokenizer=tokenizer, modality=modality, image_token_id=int(config.image_token_id),
                   prompt_spec=PromptSpec.parse(config.prompt, modality),
                   scope=ModelScope.parse(getattr(config, "scope", None), modality),
                   preprocess=Preprocess.from_recipe(config.preprocess), image_token=config.image_token,
                   num_image_tokens=int(model.num_image_tokens))

    def prompt_ids(self, study: Study, question: str, history: History = ()) -> torch.Tensor:
        """(1, L) token ids, the image placeholder expanded to the model's image tokens."""
        from napari_radreport.modeling.processor import prompt_ids

        return prompt_ids(self.tokenizer, question, image_token=self.image_token,
                          num_image_tokens=self.num_image_tokens, n_images=self.n_images(study),
                          chat_template=self.prompt_spec.chat_template, history=history)

    def build_prompt(self, study: Study, question: str, history: History = ()) -> tuple[list[int], dict]:
        return self.prompt_ids(study, question, history)[0].tolist(), {}

    def image_inputs(self, built: dict, features: Callable[[], torch.Tensor]) -> dict:
        return {"image_features": features()}

    def pixel_values(self, study: Study) -> torch.Tensor:
        from napari_radreport.modeling import processor as proc

        if self.modality == "ct":
            return proc.volume_to_pixels(study, self.preprocess)
        return proc.radiographs_to_pixels(study, self.preprocess)

    def model_inputs(self, study: Study, question: str, history: History = ()) -> dict:
        ids = self.prompt_ids(study, question, history)
        return {"input_ids": ids, "attention_mask": ids.new_ones(ids.shape),
                "pixel_values": self.pixel_values(study)}


def token_types(processor: Any) -> dict[str, bool]:
    """The per-token ids ``processor`` gives with a prompt, name -> whether they are each token's modality
    (transformers' ``create_mm_token_type_ids``: 1 at an image's tokens; Gemma 3's processor names them
    token_type_ids) rather than its text segment (PaliGemma's token_type_ids: 0 throughout a prompt)."""
    names = set(getattr(processor, "model_input_names", None) or ())
    kinds = {"token_type_ids": False} if "token_type_ids" in names else {}
    if getattr(processor, "return_mm_token_type_ids", False):
        kinds["mm_token_type_ids" if "mm_token_type_ids" in names else "token_type_ids"] = True
    return kinds


class ImageTextToTextFamily(ModelFamily):
    """LLaVA-family models, and any other that transformers' ``AutoModelForImageTextToText`` loads with its
    ``AutoProcessor``: the study's radiographs stitched into one picture of their files' own pixels, the
    model's own chat template, and the processor's image inputs built with the prompt (tokenised as
    transformers' ``apply_chat_template`` does: no second BOS after a template's own). Its per-token ids
    (``token_types``) are built by ``token_inputs`` for whichever ids run (a cached prefix, a prefix and a
    suffix), not kept from the whole prompt. The broadest family: keep it last in ``FAMILIES``."""

    name = "image-text-to-text"

    def __init__(self, **facts: Any) -> None:
        super().__init__(**facts)
        self.token_types = token_types(self.processor)

    @classmethod
    def matches(cls, config: dict) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        return config.get("model_type") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    @classmethod
    def config_modality(cls, config: dict) -> str:
        return "xray"

    @classmethod
    def load(cls, folder: Path, pretrained: dict[str, Any], *,
             allow_partial: bool = False) -> tuple[Any, ImageTextToTextFamily, list[str]]:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            model, notes = from_pretrained_checked(AutoModelForImageTextToText, folder, pretrained,
                                                   allow_partial=allow_partial)
        except CheckpointError:
            raise
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{folder}: not a model napari-radreport can load "
                                  f"({str(exc).splitlines()[0]})") from exc
        processor = read_tokenizer(folder, lambda: AutoProcessor.from_pretrained(str(folder), **LOCAL_ONLY),
                                   "tokenizer or processor")
        return model, cls.from_model(model, processor.tokenizer, processor), notes

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, processor: Any = None) -> ImageTextToTextFamily:
        config = model.config
        token = getattr(config, "image_token_id", None)
        token = getattr(config, "image_token_index", None) if token is None else token
        if token is None:
            raise CheckpointError(f"config.json ({config.model_type}) names no image token id")
        modality = cls.config_modality(config.to_dict())
        return cls(tokenizer=tokenizer, processor=processor, modality=modality, image_token_id=int(token),
                   prompt_spec=PromptSpec.parse(getattr(config, "prompt", None), modality),
                   scope=ModelScope.parse(getattr(config, "scope", None), modality))

    def model_inputs(self, study: Study, question: str, history: History = ()) -> dict:
        from napari_radreport.modeling.processor import stitched_picture

        image = stitched_picture(study)
        messages = []
        for i, (asked, answer) in enumerate([*history, (question, None)]):
            content = [{"type": "image", "image": image}] if i == 0 else []
            content.append({"type": "text", "text": asked})
            messages.append({"role": "user", "content": content})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return dict(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True, return_tensors="pt"))

    def build_prompt(self, study: Study, question: str, history: History = ()) -> tuple[list[int], dict]:
        import torch

        inputs = self.model_inputs(study, question, history)
        ids = inputs.pop("input_ids")[0].tolist()
        inputs.pop("attention_mask", None)
        given = {key: inputs.pop(key) for key in TOKEN_TYPE_KEYS if key in inputs}
        rebuilt = self.token_inputs(ids)
        if given.keys() != rebuilt.keys() or not all(torch.equal(given[k], rebuilt[k]) for k in given):
            names = ", ".join(sorted(given.keys() | rebuilt.keys()))
            raise CheckpointError(f"{type(self.processor).__name__} gives per-token ids ({names}) that "
                                  f"napari-radreport does not rebuild as it does")
        return ids, inputs

    def image_inputs(self, built: dict, features: Callable[[], torch.Tensor]) -> dict:
        return dict(built)

    def token_inputs(self, ids: list[int]) -> dict:
        """The processor's per-token ids (``token_types``) for ``ids``, by its own rule."""
        import torch

        return {name: torch.tensor(self.processor.create_mm_token_type_ids([ids]) if modality
                                   else [[0] * len(ids)])
                for name, modality in self.token_types.items()}


# tried in this order; ``register`` (see the end of this module) adds the families of other modules
FAMILIES: tuple[type[ModelFamily], ...] = (RadReportFamily, ImageTextToTextFamily)


def register(family: type[ModelFamily]) -> type[ModelFamily]:
    """Put ``family`` in ``FAMILIES`` just before the catch-all (a class decorator for a family that lives in
    a module of its own)."""
    global FAMILIES
    if family not in FAMILIES:
        FAMILIES = (*FAMILIES[:-1], family, FAMILIES[-1])
    return family


def family_for(config: dict) -> type[ModelFamily] | None:
    """The first family whose ``matches`` takes this config.json, or None."""
    return next((family for family in FAMILIES if family.matches(config)), None)


def family_of(folder: Path, config: dict) -> type[ModelFamily]:
    """The family of the model whose config.json ``config`` lies in ``folder``; a CheckpointError when none
    takes it."""
    family = family_for(config)
    if family is None:
        known = ", ".join(f.name for f in FAMILIES)
        raise CheckpointError(f"{folder}: not a model napari-radreport can load (model_type "
                              f"{config.get('model_type')!r} belongs to no known family: {known})")
    return family


def declared(folder: Path) -> tuple[str, ModelScope]:
    """(family name, scope) of the model in ``folder``, from one read of its config.json (no weights, no
    tokenizer). An M3D-LaMed folder is "m3d-lamed" (converted when first loaded) and reads CT (its conversion
    declares no more). A CheckpointError names a folder that holds no model napari-radreport loads."""
    from napari_radreport.modeling.m3d import M3D_TEXT_TYPES

    config = read_config(folder)
    if config.get("model_type") in M3D_TEXT_TYPES:
        return "m3d-lamed", ModelScope.parse(None, "ct")
    family = family_of(folder, config)
    return family.name, family.config_scope(config)


def declared_scope(folder: Path) -> ModelScope:
    """What the model in ``folder`` was made for (``declared``): what lets a study the model cannot read be
    refused before anything loads."""
    return declared(folder)[1]


# Families in modules of their own build on the classes above and register themselves before the catch-all;
# importing them here (whichever module is imported first) makes FAMILIES (RadReportFamily, MedGemmaFamily,
# ImageTextToTextFamily).
import napari_radreport.modeling.medgemma  # noqa: E402, F401
