"""MedGemma (Gemma 3 image-text-to-text; 1.0 and 1.5 4B): its family, and how a study becomes its images.

A CT follows Google's own recipe, the notebook ``high_dimensional_ct_hugging_face.ipynb`` of
google-health/medgemma: at most ``max_slices`` (85) axial slices, spread evenly along the body axis by the
notebook's index rule; each slice windowed three ways (-1024..1024, -135..215 and 0..80 HU), each window
scaled to 0..255, rounded and stacked as the R, G and B of one 8-bit picture; each picture encoded as JPEG
(the notebook's default; PNG on request) and read back; all of them inline in one user turn: an instruction,
each image followed by "SLICE n", then the question. Slices run as the Study holds them, superior to inferior
(docs/conventions.md): SLICE 1 is the most superior.

A radiograph goes to the processor as its file's own 8-bit pixels (``processor.own_pixels``: no window of this
project's; RGB conversion only; optionally padded to a square). A study with a prior (``with_prior``) shows
the prior radiographs first, then the current ones, each group after a short label (MedGemma 1.5's
longitudinal comparison).

The prompt goes through the folder's own chat template; each image marker is expanded here into the
processor's soft-token sequence (so a prompt is built without touching pixels) and the text is tokenised once:
one BOS. The runner encodes a study's images once (its feature cache) and hands the features to the model
(``mm_encoder_outputs``); ``token_inputs`` (the catch-all's: the processor's own rule) marks the image tokens
(``token_type_ids``), which Gemma 3 lets attend to each other both ways.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_radreport.modeling.checkpoints import CheckpointError, from_pretrained_checked, read_tokenizer
from napari_radreport.modeling.families import LOCAL_ONLY, History, ImageTextToTextFamily, register
from napari_radreport.modeling.prompt_spec import CHEXPERT_LABELS, CT_RATE_LABELS, PromptSpec
from napari_radreport.modeling.scope import ModelScope

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from napari_radreport.io.study import ImageData, Study

READS = ("ct", "xray")  # what a Gemma 3 model reads here (a config's scope section may narrow it)
MAX_SLICES = 85  # the notebook's MAX_SLICE
CT_WINDOWS = ((-1024.0, 1024.0), (-135.0, 215.0), (0.0, 80.0))  # R: wide, G: soft tissue, B: brain (HU)
SLICE_FORMATS = ("jpeg", "png")  # how the notebook may encode each slice inline ("jpeg" is its default)
PRIOR_KEY = "prior"  # Study.extra key of a radiograph set's prior study (``with_prior``)


@dataclass(frozen=True)
class MedGemmaPreprocess:
    """The config's ``preprocess`` section for a Gemma 3 folder: how studies become images and their text.

    Every field has the recipe's value as its default (models/medgemma-1.5-4b/recipe.json), so a folder as
    downloaded needs no section; ``parse`` refuses an unknown or ill-typed field, naming it.
    """

    max_slices: int = MAX_SLICES
    ct_windows: tuple[tuple[float, float], ...] = CT_WINDOWS
    slice_format: str = "jpeg"
    ct_instruction: str = ("The images below are axial slices of one CT scan, sampled evenly from its "
                           "superior to its inferior end; each is followed by its number.")
    slice_label: str = "SLICE {n}"
    pad_to_square: bool = False  # radiographs: padded with black to a square before the processor
    max_images: int = 4  # radiographs per study (and per prior)
    prior_label: str = "Prior chest radiograph:"
    current_label: str = "Current chest radiograph:"

    @classmethod
    def parse(cls, section: dict | None) -> MedGemmaPreprocess:
        """The settings of a ``preprocess`` dict; a ValueError names a bad field."""
        section = dict(section or {})
        unknown = sorted(set(section) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"preprocess has unknown field(s) {', '.join(unknown)} for a Gemma 3 model; "
                             f"known: {known}")
        if "ct_windows" in section:
            windows = section["ct_windows"]
            if (not isinstance(windows, (list, tuple)) or len(windows) != 3
                    or any(len(w) != 2 or not float(w[0]) < float(w[1]) for w in windows)):
                raise ValueError("preprocess.ct_windows must be three [low, high] HU pairs with low < high")
            section["ct_windows"] = tuple((float(lo), float(hi)) for lo, hi in windows)
        for name in ("max_slices", "max_images"):
            value = section.get(name, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"preprocess.{name} must be a positive integer, got {value!r}")
        for field in dataclasses.fields(cls):
            kind = type(field.default)
            if kind in (bool, str) and not isinstance(section.get(field.name, field.default), kind):
                raise ValueError(f"preprocess.{field.name} must be a {type(field.default).__name__}, "
                                 f"got {section[field.name]!r}")
        if section.get("slice_format", "jpeg") not in SLICE_FORMATS:
            raise ValueError(f"preprocess.slice_format must be {' or '.join(SLICE_FORMATS)}, "
                             f"got {section['slice_format']!r}")
        if "{n}" not in section.get("slice_label", "{n}"):
            raise ValueError("preprocess.slice_label must contain {n} (the slice's number)")
        return cls(**section)

    @property
    def signature(self) -> str:
        """A stable text key for the runner's cache of encoded studies."""
        return repr(sorted(dataclasses.asdict(self).items()))


