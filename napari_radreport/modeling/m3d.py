"""M3D-LaMed checkpoints (LamedLlamaForCausalLM, LamedPhi3ForCausalLM) -> this project's format.

Key names map one to one (``SEGMENTATION_PREFIXES`` for the segmentation head); any unknown or missing key
stops the conversion with the list of names. The segmentation head (SegVol, ``modeling/m3d_segmentation.py``)
is kept when the weights hold it and config.json names it (``segmentation_module: "segvol"``): its sizes are
read from the tensors, the [SEG] token id from config.json and the tokenizer (they must agree). Weights
without it convert to a model without it; with ``segmentation_module`` unset, M3D builds no head and its
tensors are dropped by name, as M3D's own loading ignores them.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

from napari_radreport.modeling.checkpoints import (
    CheckpointError,
    iter_tensors,
    read_config,
    require_local_folder,
    weight_files,
)

# Raised whenever a conversion of the same folder would come out different (2: the segmentation head kept),
# so that the loader's cache of converted folders converts again.
CONVERTER_VERSION = 2
M3D_TEXT_TYPES = {"lamed_llama": "llama", "lamed_phi3": "phi3"}
# M3D's segmentation tensors -> ours (names below these prefixes are the same on both sides)
SEGMENTATION_PREFIXES = {"model.seg_module.": "segmentation.segvol.",
                         "model.seg_projector.": "segmentation.projector."}
M3D_ONLY_FIELDS = (
    "image_channel", "image_size", "patch_size", "vision_tower", "vision_select_layer",
    "vision_select_feature", "mm_projector_type", "proj_layer_type", "proj_layer_num", "proj_pooling_type",
    "proj_pooling_size", "mm_hidden_size", "segmentation_module", "pretrain_vision_model",
    "pretrain_mm_mlp_adapter", "pretrain_seg_module", "seg_token_id", "num_new_tokens", "tune_mm_mlp_adapter",
    "freeze_vision_tower", "architectures", "model_type", "auto_map", "transformers_version",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")
M3D_VIT_HEADS = 12  # M3D's ViT3DTower uses MONAI's ViT defaults (ViT-B: 12 heads); configs do not store it
IMAGE_TOKEN = "<im_patch>"
SEG_TOKEN = "[SEG]"
SEGVOL = "model.seg_module."
SEGVOL_DECODER_HEADS = 8  # M3D's build_sam fixes SegVol's decoder at 8 heads; the weights do not store it


def is_m3d_folder(path: str | Path) -> bool:
    folder = Path(path)
    try:
        return (folder / "config.json").is_file() and read_config(folder).get("model_type") in M3D_TEXT_TYPES
    except CheckpointError:
        return False


def map_key(key: str, segmentation: bool = True) -> str | None:
    """Our name for an M3D-LaMed tensor name; None for a segmentation tensor when the head is not kept."""
    for prefix, ours in SEGMENTATION_PREFIXES.items():
        if key.startswith(prefix):
            return ours + key[len(prefix):] if segmentation else None
    if key.startswith("model.vision_tower.vision_tower."):
        return "vision_tower." + key[len("model.vision_tower.vision_tower."):]
    if key.startswith("model.mm_projector.projector."):
        return "perceiver.projector." + key[len("model.mm_projector.projector."):]
    if key.startswith("model.") or key == "lm_head.weight":
        return "language_model." + key
    raise KeyError(key)


def _require(m3d: dict, field: str, allowed: tuple) -> None:
    if m3d.get(field, allowed[0]) not in allowed:
        raise CheckpointError(
            f"config.json: {field}={m3d.get(field)!r} is not supported (expected {allowed[0]!r})"
        )


def _vision_shape(names_and_shapes: dict[str, tuple]) -> dict:
    """ViT width, depth, MLP width and qkv bias read from the tensors themselves."""
    prefix = "model.vision_tower.vision_tower."
    try:
        hidden = names_and_shapes[prefix + "cls_token"][-1]
        mlp = names_and_shapes[prefix + "blocks.0.mlp.linear1.weight"][0]
    except KeyError as exc:
        raise CheckpointError(f"checkpoint has no {exc.args[0]}: not an M3D-LaMed vision tower") from exc
    blocks = {int(m.group(1)) for k in names_and_shapes
              if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    heads = M3D_VIT_HEADS if hidden % M3D_VIT_HEADS == 0 else 1
    return {"hidden_size": hidden, "intermediate_size": mlp, "num_hidden_layers": len(blocks),
            "num_attention_heads": heads, "qkv_bias": prefix + "blocks.0.attn.qkv.bias" in names_and_shapes}


def _count(names_and_shapes: dict[str, tuple], prefix: str) -> int:
    """How many numbered children ``prefix<N>.`` the tensor names have."""
    return len({m.group(1) for k in names_and_shapes if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})


def has_segmentation(m3d: dict, names_and_shapes: dict[str, tuple]) -> bool:
    """Whether M3D builds a segmentation head for this config.json and the weights hold its tensors."""
    held = any(k.startswith(tuple(SEGMENTATION_PREFIXES)) for k in names_and_shapes)
    if not held or not m3d.get("segmentation_module"):
        return False
    if "segvol" not in str(m3d["segmentation_module"]).lower():
        raise CheckpointError(f"config.json: segmentation_module={m3d['segmentation_module']!r} is not "
                              "supported (expected 'segvol')")
    return True


def segmentation_sizes(m3d: dict, names_and_shapes: dict[str, tuple]) -> dict:
    """SegVol's sizes (``SegVolSpec`` fields) read from its tensors, image and patch size from config.json."""
    vit, decoder = SEGVOL + "image_encoder.", SEGVOL + "mask_decoder."
    try:
        hidden = names_and_shapes[vit + "patch_embedding.position_embeddings"][-1]
        sizes = {
            "image_size": list(m3d.get("image_size", [32, 256, 256])),
            "patch_size": list(m3d.get("patch_size", [4, 16, 16])),
            "in_channels": names_and_shapes[vit + "patch_embedding.patch_embeddings.1.weight"][1]
            // math.prod(m3d.get("patch_size", [4, 16, 16])),
            "hidden_size": hidden, "num_hidden_layers": _count(names_and_shapes, vit + "blocks."),
            "num_attention_heads": M3D_VIT_HEADS if hidden % M3D_VIT_HEADS == 0 else 1,
            "intermediate_size": names_and_shapes[vit + "blocks.0.mlp.linear1.weight"][0],
            "qkv_bias": vit + "blocks.0.attn.qkv.bias" in names_and_shapes,
            "decoder_depth": _count(names_and_shapes, decoder + "transformer.layers."),
            "decoder_heads": SEGVOL_DECODER_HEADS,
            "decoder_mlp_dim": names_and_shapes[decoder + "transformer.layers.0.mlp.lin1.weight"][0],
            "attention_downsample_rate": hidden // names_and_shapes[
                decoder + "transformer.final_attn_token_to_image.q_proj.weight"][0],
            "num_mask_tokens": names_and_shapes[decoder + "mask_tokens.weight"][0],
            "iou_head_depth": _count(names_and_shapes, decoder + "iou_prediction_head.layers."),
            "iou_head_hidden_dim": names_and_shapes[decoder + "iou_prediction_head.layers.0.weight"][0],
            "mask_in_chans": names_and_shapes[SEGVOL + "prompt_encoder.mask_downscaling.3.weight"][0],
            "prompt_dim": names_and_shapes[decoder + "txt_align_upscaled_embedding.weight"][1],
        }
    except KeyError as exc:
        raise CheckpointError(f"checkpoint has no {exc.args[0]}: not M3D-LaMed's SegVol head") from exc
    return sizes


