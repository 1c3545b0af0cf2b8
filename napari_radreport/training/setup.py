"""Everything a run needs before its first step: the model with the stage's trainable
parts, and the datasets."""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_radreport.data.manifest import ManifestRecord, iter_texts
from napari_radreport.training.config import TrainConfig

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja")


@dataclass
class RunParts:
    objective: Any  # an nn.Module whose forward returns the loss
    train_data: Any
    eval_data: Any
    loaded: Any = None  # LoadedModel (report stages)
    trainable: int = 0
    collate: Any = None  # items -> batch dict, where the trainer's own (pixels only, or texts) does not fit


def _copy_base(source: Path, out: Path) -> None:
    """Make ``out`` a loadable model folder with ``source``'s base weights (stage 2 adds
    adapters beside them)."""
    if source.resolve() == out.resolve():
        return
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and (path.name in MODEL_FILES or path.suffix == ".safetensors"):
            shutil.copy2(path, out / path.name)


def report_model(config: TrainConfig, records: list[ManifestRecord], out: Path, *, init: Path | None, recipe,
                 tiny: bool, tokenizer: Path | None, encoder: Path | None, resume: bool):
    """The LoadedModel a stage 1 / stage 2 run trains, with only the stage's parts trainable."""
    import torch

    from napari_radreport.modeling.loading import load_model
    from napari_radreport.modeling.lora import add_adapter, lora_config
    from napari_radreport.training.build import build_from_recipe, load_encoder_weights
    from napari_radreport.training.objectives import set_trainable

    if init is not None:
        loaded = load_model(init, dtype=torch.float32)
        if config.stage == "stage2":
            _copy_base(Path(init), out)
    elif resume and (out / "config.json").is_file():
        loaded = load_model(out, dtype=torch.float32)  # the checkpoint replaces these weights
    elif recipe is not None:
        loaded = build_from_recipe(recipe, out, iter_texts(records), tiny=tiny, tokenizer_folder=tokenizer)
    else:
        raise ValueError("give a recipe (--recipe) or a model folder to start from (--init)")
    model = loaded.model
    if encoder is not None:
        load_encoder_weights(model, encoder)
    model.train()
    if config.stage == "stage1":
        set_trainable(model, config.modules_to_train())
        trainable = freeze_stem(model, config)
    else:
        lora = dict(config.lora)
        set_trainable(model, [])
        peft_config = lora_config(r=int(lora.get("r", 16)), alpha=int(lora.get("alpha", 32)),
                                  dropout=float(lora.get("dropout", 0.1)),
                                  modules_to_save=config.modules_to_train())
        model = add_adapter(model, config.adapter, peft_config)
        model.train()
        freeze_stem(model.get_base_model() if hasattr(model, "get_base_model") else model, config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        loaded.model = model
    return loaded, trainable


def build_parts(config: TrainConfig, train: list[ManifestRecord], val: list[ManifestRecord], out: Path, *,
                init: Path | None, recipe, tiny: bool, tokenizer: Path | None, encoder: Path | None,
                resume: bool) -> RunParts:
    from napari_radreport.training.data import StudyTextDataset
    from napari_radreport.training.objectives import ReportObjective

    if config.stage in ("mae", "labels", "candidates"):
        return encoder_parts(config, train, val, recipe, tiny, encoder)
    if config.stage == "grounding":
        return grounding_parts(config, train, val, out, init)
    loaded, trainable = report_model(config, train, out, init=init, recipe=recipe, tiny=tiny,
                                     tokenizer=tokenizer, encoder=encoder, resume=resume)
    kwargs = {"texts_per_image": config.texts_per_image, "seed": config.seed, "max_length": config.max_length}
    train_data = StudyTextDataset(train, loaded, config.tasks, **kwargs)
    eval_data = (StudyTextDataset(val, loaded, config.tasks, **{**kwargs, "texts_per_image": 64})
                 if val else None)
    return RunParts(ReportObjective(loaded.model), train_data, eval_data, loaded=loaded, trainable=trainable)


def freeze_stem(model, config: TrainConfig) -> int:
    """With ``freeze_conv_stem``, stop training the vision tower's conv stem; returns the
    trainable parameters."""
    from napari_radreport.training.build import conv_stem

    stem = conv_stem(model)
    if config.freeze_conv_stem:
        if stem is None:
            raise ValueError("freeze_conv_stem: this model's vision tower has no conv stem")
        stem.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def encoder_parts(config: TrainConfig, train: list[ManifestRecord], val: list[ManifestRecord], recipe,
                  tiny: bool, encoder: Path | None = None) -> RunParts:
    """The recipe's 3-D encoder for MAE, label or candidate pretraining: fresh, or from
    ``encoder`` (labels)."""
    from napari_radreport.modeling.processor import Preprocess, volume_to_pixels
    from napari_radreport.training.data import StudyImages
    from napari_radreport.training.objectives import MAEObjective

    name = {"mae": "MAE pretraining", "labels": "label pretraining"}.get(
        config.stage, "candidate pretraining")
    if recipe is None:
        raise ValueError(f"{name} builds the recipe's encoder: give --recipe")
    model_config = recipe.config(tiny=tiny)
    if model_config.vision_config.model_type != "radreport_vit3d":
        raise ValueError(f"recipe {recipe.name}: {name} is for the 3-D ViT, not a 2-D vision tower")
    spec = Preprocess.from_recipe(model_config.preprocess)
    to_pixels = functools.partial(volume_to_pixels, spec=spec)
    train_images, val_images = StudyImages(train, to_pixels), StudyImages(val, to_pixels)
    if encoder is not None and config.stage != "labels":
        raise ValueError(f"--encoder: {name} starts from fresh weights "
                         "(only --stage labels and report runs take it)")
    if config.stage == "candidates":
        return candidate_parts(config, train, val, model_config, spec, train_images, val_images)
    if config.stage == "labels":
        from napari_radreport.training.labels import (
            LabelClassifier,
            LabelObjective,
            StudyLabels,
            collate_labels,
            label_names,
        )

        names = label_names(recipe, train)
        classifier = LabelClassifier(model_config, len(names))
        if encoder is not None:
            from napari_radreport.training.build import load_encoder_weights

            load_encoder_weights(classifier, encoder)
        classifier.train()
        return RunParts(LabelObjective(classifier), StudyLabels(train, train_images, names),
                        StudyLabels(val, val_images, names), trainable=freeze_stem(classifier, config),
                        collate=collate_labels)
    from napari_radreport.training.mae import MaskedAutoencoder3D

    mae = MaskedAutoencoder3D(model_config.vision_config, config.mae_decoder, config.mae_mask_ratio)
    mae.train()
    return RunParts(MAEObjective(mae), train_images, val_images,
                    trainable=sum(p.numel() for p in mae.parameters()))


def candidate_parts(config: TrainConfig, train: list[ManifestRecord], val: list[ManifestRecord], model_config,
                    spec, train_images, val_images) -> RunParts:
    """The conv stem and its 1x1 head, with patches around the records' positions (training/candidates.py)."""
    from napari_radreport.data.studies import read_record_study
    from napari_radreport.modeling.processor import patient_to_pixel_index
    from napari_radreport.training.candidates import (
        CandidateDetector,
        CandidateObjective,
        StudyCandidates,
        candidate_names,
        collate_candidates,
    )

    def index_in(records):
        return lambda i, position: patient_to_pixel_index(read_record_study(records[i]), spec, position)

    names = candidate_names(config.candidate_labels, train)
    detector = CandidateDetector(model_config.vision_config, len(names))
    detector.train()
    kwargs = {"patch": config.candidate_patch, "jitter": config.candidate_jitter, "seed": config.seed}
    train_data = StudyCandidates(train, train_images, names, index_in(train), **kwargs)
    usable = all(any(r.labels.get(n) == 1 and r.positions.get(n) for r in val) for n in names)
    eval_data = StudyCandidates(val, val_images, names, index_in(val), **kwargs) if usable else None
    return RunParts(CandidateObjective(detector), train_data, eval_data,
                    trainable=sum(p.numel() for p in detector.parameters()), collate=collate_candidates)


def grounding_parts(config: TrainConfig, train: list[ManifestRecord], val: list[ManifestRecord], out: Path,
                    init: Path | None) -> RunParts:
    """The ``--init`` model, frozen, with a grounding head (added when it has none) as the only part
    trained."""
    import torch

    from napari_radreport.modeling.grounding_head import GroundingHead, stem_dim
    from napari_radreport.modeling.loading import load_model
    from napari_radreport.training.grounding import GroundingExamples, GroundingObjective, collate_grounding

    if init is None:
        raise ValueError("--stage grounding trains a grounding head on a model: give --init MODEL_FOLDER")
    loaded = load_model(init, dtype=torch.float32)
    model = loaded.model
    if loaded.family.name != "radreport" or model.config.vision_config.model_type != "radreport_vit3d":
        raise ValueError(f"--stage grounding: {Path(init).name} is not a 3-D ViT model of this project")
    if model.grounding_head is None:
        model.config.grounding_head = {"channels": int(config.grounding_channels),
                                       "kind": config.grounding_kind}
        vision = model.config.vision_config
        model.grounding_head = GroundingHead(model.config.grounding_head, model.vision_tower.output_dim,
                                             model.vision_tower.grid, stem_dim(vision),
                                             model.config.text_config.hidden_size)
    _copy_base(Path(init), out)
    objective = GroundingObjective(model)
    objective.train()
    train_data = GroundingExamples(train, loaded, seed=config.seed)
    model.config.grounding_head["findings"] = train_data.findings()  # what it learns to find, saved with it
    eval_data = GroundingExamples(val, loaded, seed=config.seed) if val else None
    return RunParts(objective, train_data, eval_data, loaded=loaded,
                    trainable=sum(p.numel() for p in model.grounding_head.parameters()),
                    collate=functools.partial(collate_grounding, pad_id=loaded.tokenizer.pad_token_id or 0))