# -- CT -----------------------------------------------------------------------------------------------
def sample_slices(count: int, max_slices: int = MAX_SLICES) -> list[int]:
    """The indices of the slices the CT recipe keeps out of ``count``: all of them up to ``max_slices``; else
    ``max_slices`` spread evenly, the i-th (i = 1..max_slices) at
    ``int(round(i / max_slices * (count - 1)))``, the notebook's rule (Python's round; the first slice is then
    never taken, the last always is)."""
    if count <= max_slices:
        return list(range(count))
    return [int(round(i / max_slices * (count - 1))) for i in range(1, max_slices + 1)]


def window_slices(slices: np.ndarray, windows: Sequence[tuple[float, float]] = CT_WINDOWS) -> np.ndarray:
    """(n, H, W) HU -> (n, H, W, 3) uint8: each window clipped, shifted to 0, divided by its width, times 255
    (float32), then rounded, one window per channel, as the notebook's ``norm`` and ``window`` do."""
    channels = []
    for low, high in windows:
        scaled = np.clip(slices, low, high).astype(np.float32)
        scaled -= np.float32(low)
        scaled /= np.float32(high - low)
        scaled *= np.float32(255.0)
        channels.append(scaled)
    return np.round(np.stack(channels, axis=-1), 0).astype(np.uint8)


def _finite_slices(slices: np.ndarray) -> np.ndarray:
    """NaN and -inf voxels set to the lowest finite value, +inf to the highest (the readers warn about them; a
    clip keeps NaN, and a cast of NaN to uint8 is undefined)."""
    if slices.dtype.kind != "f" or bool(np.isfinite(slices).all()):
        return slices
    finite = slices[np.isfinite(slices)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return np.nan_to_num(slices, nan=low, posinf=high, neginf=low)


def _inline(picture: np.ndarray, image_format: str) -> Image.Image:
    """An 8-bit RGB array as the model receives it inline: saved as ``image_format`` with Pillow's defaults
    (JPEG quality 75) and read back as transformers reads an inline image (EXIF orientation, then RGB)."""
    from PIL import Image, ImageOps

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=image_format)
    buffer.seek(0)
    return ImageOps.exif_transpose(Image.open(buffer)).convert("RGB")


def ct_slice_images(study: Study, prep: MedGemmaPreprocess) -> list[Image.Image]:
    """The CT recipe's pictures of a CT study: sampled slices (superior first), three HU windows as RGB, each
    encoded inline as ``prep.slice_format`` and read back."""
    from napari_radreport.modeling.processor import InputError

    array = study.array
    if array.ndim != 3:
        raise InputError(f"this model reads one 3-D CT volume; the study has shape {array.shape}")
    slices = _finite_slices(np.asarray(array[sample_slices(array.shape[0], prep.max_slices)]))
    return [_inline(picture, prep.slice_format) for picture in window_slices(slices, prep.ct_windows)]


