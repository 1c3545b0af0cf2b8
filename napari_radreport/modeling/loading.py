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

from napari_radreport.modeling.checkpoints import CheckpointError, read_config, require_local_folder, weight_files

CONVERTED_CACHE = Path(os.environ.get("RADREPORT_CACHE", Path.home() / ".cache" / "napari-radreport")) / "converted"


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

    def inputs(self, study, question: str) -> dict:
        from napari_radreport.modeling import processor as proc

        if self.kind == "radreport":
            config = self.model.config
            spec = proc.Preprocess.from_recipe(config.preprocess or {})
            if self.modality == "ct":
                pixels, n_images = proc.volume_to_pixels(study, spec), 1
            else:
                pixels = proc.radiographs_to_pixels(study, spec)
                n_images = pixels.shape[0]
            ids = proc.prompt_ids(self.tokenizer, question, image_token=config.image_token,
                                  num_image_tokens=self.model.num_image_tokens, n_images=n_images,
                                  chat_template=bool((config.prompt or {}).get("chat_template")))
            return {"input_ids": ids, "attention_mask": ids.new_ones(ids.shape), "pixel_values": pixels}
        image = proc.stitched_picture(study)
        content = [{"type": "image"}, {"type": "text", "text": question}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
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
    target = CONVERTED_CACHE / f"{folder.name}-{stamp.hexdigest()[:12]}"
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
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
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