def radreport_config(m3d: dict, names_and_shapes: dict[str, tuple], image_token_id: int,
                     seg_token_id: int | None = None):
    """Our RadReportConfig for an M3D-LaMed config.json and its tensor shapes; with ``seg_token_id``, the
    segmentation head (when ``has_segmentation``)."""
    from napari_radreport.modeling.configuration import ConfigError, RadReportConfig

    text_type = M3D_TEXT_TYPES[m3d["model_type"]]
    _require(m3d, "vision_tower", ("vit3d",))
    _require(m3d, "mm_projector_type", ("spp",))
    _require(m3d, "proj_layer_type", ("mlp",))
    _require(m3d, "proj_pooling_type", ("spatial",))
    _require(m3d, "vision_select_feature", ("patch",))
    _require(m3d, "vision_select_layer", (-1,))
    text = {k: v for k, v in m3d.items() if k not in M3D_ONLY_FIELDS}
    text["model_type"] = text_type
    vision = {"in_channels": m3d.get("image_channel", 1), "image_size": m3d.get("image_size", [32, 256, 256]),
              "patch_size": m3d.get("patch_size", [4, 16, 16]), "use_cls_token": True,
              **_vision_shape(names_and_shapes)}
    perceiver = {"perceiver_type": "spp", "pooling_size": m3d.get("proj_pooling_size", 2),
                 "projector_depth": m3d.get("proj_layer_num", 2)}
    preprocess = {"target_shape": list(vision["image_size"]), "intensity": "minmax", "resize": "resize",
                  "channels": vision["in_channels"]}  # M3D: per-volume min-max, resize, no HU window
    segmentation = {}
    if has_segmentation(m3d, names_and_shapes):
        if seg_token_id is None:
            raise CheckpointError("the weights hold a segmentation head but the tokenizer has no "
                                  f"{SEG_TOKEN} token")
        segmentation = {"segmentation": segmentation_sizes(m3d, names_and_shapes), "seg_token": SEG_TOKEN,
                        "seg_token_id": seg_token_id}
    try:
        return RadReportConfig(vision_config=vision, perceiver_config=perceiver, text_config=text,
                               image_token=IMAGE_TOKEN, image_token_id=image_token_id,
                               tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
                               preprocess=preprocess, prompt={"chat_template": False, "image_first": True},
                               **segmentation)
    except ConfigError as exc:
        if not segmentation:
            raise
        raise CheckpointError(f"config.json and the weights give an unusable segmentation head: "
                              f"{exc}") from exc


