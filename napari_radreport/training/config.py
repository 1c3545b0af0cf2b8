"""Settings of one training run: the stage's defaults, then the recipe's ``train``
section, then the command line.

Stages (the seeds' recipes):

- ``stage1``: align the perceiver (projector); encoder and LLM frozen (RRG24 stage 1, E3D-GPT lr 1e-4);
- ``stage2``: perceiver + a named LoRA adapter on the LLM (E3D-GPT lr 5e-5, r 16, alpha 32, dropout 0.1),
  with the encoder too when the recipe says ``train_encoder`` (the AMOS-MM seed fine-tuned its encoder);
  ``--adapter findings --tasks findings`` and ``--adapter impression --tasks impression`` give RRG24's
  separate Findings and Impression models;
- ``mae``: masked-autoencoder pretraining of the 3-D ViT (75 % of patches masked, E3D-GPT);
- ``labels``: the 3-D ViT and the perceiver learn the manifest's abnormality labels (training/labels.py);
- ``candidates``: the ViT's conv stem learns small findings from patches around their ``positions``
  (training/candidates.py);
- ``grounding``: a grounding head on a trained model (``--init``), the model frozen, learns where each finding
  sentence is from the records' ``masks`` (training/grounding.py).

``mae`` and ``labels`` write encoder weights, ``candidates`` the stem's, that a later run starts from
(``--encoder``); ``freeze_conv_stem`` then keeps a learned stem as it is.

A recipe may widen what a stage trains (``trainable``): the demo model has no pretrained parts, so its
stage 1 trains everything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

STAGES = ("stage1", "stage2", "mae", "labels", "candidates", "grounding")
MODULES = ("vision_tower", "perceiver", "language_model")
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "stage1": {"lr": 1e-4, "trainable": ["perceiver"]},
    "stage2": {"lr": 5e-5, "trainable": ["perceiver"]},
    "mae": {"lr": 1.5e-4, "trainable": ["vision_tower"], "weight_decay": 0.05},
    "labels": {"lr": 3e-4, "trainable": ["vision_tower", "perceiver"], "weight_decay": 0.01},
    "candidates": {"lr": 1e-3, "trainable": ["vision_tower"], "batch_size": 32},
    "grounding": {"lr": 1e-3, "trainable": [], "batch_size": 8},
}


@dataclass
class TrainConfig:
    stage: str = "stage1"
    tasks: list[str] = field(default_factory=lambda: ["findings", "impression", "region_findings", "qa",
                                                      "diagnosis"])
    adapter: str = "default"  # stage 2: the LoRA adapter's name (findings / impression / vqa used per task)
    trainable: list[str] = field(default_factory=list)
    train_encoder: bool = False
    lora: dict[str, Any] = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.1})
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 4  # studies per process per micro-batch
    grad_accum: int = 1
    texts_per_image: int = 4
    max_length: int = 1024
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto: bf16 on a CUDA device that has it, fp16 on older CUDA, none on CPU
    seed: int = 0
    save_every: int = 0  # optimizer steps between checkpoints; 0: only at the end
    keep_checkpoints: int = 2
    eval_every: int = 0  # optimizer steps between evaluations; 0: only at the end
    eval_studies: int = 32
    log_every: int = 1
    mae_mask_ratio: float = 0.75
    mae_decoder: dict[str, int] = field(default_factory=lambda: {"hidden_size": 64, "num_hidden_layers": 2,
                                                                 "num_attention_heads": 4})
    candidate_labels: list[str] = field(default_factory=list)  # empty: every label with positions in a record
    candidate_patch: list[int] = field(default_factory=lambda: [8, 16, 16])  # in preprocessed-volume voxels
    candidate_jitter: list[int] = field(default_factory=lambda: [1, 3, 3])  # largest shift of a patch centre
    freeze_conv_stem: bool = False
    grounding_channels: int = 32  # --stage grounding: the head's width, when the model has no head yet
    grounding_kind: str = "unet"  # and how it reads the volume (modeling/grounding_head.py KINDS)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        unknown = sorted(set(self.trainable) - set(MODULES))
        if unknown:
            raise ValueError(f"trainable: unknown module(s) {', '.join(unknown)}; use {', '.join(MODULES)}")
        for name in ("epochs", "batch_size", "grad_accum", "texts_per_image"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if not 0 < self.mae_mask_ratio < 1:
            raise ValueError(f"mae_mask_ratio must be between 0 and 1, got {self.mae_mask_ratio}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")

    @property
    def run_name(self) -> str:
        return f"stage2-{self.adapter}" if self.stage == "stage2" else self.stage

    def modules_to_train(self) -> list[str]:
        modules = list(self.trainable)
        if self.train_encoder and "vision_tower" not in modules:
            modules.append("vision_tower")
        return modules

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve(stage: str, recipe=None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Stage defaults < the recipe (``lora``, ``train.<stage>_lr``, ``train.<stage>``) <
    command-line overrides."""
    values: dict[str, Any] = {"stage": stage, **STAGE_DEFAULTS.get(stage, {})}
    train = dict(getattr(recipe, "train", None) or {})
    if getattr(recipe, "lora", None):
        values["lora"] = dict(recipe.lora)
    if f"{stage}_lr" in train:
        values["lr"] = train[f"{stage}_lr"]
    if "mae_mask_ratio" in train:
        values["mae_mask_ratio"] = train["mae_mask_ratio"]
    if stage == "stage2" and train.get("stage2_trains_encoder"):
        values["train_encoder"] = True
    values.update(train.get(stage, {}))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(unknown)}")
    return TrainConfig(**values)
