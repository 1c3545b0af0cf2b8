"""Recipes: one JSON per supported model in ``models/<name>/recipe.json``, built at full or tiny size."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS_DIR = Path(os.environ.get("RADREPORT_MODELS", Path(__file__).resolve().parents[2] / "models"))


class RecipeError(ValueError):
    """A recipe that is missing or malformed; the message names the recipe and the field."""


@dataclass
class Recipe:
    name: str
    description: str
    modality: str  # "ct" or "xray"
    vision: dict[str, Any]
    perceiver: dict[str, Any]
    text: dict[str, Any]
    image_token: str
    image_token_id: int
    preprocess: dict[str, Any]
    prompt: dict[str, Any] = field(default_factory=dict)
    scope: dict[str, Any] = field(default_factory=dict)  # modeling/scope.py: what the model is made for
    added_tokens: list[str] = field(default_factory=list)
    lora: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def config(self, *, tiny: bool = False):
        """The RadReportConfig of this recipe; ``tiny`` swaps in the small sizes used by tests."""
        from napari_radreport.modeling.configuration import RadReportConfig

        vision, text, token_id = dict(self.vision), dict(self.text), self.image_token_id
        if tiny:
            if not self.tiny:
                raise RecipeError(f"recipe {self.name}: no 'tiny' section")
            vision.update(self.tiny.get("vision", {}))
            text = dict(self.tiny.get("text", text))
            token_id = self.tiny.get("image_token_id", token_id)
        preprocess = dict(self.preprocess)
        if tiny:  # the tiny encoder reads a smaller image: a CT volume is brought to its size
            preprocess.update(self.tiny.get("preprocess", {}))
            if self.modality == "ct" and "preprocess" not in self.tiny and "image_size" in vision:
                preprocess["target_shape"] = list(vision["image_size"])
        return RadReportConfig(vision_config=vision, perceiver_config=dict(self.perceiver), text_config=text,
                               image_token=self.image_token, image_token_id=token_id,
                               tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
                               preprocess=preprocess, prompt=dict(self.prompt),
                               scope=dict(self.scope) or None)

    def build(self, *, tiny: bool = False, device: str | None = None):
        """A randomly initialised model of this recipe (load real weights with from_pretrained instead)."""
        import torch

        from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

        config = self.config(tiny=tiny)
        if device is None:
            return RadReportForConditionalGeneration(config)
        with torch.device(device):
            return RadReportForConditionalGeneration(config)


REQUIRED = ("name", "description", "modality", "vision", "perceiver", "text", "image_token", "image_token_id",
            "preprocess")


def _family(path: Path) -> str:
    """The family a recipe.json names ("radreport" when it names none); "" when it cannot be read."""
    try:
        return str(json.loads(path.read_text()).get("family", "radreport"))
    except (OSError, ValueError, AttributeError):
        return ""


def available_recipes() -> list[str]:
    """The recipes that build this project's model (a folder of ``models/`` describing a model loaded as
    released, e.g. MedGemma, holds a recipe.json of another family and is not one)."""
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/recipe.json") if _family(p) in ("radreport", ""))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe by name (a folder of ``models/``) or by the path of a recipe.json or its folder."""
    path = Path(name_or_path)
    if not path.exists():
        path = MODELS_DIR / str(name_or_path)
    if path.is_dir():
        path = path / "recipe.json"
    if not path.is_file():
        raise RecipeError(
            f"no recipe {name_or_path!r}; available: {', '.join(available_recipes()) or 'none'}"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecipeError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if data.get("family", "radreport") != "radreport":
        raise RecipeError(f"{path}: describes a {data['family']} model, loaded as released (not built from a "
                          f"recipe); see {path.parent / 'README.md'}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise RecipeError(f"{path}: missing field(s) {', '.join(missing)}")
    known = set(Recipe.__dataclass_fields__) - {"path"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"{path}: unknown field(s) {', '.join(unknown)}")
    if data["modality"] not in ("ct", "xray"):
        raise RecipeError(f"{path}: modality must be 'ct' or 'xray', got {data['modality']!r}")
    return Recipe(**data, path=path)
