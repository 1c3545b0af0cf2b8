"""One interface over the models a user brings: our checkpoints, M3D-LaMed folders, LLaVA-family models.

``load_model(folder)`` returns a ``LoadedModel`` whose ``inputs(study, question)`` builds the model's
inputs from a Study and whose ``generate`` returns the new token ids. Local folders only; never
``trust_remote_code``; safetensors only unless ``allow_pickle``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_radreport.paths import cache_dir
from napari_radreport.modeling.checkpoints import CheckpointError, read_config, require_local_folder, weight_files



@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    kind: str  # "radreport" or "image-text-to-text"
    processor: Any = None  # transformers processor for image-text-to-text models

    @property
    def modality(self) -> str:
        if self.kind != "radreport":
            return "xray"
        return "ct" if self.model.config.vision_config.model_type == "radreport_vit3d" else "xray"

    @property
    def preprocess(self):
        from napari_radreport.modeling.processor import Preprocess

        return Preprocess.from_recipe(self.model.config.preprocess or {}) if self.kind == "radreport" else None

    def pixel_values(self, study):
        """The image tensor for our models (what ``get_image_features`` encodes)."""
        from napari_radreport.modeling import processor as proc

        spec = self.preprocess
        if self.modality == "ct":
            return proc.volume_to_pixels(study, spec)
        return proc.radiographs_to_pixels(study, spec)

    def n_images(self, study) -> int:
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

    def prompt_ids(self, study, question: str, history=()):
        """(1, L) token ids of our models' prompt; the image placeholder expanded."""
        from napari_radreport.modeling.processor import prompt_ids

        config = self.model.config
        return prompt_ids(self.tokenizer, question, image_token=config.image_token,
                          num_image_tokens=self.model.num_image_tokens, n_images=self.n_images(study),
                          chat_template=bool((config.prompt or {}).get("chat_template")), history=history)

    def inputs(self, study, question: str, history=()) -> dict:
        """Everything ``model(...)`` / ``model.generate(...)`` needs for one prompt about a study."""
        from napari_radreport.modeling import processor as proc

        if self.kind == "radreport":
            ids = self.prompt_ids(study, question, history)
            return {"input_ids": ids, "attention_mask": ids.new_ones(ids.shape), "pixel_values": self.pixel_values(study)}
        image = proc.stitched_picture(study)
        turns = [*history, (question, None)]
        messages = []
        for i, (asked, answer) in enumerate(turns):
            content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": asked}]
            messages.append({"role": "user", "content": content})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return dict(self.processor(images=image, text=text, return_tensors="pt"))

    def generate(self, study, question: str, **kwargs) -> list[int]:
        import torch

        inputs = self.inputs(study, question)
        with torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)
        return out[0, inputs["input_ids"].shape[1]:].tolist()


def _converted_m3d(folder: Path, allow_pickle: bool) -> Path:
    from napari_radreport.modeling.m3d import convert_m3d

    stamp = hashlib.sha1(str(folder.resolve()).encode() + str(os.stat(folder / "config.json").st_mtime_ns).encode())
    target = cache_dir() / "converted" / f"{folder.name}-{stamp.hexdigest()[:12]}"
    if not (target / "config.json").is_file():
        convert_m3d(folder, target, allow_pickle=allow_pickle)
    return target


def load_model(path: str | Path, *, allow_pickle: bool = False, dtype=None, device: str | None = None) -> LoadedModel:
    """Load a local model folder: ours, an M3D-LaMed folder (converted once into a cache), or a LLaVA-family one."""
    from transformers import AutoTokenizer

    from napari_radreport.modeling.m3d import is_m3d_folder
    from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

    folder = require_local_folder(path)
    if is_m3d_folder(folder):
        folder = _converted_m3d(folder, allow_pickle)
    config = read_config(folder)
    weight_files(folder, allow_pickle=allow_pickle)  # refuses pickles early, with the reason
    common = {"local_files_only": True, "trust_remote_code": False, "use_safetensors": not allow_pickle}
    if dtype is not None:
        common["dtype"] = dtype
    if config.get("model_type") == "radreport":
        model = RadReportForConditionalGeneration.from_pretrained(str(folder), **common)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), config=model.config, local_files_only=True,
                                                  trust_remote_code=False)
        loaded = LoadedModel(model=model, tokenizer=tokenizer, kind="radreport")
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            model = AutoModelForImageTextToText.from_pretrained(str(folder), **common)
            processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{folder}: not a model napari-radreport can load ({str(exc).splitlines()[0]})") from exc
        loaded = LoadedModel(model=model, tokenizer=processor.tokenizer, kind="image-text-to-text",
                             processor=processor)
    if device is not None:
        loaded.model.to(device)
    loaded.model.eval()
    return loaded
