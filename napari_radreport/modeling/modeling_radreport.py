"""The composite model: vision encoder -> perceiver -> causal LM, in the transformers style.

Image features replace the embeddings of the image placeholder tokens (``masked_scatter``); their count
must equal the perceiver's token count. ``pixel_values`` are only used at the first decoding step
(GenerationMixin drops them afterwards; the key/value cache carries the image). A config with a
``segmentation`` section adds M3D-LaMed's SegVol head as ``segmentation`` (``modeling/m3d_segmentation.py``;
``segment`` runs it), else ``segmentation`` is None; ``grounding_head`` likewise holds a trained grounding
head (``modeling/grounding_head.py``) when the config has one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init

from napari_radreport.modeling.configuration import CTViTConfig, RadReportConfig, ViT3DConfig
from napari_radreport.modeling.ctvit import CTViTEncoder
from napari_radreport.modeling.grounding_head import GroundingHead, stem_dim
from napari_radreport.modeling.m3d_segmentation import FourierPositions, SegmentationHead
from napari_radreport.modeling.perceivers import build_perceiver
from napari_radreport.modeling.vit3d import ViT3DEncoder


class CLIPTower(nn.Module):
    """transformers' CLIP/SigLIP vision model; features from one hidden layer, CLS optionally dropped."""

    def __init__(self, vision_config, feature_layer: int, drop_cls: bool):
        super().__init__()
        from transformers import AutoModel

        self.vision_model = AutoModel.from_config(vision_config)
        self.feature_layer, self.drop_cls = feature_layer, drop_cls
        side = vision_config.image_size // vision_config.patch_size
        self.grid = (1, side, side)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.vision_model(pixel_values=pixel_values, output_hidden_states=True)
        features = out.hidden_states[self.feature_layer]
        return (features[:, 1:] if self.drop_cls and features.shape[1] > self.grid[1] * self.grid[2]
                else features)


class RadReportPreTrainedModel(PreTrainedModel):
    config: RadReportConfig
    config_class = RadReportConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _no_split_modules = ["ViT3DBlock", "CTViTBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = 0.02
        if isinstance(module, ViT3DEncoder):
            init.trunc_normal_(module.patch_embedding.position_embeddings, std=std)
            if module.cls_token is not None:
                init.trunc_normal_(module.cls_token, std=std)
        if isinstance(module, CTViTEncoder):
            init.normal_(module.codebook, std=1.0)
        for name in ("q_scale", "k_scale"):  # CT-ViT attention: per-channel scales of the unit q and k
            param = module._parameters.get(name) if hasattr(module, "_parameters") else None
            if param is not None:
                init.ones_(param)
        if isinstance(module, FourierPositions):
            init.normal_(module.positional_encoding_gaussian_matrix)
        if isinstance(module, nn.ConvTranspose3d):
            init.normal_(module.weight, std=std)
            init.zeros_(module.bias)
        for name in ("queries", "query"):
            param = module._parameters.get(name) if hasattr(module, "_parameters") else None
            if param is not None:
                init.normal_(param, std=std)


class RadReportForConditionalGeneration(RadReportPreTrainedModel, GenerationMixin):
    def __init__(self, config: RadReportConfig):
        super().__init__(config)
        vision = config.vision_config
        if isinstance(vision, ViT3DConfig):
            self.vision_tower: nn.Module = ViT3DEncoder(vision)
        elif isinstance(vision, CTViTConfig):
            self.vision_tower = CTViTEncoder(vision)
            # CT-CHAT runs CT-ViT in float32; its nearest-codebook step is an argmax, which bf16 would move
            self._keep_in_fp32_modules_strict = {"vision_tower"}
        else:
            self.vision_tower = CLIPTower(vision, config.vision_feature_layer, config.vision_feature_drop_cls)
        self.perceiver = build_perceiver(
            config.perceiver_config, getattr(self.vision_tower, "output_dim", vision.hidden_size),
            self.vision_tower.grid, config.text_config.hidden_size, getattr(vision, "conv_stem_detectors", 0)
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        spec = config.segmentation_spec
        self.segmentation = SegmentationHead(spec, config.text_config.hidden_size) if spec else None
        self.grounding_head = (GroundingHead(config.grounding_head, self.vision_tower.output_dim,
                                             self.vision_tower.grid, stem_dim(vision),
                                             config.text_config.hidden_size)
                               if config.grounding_head else None)
        self.post_init()

    @property
    def num_image_tokens(self) -> int:
        return self.perceiver.num_tokens

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B, num_image_tokens, text hidden size)."""
        dtype = next(self.vision_tower.parameters()).dtype
        features = self.vision_tower(pixel_values.to(dtype))
        return self.perceiver(features.to(next(self.perceiver.parameters()).dtype))

    def merge_image_features(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Put image features where the image token stands; a clear error when the counts differ."""
        mask = input_ids == self.config.image_token_id
        n_tokens, n_features = int(mask.sum()), image_features.shape[0] * image_features.shape[1]
        if n_tokens != n_features:
            raise ValueError(
                f"the prompt has {n_tokens} image tokens ({self.config.image_token}) "
                f"but the image gives {n_features} features "
                f"({image_features.shape[0]} image(s) x {image_features.shape[1]} tokens)"
            )
        features = (image_features.to(inputs_embeds.device, inputs_embeds.dtype)
                    .reshape(-1, inputs_embeds.shape[-1]))
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1).to(inputs_embeds.device), features)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_features: torch.Tensor | None = None,
        **kwargs,
    ):
        """Causal LM forward; ``image_features`` may be given instead of
        ``pixel_values`` (cached encodings)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            if image_features is None and pixel_values is not None:
                image_features = self.get_image_features(pixel_values)
            if image_features is not None:
                inputs_embeds = self.merge_image_features(input_ids, inputs_embeds, image_features)
        elif pixel_values is not None or image_features is not None:
            raise ValueError("image inputs need input_ids, to find the image tokens")
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        image_features = kwargs.pop("image_features", None)
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            inputs["image_features"] = image_features
        return inputs