def _token_ids(src: Path, m3d: dict) -> tuple[int, int | None]:
    """The tokenizer's ids of the image token and of [SEG] (None when it has none); config.json's
    ``seg_token_id`` must agree with the tokenizer."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise CheckpointError(f"{src}: tokenizer could not be loaded ({str(exc).splitlines()[0]})") from exc

    def token_id(token: str) -> int | None:
        found = tokenizer.convert_tokens_to_ids(token)
        return None if found is None or found == tokenizer.unk_token_id else int(found)

    image = token_id(IMAGE_TOKEN)
    if image is None:
        raise CheckpointError(f"{src}: the tokenizer has no {IMAGE_TOKEN} token; not an M3D-LaMed tokenizer")
    seg = token_id(SEG_TOKEN)
    stated = m3d.get("seg_token_id")
    if seg is not None and stated is not None and int(stated) != seg:
        raise CheckpointError(f"{src}: config.json says seg_token_id={stated} but the tokenizer's "
                              f"{SEG_TOKEN} is {seg}")
    return image, seg


def _expected_keys(config) -> dict[str, tuple]:
    """Parameter names and shapes of our model for ``config``, built on the meta device (no memory)."""
    import torch

    from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

    with torch.device("meta"):
        model = RadReportForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_m3d(src: str | Path, dst: str | Path, *, allow_pickle: bool = False) -> Path:
    """Write an M3D-LaMed folder as a RadReport checkpoint (config, safetensors shards, tokenizer)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    src, dst = require_local_folder(src), Path(dst)
    m3d = read_config(src)
    if m3d.get("model_type") not in M3D_TEXT_TYPES:
        raise CheckpointError(
            f"{src}/config.json: model_type {m3d.get('model_type')!r} is not an M3D-LaMed model"
        )
    files = weight_files(src, allow_pickle=allow_pickle)
    shapes: dict[str, tuple] = {}
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as handle:
                names = handle.keys()
                shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in names})
        else:
            shapes.update({k: tuple(v.shape) for k, v in next(iter_tensors([f]))[1].items()})
    keep_segmentation = has_segmentation(m3d, shapes)
    new_names: dict[str, str | None] = {}  # our name for each tensor; None for a dropped seg tensor
    unknown = []
    for key in shapes:
        try:
            new_names[key] = map_key(key, keep_segmentation)
        except KeyError:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{src}: unknown tensor names (not M3D-LaMed): {', '.join(sorted(unknown)[:20])}"
        )
    config = radreport_config(m3d, shapes, *_token_ids(src, m3d))
    expected = _expected_keys(config)
    mapped = {new_names[k]: s for k, s in shapes.items() if new_names[k] is not None}
    tied = config.text_config.tie_word_embeddings
    missing = sorted(k for k in expected if k not in mapped and not (tied and k.endswith("lm_head.weight")))
    extra = sorted(k for k in mapped if k not in expected)
    wrong = sorted(k for k in mapped if k in expected and mapped[k] != expected[k])
    if missing or extra or wrong:
        parts = [f"missing: {', '.join(missing[:20])}" if missing else "",
                 f"unexpected: {', '.join(extra[:20])}" if extra else "",
                 f"wrong shape: {', '.join(f'{k} {mapped[k]} != {expected[k]}' for k in wrong[:10])}"
                 if wrong else ""]
        raise CheckpointError(f"{src}: weights do not fit the model ({'; '.join(p for p in parts if p)})")

    dst.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i, (_file, tensors) in enumerate(iter_tensors(files)):
        renamed = {new_names[k]: v.contiguous() for k, v in tensors.items() if new_names[k] is not None}
        name = ("model.safetensors" if len(files) == 1
                else f"model-{i + 1:05d}-of-{len(files):05d}.safetensors")
        save_file(renamed, str(dst / name), metadata={"format": "pt", "converted_from": "m3d-lamed"})
        weight_map.update(dict.fromkeys(renamed, name))
    if len(files) > 1:
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    config.architectures = ["RadReportForConditionalGeneration"]
    config.save_pretrained(dst)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    return dst
