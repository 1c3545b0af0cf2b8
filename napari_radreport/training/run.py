"""One training run from start to saved result: what ``radreport train`` calls (in each launched process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_radreport.training.config import TrainConfig


def save_result(trainer, config: TrainConfig, out: Path) -> list[Path]:
    """Stage 1 and grounding: the whole model folder; stage 2: ``adapters/<name>``; MAE:
    ``encoder.safetensors``; labels: that and ``perceiver.safetensors``; candidates: ``stem.safetensors``."""
    acc = trainer.accelerator
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return []
    objective = acc.unwrap_model(trainer.objective)
    if config.stage in ("mae", "labels", "candidates"):
        from safetensors.torch import save_file

        model = objective.model
        parts = {
            "mae": lambda: {"encoder": model.encoder},
            "candidates": lambda: {"stem": model.stem},
            "labels": lambda: {"encoder": model.vision_tower, "perceiver": model.perceiver},
        }[config.stage]()
        saved = []
        for name, module in parts.items():
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, str(out / f"{name}.safetensors"))
            saved.append(out / f"{name}.safetensors")
        return saved
    loaded = trainer.parts.loaded
    if config.stage in ("stage1", "grounding"):
        objective.model.save_pretrained(str(out))
        loaded.tokenizer.save_pretrained(str(out))
        return [out]
    target = out / "adapters" / config.adapter
    if config.adapter == "default":
        objective.model.save_pretrained(str(target), selected_adapters=["default"])
    else:  # peft writes a named adapter into a sub-folder of its name
        objective.model.save_pretrained(str(target.parent), selected_adapters=[config.adapter])
    return [target]


def run_training(config: TrainConfig, manifest: Path, out: Path, *, init: Path | None = None, recipe=None,
                 tiny: bool = False, tokenizer: Path | None = None, encoder: Path | None = None,
                 resume: bool = False, quiet: bool = False, log=print) -> dict[str, Any]:
    """Train as ``config`` says on ``manifest``'s train split (evaluating on its val
    split); results in ``out``."""
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.training.setup import build_parts
    from napari_radreport.training.trainer import Trainer, TrainingError

    records = read_manifest(manifest)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    if not train:
        raise TrainingError(f"{manifest}: no records with split 'train'")
    for record in train + val:  # before anything is built: a missing file fails now, not mid-run
        record.existing_image_paths()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from accelerate.utils import set_seed

    set_seed(config.seed)  # before building: fresh weights and LoRA initialisation depend on it
    parts = build_parts(config, train, val, out, init=init, recipe=recipe, tiny=tiny, tokenizer=tokenizer,
                        encoder=encoder, resume=resume)
    trainer = Trainer(config, parts, out, quiet=quiet)
    if resume:
        step = trainer.resume()
        if trainer.accelerator.is_main_process:
            log(f"resumed at step {step}" if step else "no checkpoint to resume from; starting at step 0")
    if trainer.accelerator.is_main_process:
        log(f"{config.run_name}: {len(train)} training studies, {len(val)} validation, "
            f"{parts.trainable:,} trainable parameters, {trainer.total_steps} steps on "
            f"{trainer.accelerator.num_processes} process(es), {trainer.accelerator.device}, "
            f"mixed precision {trainer.accelerator.mixed_precision}")
        settings = {**config.to_dict(), "manifest": str(manifest), "init": str(init) if init else None,
                    "recipe": getattr(recipe, "name", None), "tiny": tiny,
                    "encoder": str(encoder) if encoder else None}
        (out / f"train_config-{config.run_name}.json").write_text(json.dumps(settings, indent=1))
    summary = trainer.train()
    if config.save_every and trainer.step % config.save_every:
        trainer.save_checkpoint()
    summary["saved"] = [str(p) for p in save_result(trainer, config, out)]
    if config.stage == "labels" and trainer.accelerator.is_main_process and parts.eval_data is not None:
        from napari_radreport.training.label_eval import classifier_scores, write_label_scores

        classifier = trainer.accelerator.unwrap_model(trainer.objective).model
        summary["label_scores"] = classifier_scores(classifier, parts.eval_data, parts.eval_data.names)
        log(f"{config.run_name}: {write_label_scores(summary['label_scores'], out)}")
    if config.stage == "candidates" and trainer.accelerator.is_main_process and parts.eval_data is not None:
        from napari_radreport.training.candidates import volume_scores
        from napari_radreport.training.label_eval import write_label_scores

        data = parts.eval_data
        detector = trainer.accelerator.unwrap_model(trainer.objective).model
        summary["label_scores"] = volume_scores(detector, data.records, data.images, data.names)
        log(f"{config.run_name}: whole-volume {write_label_scores(summary['label_scores'], out)}")
    summary["processes"] = trainer.accelerator.num_processes
    return summary