# -- radiographs --------------------------------------------------------------------------------------
def square_padding(height: int, width: int) -> tuple[int, int, int]:
    """The square's side and the rows and columns ``pad_to_square`` puts before an image of this size."""
    side = max(height, width)
    return side, (side - height) // 2, (side - width) // 2


def pad_to_square(picture: np.ndarray) -> np.ndarray:
    """(H, W[, C]) padded with black to a square, the image centred (the odd pixel after it)."""
    height, width = picture.shape[:2]
    side, top, left = square_padding(height, width)
    pads = [(top, side - height - top), (left, side - width - left)] + [(0, 0)] * (picture.ndim - 2)
    return np.pad(picture, pads)


def radiograph_image(image: ImageData, prep: MedGemmaPreprocess) -> Image.Image:
    """One radiograph as the processor takes it: its file's own 8-bit pixels as RGB (padded to a square when
    ``prep.pad_to_square``)."""
    from PIL import Image

    from napari_radreport.modeling.processor import own_pixels

    pixels = own_pixels(image)
    if prep.pad_to_square:
        pixels = pad_to_square(pixels)
    return Image.fromarray(pixels).convert("RGB")


def with_prior(current: Study, prior: Study) -> Study:
    """``current`` (a radiograph set) with ``prior``, an earlier radiograph set of the same patient, to
    compare it with (MedGemma 1.5's longitudinal comparison): a copy of ``current`` that carries ``prior`` in
    ``extra["prior"]``. Its cache key names both studies, so answers about the pair are never mixed with
    answers about ``current`` alone. The two must be one patient's (``MixedPatients`` otherwise, as for the
    files of one study); a family that does not read priors refuses such a study (``reads_prior``)."""
    from napari_radreport.io.dicom_headers import check_one_patient, study_identities
    from napari_radreport.modeling.processor import InputError

    for role, study in (("current", current), ("prior", prior)):
        if study.kind != "xray_set":
            raise InputError(f"a longitudinal comparison takes two radiograph sets; the {role} study is a "
                             f"{study.kind}")
    check_one_patient(study_identities(current) + study_identities(prior), "the study and its prior")
    extra = {key: value for key, value in current.extra.items() if key != "cache_key"}
    extra[PRIOR_KEY] = prior
    paired = dataclasses.replace(current, extra=extra)
    extra["cache_key"] = f"{current.key}+prior:{prior.key}"
    return paired


