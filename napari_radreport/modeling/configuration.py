"""Configurations of the encoder -> perceiver -> LLM model, in the transformers style.

A ``RadReportConfig`` holds three sub-configs: the vision encoder (our 3-D ViT, CT-CLIP's CT-ViT, or
transformers' CLIP vision model for radiographs), the perceiver that turns encoder tokens into LLM tokens, and
the text model (any causal LM config transformers knows); optionally M3D-LaMed's segmentation head
(``segmentation``: SegVol, read by ``SegVolSpec``). Malformed values fail here, naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

PERCEIVER_TYPES = (
    "spp",  # M3D spatial pooling: avg-pool then MLP (keys projector.0 / projector.2)
    "conv3d",  # E3D-GPT: 3-D convolution, kernel = stride
    "mlp2x",  # LLaVA / RRG24: 2-layer MLP on every token
    "avg_pool",
    "max_pool",
    "qformer_global",  # learned queries over all tokens
    "qformer_local",  # one learned query per local window
    "mlp_mixer",  # token- and channel-mixing MLPs to a fixed number of tokens
    "attn_pool",  # CT-CHAT: learned queries, one cross-attention (LayerNormed), LayerNorm, then an MLP
)
POOLING_PERCEIVERS = ("spp", "avg_pool", "max_pool")
FEATURE_NORMS = ("none", "batch")
# Vision towers that read a CT volume (B, C, D, H, W); the others read radiographs.
VOLUME_VISION_TYPES = ("radreport_vit3d", "radreport_ctvit")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


def _triple(name: str, value) -> tuple[int, int, int]:
    values = tuple(int(v) for v in value)
    if len(values) != 3 or min(values) < 1:
        raise ConfigError(f"{name} must be three positive integers (depth, height, width), got {value!r}")
    return values  # type: ignore[return-value]


def _patch_grid(image_size, patch_size) -> tuple[list[int], list[int]]:
    """A vision config's (image_size, patch_size) as lists of three, each image axis a whole number of
    patches; a ConfigError names the field otherwise."""
    image = _triple("vision_config.image_size", image_size)
    patch = _triple("vision_config.patch_size", patch_size)
    for axis, (i, p) in enumerate(zip(image, patch)):
        if i % p:
            raise ConfigError(f"vision_config.image_size[{axis}]={i} is not a multiple of "
                              f"vision_config.patch_size[{axis}]={p}")
    return list(image), list(patch)


SEGMENTATION_TYPES = ("segvol",)  # M3D-LaMed's referring segmentation head (modeling/m3d_segmentation.py)
GROUNDING_HEAD_KINDS = ("mix", "unet")  # how a grounding head reads the volume (modeling/grounding_head.py)


@dataclass(frozen=True)
class SegVolSpec:
    """The sizes of a SegVol head (``RadReportConfig.segmentation``; M3D-LaMed's ``seg_module``).

    A 3-D ViT image encoder without CLS token (``hidden_size`` wide) on the model's own pixels, a prompt
    encoder and a two-way transformer mask decoder whose text prompt is the [SEG] token's projected hidden
    state (``prompt_dim`` wide, which must equal ``hidden_size``: the prompt joins the decoder's tokens).
    Defaults are M3D-LaMed's (SegVol's ViT-B): ``num_attention_heads`` and ``decoder_heads`` are not stored in
    M3D's weights, its code fixes them at 12 and 8.
    """

    image_size: tuple[int, int, int] = (32, 256, 256)
    patch_size: tuple[int, int, int] = (4, 16, 16)
    in_channels: int = 1
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    qkv_bias: bool = False
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_mask_tokens: int = 4  # SAM's multimask outputs + 1; SegVol reads only the first
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    prompt_dim: int = 768
    type: str = "segvol"

    @classmethod
    def from_dict(cls, data: dict) -> SegVolSpec:
        """The spec of a config's ``segmentation`` section; a ConfigError names a bad or unknown field."""
        if not isinstance(data, dict):
            raise ConfigError(f"segmentation must be a mapping of SegVol sizes, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"segmentation has unknown field(s): {', '.join(unknown)}")
        values = dict(data)
        if values.get("type", "segvol") not in SEGMENTATION_TYPES:
            raise ConfigError(f"segmentation.type={values['type']!r} is unknown; one of "
                              f"{', '.join(SEGMENTATION_TYPES)}")
        try:
            image, patch = _patch_grid(values.get("image_size", cls.image_size),
                                       values.get("patch_size", cls.patch_size))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("vision_config.", "segmentation.")) from None
        values["image_size"], values["patch_size"] = tuple(image), tuple(patch)
        spec = cls(**values)
        spec._check()
        return spec

    def _check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"segmentation.{f.name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"segmentation.hidden_size={self.hidden_size} is not divisible by "
                              f"num_attention_heads={self.num_attention_heads}")
        inner = self.hidden_size // self.attention_downsample_rate
        if self.hidden_size % self.attention_downsample_rate or inner % self.decoder_heads:
            raise ConfigError(f"segmentation.hidden_size={self.hidden_size} / attention_downsample_rate="
                              f"{self.attention_downsample_rate} is not divisible by decoder_heads="
                              f"{self.decoder_heads}")
        if self.hidden_size % 8 or self.mask_in_chans % 4:
            raise ConfigError("segmentation.hidden_size must be a multiple of 8 and mask_in_chans of 4 "
                              f"(got {self.hidden_size}, {self.mask_in_chans})")
        if self.prompt_dim != self.hidden_size:
            raise ConfigError(f"segmentation.prompt_dim={self.prompt_dim} must equal hidden_size="
                              f"{self.hidden_size}: the [SEG] prompt joins the mask decoder's tokens")

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(i // p for i, p in zip(self.image_size, self.patch_size))  # type: ignore[return-value]

    def as_dict(self) -> dict:
        return {f.name: list(getattr(self, f.name)) if f.name in ("image_size", "patch_size")
                else getattr(self, f.name) for f in fields(self)}


class _PatchGridMixin:
    """The token grid of a 3-D ViT config with ``image_size``, ``patch_size`` and ``in_channels``."""

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(i // p for i, p in zip(self.image_size, self.patch_size))  # type: ignore[return-value]

    @property
    def num_patches(self) -> int:
        return math.prod(self.grid)

    @property
    def patch_dim(self) -> int:
        """Pixels in one patch (what MAE reconstructs)."""
        return self.in_channels * math.prod(self.patch_size)


class ViT3DConfig(_PatchGridMixin, PreTrainedConfig):
    """A 3-D ViT: M3D-CLIP's layout (the default, ViT-B on 1x32x256x256) or E3D-GPT's MAE encoder size.

    ``image_size`` and ``patch_size`` are in the order of the input tensor's spatial axes
    (B, C, D, H, W). M3D-LaMed: (32, 256, 256) / (4, 16, 16) -> 8x16x16 = 2048 tokens.
    E3D-GPT: (112, 224, 224) / (8, 16, 16) -> 14x14x14 = 2744 tokens, width 1536.
    """

    model_type = "radreport_vit3d"

    in_channels: int = 1
    image_size: list[int] | tuple[int, ...] = (32, 256, 256)
    patch_size: list[int] | tuple[int, ...] = (4, 16, 16)
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    qkv_bias: bool = False
    layer_norm_eps: float = 1e-5
    use_cls_token: bool = True
    initializer_range: float = 0.02
    # Output channels of 3x3x3 convolutions (each followed by GELU) run at full resolution before the patches
    # are cut; their output is stacked with the pixels, so the patch Linear sees both. Empty: M3D-CLIP's
    # linear patch embedding, nothing else (M3D-LaMed weights load unchanged).
    conv_stem_channels: list[int] | tuple[int, ...] = ()
    # Detectors on the stem: each a 1x1 convolution of its last channels, a logit map of one finding; every
    # patch token gets, through a Linear, the highest sigmoid of each map within the patch (the patch Linear's
    # sum over the patch would drown a finding a few voxels wide). ``--stage candidates`` trains them.
    conv_stem_detectors: int = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        image, patch = _patch_grid(self.image_size, self.patch_size)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"vision_config.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        stem = [int(c) for c in (self.conv_stem_channels or ())]
        if any(c < 1 for c in stem):
            raise ConfigError("vision_config.conv_stem_channels must be positive integers, "
                              f"got {self.conv_stem_channels!r}")
        self.image_size, self.patch_size, self.conv_stem_channels = image, patch, stem
        if not isinstance(self.conv_stem_detectors, int) or self.conv_stem_detectors < 0 or (
                self.conv_stem_detectors and not stem):
            raise ConfigError("vision_config.conv_stem_detectors must be a count >= 0, "
                              f"and needs conv_stem_channels; got {self.conv_stem_detectors!r}")

    @property
    def output_dim(self) -> int:
        """Features per encoder token: hidden_size, plus one per conv stem detector."""
        return self.hidden_size + self.conv_stem_detectors

    @property
    def embedding_input_dim(self) -> int:
        """Inputs of the patch Linear: the pixels of a patch, plus the conv stem's
        channels at each of them."""
        stem = self.conv_stem_channels[-1] if self.conv_stem_channels else 0
        return (self.in_channels + stem) * math.prod(self.patch_size)


class PerceiverConfig(PreTrainedConfig):
    """How encoder tokens become LLM tokens; ``perceiver_type`` picks one of PERCEIVER_TYPES."""

    model_type = "radreport_perceiver"

    perceiver_type: str = "spp"
    # spp / avg_pool / max_pool / conv3d kernel = stride; qformer_local window: one size, or [D, H, W]
    pooling_size: int | list[int] = 2
    projector_depth: int = 2  # Linear layers after pooling (M3D "mlp" with depth 2)
    num_queries: int = 256  # qformer_global, mlp_mixer and attn_pool output tokens
    num_layers: int = 2  # qformer / mixer depth
    num_heads: int = 8  # qformer and attn_pool attention heads
    hidden_act: str = "gelu"
    initializer_range: float = 0.02
    # "batch": standardise each pooled feature over the batch (running statistics at inference) before the
    # projector; for encoders trained from scratch, whose features differ little between images at first.
    feature_norm: str = "none"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.feature_norm not in FEATURE_NORMS:
            raise ConfigError(f"perceiver_config.feature_norm={self.feature_norm!r} is unknown; one of "
                              f"{', '.join(FEATURE_NORMS)}")
        if self.feature_norm != "none" and self.perceiver_type not in POOLING_PERCEIVERS:
            raise ConfigError(f"perceiver_config.feature_norm={self.feature_norm!r} needs a pooling "
                              f"perceiver ({', '.join(POOLING_PERCEIVERS)}), not {self.perceiver_type!r}")
        if self.perceiver_type not in PERCEIVER_TYPES:
            raise ConfigError(f"perceiver_config.perceiver_type={self.perceiver_type!r} is unknown; one of "
                              f"{', '.join(PERCEIVER_TYPES)}")
        size = self.pooling_size
        sizes = list(size) if isinstance(size, (list, tuple)) else [size]
        if len(sizes) not in (1, 3) or not all(isinstance(v, int) and v >= 1 for v in sizes):
            raise ConfigError(f"perceiver_config.pooling_size must be a positive integer or three of them "
                              f"([D, H, W]), got {size!r}")
        self.pooling_size = sizes if len(sizes) == 3 else sizes[0]
        for name in ("projector_depth", "num_queries", "num_layers", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"perceiver_config.{name} must be at least 1, got {getattr(self, name)!r}")


class CTViTConfig(_PatchGridMixin, PreTrainedConfig):
    """CT-CLIP's CT-ViT encoder (GenerateCT's factorised 3-D ViT), as CT-CHAT reads a volume with it.

    ``image_size`` and ``patch_size`` are (depth, height, width) of the input (B, C, D, H, W): CT-CHAT's
    (240, 480, 480) and (10, 20, 20) -> a 24 x 24 x 24 grid of 512-wide tokens (CT-CHAT
    ``llava/serve/encode_script.py``). ``quantize``: each token is replaced by its nearest codebook row by
    cosine similarity, as CT-ViT's ``return_encoded_tokens=True`` path does in eval mode.
    """

    model_type = "radreport_ctvit"

    in_channels: int = 1
    image_size: list[int] | tuple[int, ...] = (240, 480, 480)
    patch_size: list[int] | tuple[int, ...] = (10, 20, 20)
    hidden_size: int = 512
    spatial_depth: int = 4
    temporal_depth: int = 4
    num_attention_heads: int = 8
    head_dim: int = 32
    ff_mult: int = 4  # the GEGLU feed-forward is int(ff_mult * 2 / 3 * hidden_size) wide
    attention_scale: float = 8.0  # CT-ViT's attention multiplies cosine similarities by this, not 1/sqrt(d)
    position_bias_layers: int = 2  # hidden layers of the continuous position bias MLP
    codebook_size: int = 8192
    quantize: bool = True
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        image, patch = _patch_grid(self.image_size, self.patch_size)
        for name in ("hidden_size", "spatial_depth", "temporal_depth", "num_attention_heads", "head_dim",
                     "ff_mult", "position_bias_layers", "codebook_size", "in_channels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"vision_config.{name} must be a positive integer, "
                                  f"got {getattr(self, name)!r}")
        self.image_size, self.patch_size = image, patch

    @property
    def intermediate_size(self) -> int:
        return int(self.ff_mult * (2 / 3) * self.hidden_size)

    @property
    def output_dim(self) -> int:
        return self.hidden_size


AutoConfig.register(ViT3DConfig.model_type, ViT3DConfig, exist_ok=True)
AutoConfig.register(CTViTConfig.model_type, CTViTConfig, exist_ok=True)
AutoConfig.register(PerceiverConfig.model_type, PerceiverConfig, exist_ok=True)


class RadReportConfig(PreTrainedConfig):
    """Vision encoder + perceiver + causal LM, with the image placeholder token."""

    model_type = "radreport"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type=ViT3DConfig.model_type),
        "perceiver_config": SubConfigSpec(config_class=PerceiverConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    perceiver_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token: str = "<im_patch>"
    image_token_id: int = 32000
    # CLIP vision towers: which hidden layer feeds the perceiver, and whether the CLS token is dropped.
    vision_feature_layer: int = -2
    vision_feature_drop_cls: bool = True
    tie_word_embeddings: bool = False
    # How a Study becomes input (a recipe's "preprocess" and "prompt" sections), kept with the weights.
    preprocess: dict | None = None
    prompt: dict | None = None
    # What the model was made for (a recipe's "scope" section: modeling/scope.py), kept with the weights.
    scope: dict | None = None
    # M3D-LaMed's referring segmentation head (SegVolSpec's fields; None: no head), and the token whose
    # hidden state prompts it (modeling/m3d_segmentation.py).
    segmentation: dict | None = None
    seg_token: str = "[SEG]"
    seg_token_id: int | None = None
    # A trained grounding head ({"channels": C, "findings": [...]}; None: none): where a sentence's finding
    # is, as a mask on the model's input grid (modeling/grounding_head.py; 3-D ViT towers only); "findings":
    # the consistency.FINDINGS keys it was trained on (a sentence about another gets no location from it).
    grounding_head: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        vocab = getattr(self.text_config, "vocab_size", None)
        if vocab is not None and not 0 <= self.image_token_id < vocab:
            raise ConfigError(f"image_token_id={self.image_token_id} is outside "
                              f"text_config.vocab_size={vocab}")
        if self.vision_config.model_type not in (*VOLUME_VISION_TYPES, "clip_vision_model",
                                                 "siglip_vision_model"):
            raise ConfigError(f"vision_config.model_type={self.vision_config.model_type!r} is not supported")
        self._check_grounding_head()
        if self.segmentation is not None:
            self.segmentation = self.segmentation_spec.as_dict()  # type: ignore[union-attr]
            if self.seg_token_id is None or vocab is not None and not 0 <= self.seg_token_id < vocab:
                raise ConfigError(f"seg_token_id={self.seg_token_id} must be a token of "
                                  f"text_config.vocab_size={vocab} when the model has a segmentation head")

    def _check_grounding_head(self) -> None:
        head = self.grounding_head
        if head is None:
            return
        channels = head.get("channels") if isinstance(head, dict) else None
        well_formed = isinstance(channels, int) and not isinstance(channels, bool) and channels >= 1
        findings = head.get("findings", []) if isinstance(head, dict) else None
        listed = isinstance(findings, list) and all(isinstance(f, str) for f in findings)
        known_kind = isinstance(head, dict) and head.get("kind", "mix") in GROUNDING_HEAD_KINDS
        if not well_formed or not listed or not known_kind or set(head) - {"channels", "findings", "kind"}:
            raise ConfigError("grounding_head must be {\"channels\": a positive integer, \"findings\": [the "
                              f"findings it was trained to find], \"kind\": "
                              f"{' or '.join(GROUNDING_HEAD_KINDS)} (default mix)}}, got {head!r}")
        if self.vision_config.model_type != "radreport_vit3d":
            raise ConfigError("grounding_head reads the 3-D ViT's patches and conv stem; this model's vision "
                              f"tower is {self.vision_config.model_type}")

    @property
    def segmentation_spec(self) -> SegVolSpec | None:
        """The segmentation head's sizes, or None when the model has none."""
        return None if self.segmentation is None else SegVolSpec.from_dict(self.segmentation)
