"""One interface over the models a user brings: our checkpoints, M3D-LaMed folders, LLaVA-family models.

``load_model(folder)`` picks the folder's family (``modeling/families.py``) and returns a ``LoadedModel``
whose ``inputs(study, question)`` builds the model's inputs from a Study and whose ``generate`` returns the
new token ids. Local folders only; never ``trust_remote_code``; safetensors only unless ``allow_pickle``;
only weights that fit the model unless ``allow_partial`` (``LoadedModel.incomplete`` then says what did not).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_radreport.modeling.checkpoints import (
    CheckpointError,
    read_config,
    require_local_folder,
    weight_files,
    weight_progress,
)
from napari_radreport.modeling.families import LOCAL_ONLY, History, ModelFamily, family_of
from napari_radreport.paths import cache_dir

if TYPE_CHECKING:
    import torch

    from napari_radreport.io.study import Study
    from napari_radreport.modeling.processor import Preprocess


class LoadedModel:
    """A model and its family (``modeling/families.py``), which reads studies and prompts for it.

    ``model`` may be replaced (a peft wrapper) or dropped (unloading); the family keeps what was parsed at
    load. Built by ``load_model``, or around a model in memory with ``Family.from_model(model, tokenizer)``.
    ``incomplete``: what was wrong with the weights of a model loaded with ``allow_partial``, one line per
    kind (missing, unexpected, wrong shape); empty when they fit the model.
    """

    def __init__(self, model: Any, *, family: ModelFamily, incomplete: Sequence[str] = ()) -> None:
        self.model = model
        self.family = family
        self.incomplete = list(incomplete)

    @property
    def kind(self) -> str:
        """The family's name ("radreport", "image-text-to-text")."""
        return self.family.name

    @property
    def tokenizer(self) -> Any:
        return self.family.tokenizer

    @property
    def processor(self) -> Any:
        return self.family.processor

    @property
    def modality(self) -> str:
        return self.family.modality

    @property
    def preprocess(self) -> Preprocess | None:
        return self.family.preprocess

    def pixel_values(self, study: Study) -> torch.Tensor:
        """The image tensor for our models (what ``get_image_features`` encodes)."""
        return self.family.pixel_values(study)

    def n_images(self, study: Study) -> int:
        """How many images the prompt holds: one volume or stitched picture, or each radiograph."""
        return self.family.n_images(study)

    def prompt_ids(self, study: Study, question: str, history: History = ()) -> torch.Tensor:
        """(1, L) token ids of the prompt (for our models, the image placeholder expanded)."""
        return self.family.prompt_ids(study, question, history)

    def inputs(self, study: Study, question: str, history: History = ()) -> dict:
        """Everything ``model(...)`` / ``model.generate(...)`` needs for one prompt about a study."""
        return self.family.model_inputs(study, question, history)

    def generate(self, study: Study, question: str, **kwargs: Any) -> list[int]:
        """The new token ids of ``model.generate`` on one prompt about a study."""
        import torch

        inputs = self.inputs(study, question)
        with torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)
        return out[0, inputs["input_ids"].shape[1]:].tolist()


def _converted_m3d(folder: Path, allow_pickle: bool) -> Path:
    """The folder converted into the cache once per (folder, its config's mtime, the converter's version):
    a conversion made by an older converter (one that dropped the segmentation head) is made again."""
    from napari_radreport.modeling.m3d import CONVERTER_VERSION, convert_m3d

    mtime = os.stat(folder / "config.json").st_mtime_ns
    stamp = hashlib.sha1(str(folder.resolve()).encode() + f"{mtime}:{CONVERTER_VERSION}".encode())
    target = cache_dir() / "converted" / f"{folder.name}-{stamp.hexdigest()[:12]}"
    if not (target / "config.json").is_file():
        convert_m3d(folder, target, allow_pickle=allow_pickle)
    return target


def _not_ct_chat_parts(folder: Path) -> None:
    """A CheckpointError saying how to convert a folder of CT-CHAT's released parts (it loads converted)."""
    from napari_radreport.modeling.ct_chat import is_ct_chat_source

    if not (folder / "config.json").is_file() and is_ct_chat_source(folder):
        raise CheckpointError(f"{folder} holds CT-CHAT's parts; convert them into one model folder first: "
                              f"radreport convert ct-chat {folder} DST --allow-pickle")


def load_model(path: str | Path, *, allow_pickle: bool = False, allow_partial: bool = False,
               dtype: Any = None, device: str | None = None, quantization: str = "none",
               quantize_for: str = "cpu",
               on_weights: Callable[[int, int], None] | None = None) -> LoadedModel:
    """Load a local model folder: ours, an M3D-LaMed folder (converted once into a cache), or one of another
    family in ``families.FAMILIES`` (LLaVA-family image-text-to-text models).

    Weights that lack tensors the model needs, carry ones it does not have, or have tensors of the wrong shape
    are a CheckpointError naming the folder, the count of each kind and the first few tensors;
    ``allow_partial`` loads them anyway (the missing and wrong-shape tensors random) and records what was
    wrong in ``LoadedModel.incomplete``. ``on_weights(done, total)`` follows the tensors as transformers
    loads them (``checkpoints.weight_progress``). ``quantization`` "int8" / "int4" stores the Linear layers
    in 8 or 4 bits as they load, for running on ``quantize_for`` (``modeling/quantize_on_load.py``)."""
    from napari_radreport.modeling.m3d import is_m3d_folder

    folder = require_local_folder(path)
    if is_m3d_folder(folder):
        folder = _converted_m3d(folder, allow_pickle)
    _not_ct_chat_parts(folder)
    family_class = family_of(folder, read_config(folder))
    weight_files(folder, allow_pickle=allow_pickle)  # refuses pickles and damaged safetensors early
    pretrained = {**LOCAL_ONLY, "use_safetensors": not allow_pickle}
    if dtype is not None:
        pretrained["dtype"] = dtype
    if quantization != "none":
        from napari_radreport.modeling.quantize_on_load import on_load_config

        pretrained["quantization_config"] = on_load_config(quantization, quantize_for)
    with weight_progress(on_weights):
        model, family, incomplete = family_class.load(folder, pretrained, allow_partial=allow_partial)
    loaded = LoadedModel(model, family=family, incomplete=incomplete)
    if device is not None:
        loaded.model.to(device)
    loaded.model.eval()
    return loaded