# -- the family ---------------------------------------------------------------------------------------
@register
class MedGemmaFamily(ImageTextToTextFamily):
    """Gemma 3 folders (``Gemma3ForConditionalGeneration`` with its ``Gemma3Processor``): MedGemma 1.0, 1.5.
    Reads CT volumes and radiograph sets (``scope.modalities``; ``modality`` is "ct+xray" unless the config's
    scope section names one) and builds each study's inputs by its kind, as the module docstring says."""

    name = "medgemma"
    reads_prior = True

    def __init__(self, *, image_seq_length: int, **facts: Any) -> None:
        super().__init__(**facts)
        self.image_seq_length = image_seq_length  # soft tokens per image (256 for MedGemma)

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "gemma3"

    @classmethod
    def config_scope(cls, config: dict) -> ModelScope:
        section = config.get("scope")
        scope = ModelScope.parse(section, READS[0])
        return scope if (section or {}).get("modalities") else dataclasses.replace(scope, modalities=READS)

    @classmethod
    def config_modality(cls, config: dict) -> str:
        return "+".join(cls.config_scope(config).modalities)

    @classmethod
    def load(cls, folder: Path, pretrained: dict[str, Any], *,
             allow_partial: bool = False) -> tuple[Any, MedGemmaFamily, list[str]]:
        from transformers import AutoProcessor, Gemma3ForConditionalGeneration

        model, notes = from_pretrained_checked(Gemma3ForConditionalGeneration, folder, pretrained,
                                               allow_partial=allow_partial)
        processor = read_tokenizer(folder, lambda: AutoProcessor.from_pretrained(str(folder), **LOCAL_ONLY),
                                   "tokenizer or processor")
        return model, cls.from_model(model, processor.tokenizer, processor), notes

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, processor: Any = None) -> MedGemmaFamily:
        config = model.config
        if not hasattr(processor, "full_image_sequence") or not getattr(processor, "boi_token", None):
            raise CheckpointError(f"a Gemma 3 model needs its Gemma3Processor; the folder gives "
                                  f"{type(processor).__name__}")
        if getattr(processor.image_processor, "do_pan_and_scan", False):
            raise CheckpointError("the folder's image processor enables pan-and-scan, which MedGemma's "
                                  "recipes do not use; set do_pan_and_scan to false in its processor config")
        if processor.image_seq_length != config.mm_tokens_per_image:
            raise CheckpointError(f"the processor gives {processor.image_seq_length} tokens per image, the "
                                  f"model takes {config.mm_tokens_per_image}")
        raw = config.to_dict()
        scope = cls.config_scope(raw)
        modality = "+".join(scope.modalities)
        prompt = raw.get("prompt")
        spec = PromptSpec.parse(prompt, modality)
        if not (prompt or {}).get("labels"):  # a model that reads both is asked about both kinds of finding
            labels = [*(CT_RATE_LABELS if "ct" in scope.modalities else ()),
                      *(CHEXPERT_LABELS if "xray" in scope.modalities else ())]
            unique = {label.casefold(): label for label in reversed(labels)}  # the first spelling wins
            spec = dataclasses.replace(spec, labels=tuple(unique[key] for key in dict.fromkeys(
                label.casefold() for label in labels)))
        return cls(tokenizer=tokenizer, processor=processor, modality=modality,
                   image_token_id=int(config.image_token_id), prompt_spec=spec, scope=scope,
                   preprocess=MedGemmaPreprocess.parse(raw.get("preprocess")),
                   image_seq_length=int(config.mm_tokens_per_image))

    # -- a study's images -----------------------------------------------------------------------------
    def _radiograph_sets(self, study: Study) -> list[Study]:
        """The radiograph sets a prompt shows, in order: the prior (if any), then the study itself."""
        from napari_radreport.modeling.processor import check_image_count

        sets = [s for s in (study.extra.get(PRIOR_KEY), study) if s is not None]
        for one in sets:
            check_image_count(one, self.preprocess.max_images)
        return sets

    def _check_kind(self, study: Study) -> str:
        """"ct" or "xray" for a study this model reads; an InputError otherwise."""
        from napari_radreport.modeling.processor import InputError
        from napari_radreport.modeling.scope import study_modality

        kind = study_modality(study)
        if kind not in self.scope.modalities or kind not in READS:
            reads = " or ".join("CT volumes" if m == "ct" else "chest radiographs"
                                for m in self.scope.modalities)
            raise InputError(f"this model reads {reads}; the study is a {study.kind}")
        return kind

    def n_images(self, study: Study) -> int:
        if self._check_kind(study) == "ct":
            return len(sample_slices(study.array.shape[0], self.preprocess.max_slices))
        return sum(len(s.images) for s in self._radiograph_sets(study))

    def images(self, study: Study) -> list[Image.Image]:
        """A study's pictures in prompt order (CT slices, or the prior's then the study's radiographs)."""
        if self._check_kind(study) == "ct":
            return ct_slice_images(study, self.preprocess)
        return [radiograph_image(image, self.preprocess)
                for one in self._radiograph_sets(study) for image in one.images]

    def pixel_values(self, study: Study) -> torch.Tensor:
        """The processor's pixel values of the study's pictures (what ``get_image_features`` encodes)."""
        images = self.images(study)
        text = " ".join([self.processor.boi_token] * len(images))
        return self.processor(images=[images], text=[text], return_tensors="pt")["pixel_values"]

    # -- where the image tokens lie (grounding) -------------------------------------------------------
    def token_grid(self, study: Study):
        """Where each of the model's image tokens lies in ``study``: Gemma 3 pools each picture's patches into
        a square of tokens (``image_seq_length`` of them, row by row), each the mean of one cell of the
        picture the processor resized to its square. A CT: a ``grounding.slice_stack.SliceStackGrid`` (image
        n is sampled slice n, whole); radiographs: a ``grounding.radiographs.ViewGrid`` per radiograph of the
        study (a prior's images come first in the prompt and are not the study's)."""
        import math

        from napari_radreport.grounding.geometry import StudyGrid
        from napari_radreport.grounding.radiographs import ViewGrid
        from napari_radreport.grounding.slice_stack import SliceStackGrid

        side = math.isqrt(self.image_seq_length)
        if side * side != self.image_seq_length:
            raise ValueError(f"{self.image_seq_length} image tokens do not make a square")
        if self._check_kind(study) == "ct":
            slices = tuple(sample_slices(study.array.shape[0], self.preprocess.max_slices))
            return SliceStackGrid(slices, (len(slices), side, side), StudyGrid.of(study))
        first = sum(len(s.images) for s in self._radiograph_sets(study)[:-1])
        grids = []
        for k, image in enumerate(study.images):
            shape = tuple(int(v) for v in image.array.shape[-2:])
            square, top, left = square_padding(*shape)
            padded = self.preprocess.pad_to_square
            picture = np.array([square, square] if padded else shape, float)  # what the processor resizes
            padding = np.array([top, left] if padded else [0, 0], float)
            scale = side / picture  # tokens per radiograph pixel
            grids.append(ViewGrid(k, shape, first + k, (side, side), np.diag(scale),
                                  (padding + 0.5) * scale - 0.5))
        return grids

    # -- the prompt -----------------------------------------------------------------------------------
    def messages(self, study: Study, question: str, history: History = ()) -> list[dict]:
        """The chat; its first user turn holds the images (each ``{"type": "image"}``, in image order)."""
        prep = self.preprocess
        if self._check_kind(study) == "ct":
            content = [{"type": "text", "text": prep.ct_instruction}]
            for n in range(1, self.n_images(study) + 1):
                content += [{"type": "image"}, {"type": "text", "text": prep.slice_label.format(n=n)}]
        else:
            sets = self._radiograph_sets(study)
            labels = (prep.prior_label, prep.current_label) if len(sets) == 2 else ("",)
            content = []
            for label, one in zip(labels, sets):
                content += [{"type": "text", "text": label}] if label else []
                content += [{"type": "image"} for _ in one.images]
        messages = []
        for i, (asked, answer) in enumerate([*history, (question, None)]):
            text = [{"type": "text", "text": asked}]
            messages.append({"role": "user", "content": (content + text) if i == 0 else text})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return messages

    def prompt_text(self, study: Study, question: str, history: History = ()) -> str:
        """The chat template's text with each image expanded into the processor's soft-token sequence."""
        from napari_radreport.modeling.processor import InputError

        text = self.processor.apply_chat_template(self.messages(study, question, history),
                                                  add_generation_prompt=True, tokenize=False)
        boi, expected = self.processor.boi_token, self.n_images(study)
        if text.count(boi) != expected:
            raise InputError(f"the prompt holds {text.count(boi)} image markers ({boi}) for {expected} "
                             f"images; the question may not contain {boi}")
        return text.replace(boi, self.processor.full_image_sequence)

    def build_prompt(self, study: Study, question: str, history: History = ()) -> tuple[list[int], dict]:
        from napari_radreport.modeling.processor import InputError

        text = self.prompt_text(study, question, history)
        bos = self.tokenizer.bos_token
        # the template writes BOS itself: tokenising with special tokens would add a second one
        ids = self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
        found, expected = ids.count(self.image_token_id), self.n_images(study) * self.image_seq_length
        if found != expected:
            raise InputError(f"the tokenizer gave {found} image tokens instead of {expected}")
        return ids, {}

    def image_inputs(self, built: dict, features: Callable[[], torch.Tensor]) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features())}}

    def model_inputs(self, study: Study, question: str, history: History = ()) -> dict:
        import torch

        ids, _ = self.build_prompt(study, question, history)
        input_ids = torch.tensor([ids])
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                "pixel_values": self.pixel_values(study), **self.token_inputs(ids)}
