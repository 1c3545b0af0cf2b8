"""Will it fit? The memory a model folder needs to run at a precision, from its config.json and safetensors
headers alone (nothing loads, no torch), and the one line that says what fits when it does not.

Terms (``s`` is the compute dtype's bytes per value; with 8-bit or 4-bit weights, the device's default:
float32 on the CPU, bfloat16 on a GPU):

* **weights**: each stored tensor's elements x ``s`` (integer tensors at their stored size; CT-CLIP's
  encoder stays float32, as the model keeps it), per part: vision tower, perceiver, language model, other
  heads. ``int8`` / ``int4``: the Linear layers' 2-D weights (the output layer too) as
  ``modeling/quantize.py`` stores them (``quantized_bytes``: int8 plus a bfloat16 scale per output row;
  half a byte plus a bfloat16 scale and zero per 64 values), every other tensor (embeddings, norms,
  convolutions, biases) x ``s``.
* **key/value cache**: 2 (keys, values) x kv heads x head dim x ``s`` per token and layer, for the image
  tokens (from the config) + ``prompt_tokens`` + ``answer_tokens``; a sliding-window layer holds at most its
  window; two layers more for the moment a step concatenates a layer's new entries. ``batch`` > 1 is the
  engine's batched diagnosis (``runner._run_tails``): the cached prompt plus ``batch`` copies of it, each
  continued by ``answer_tokens``.
* **language-model activations** of the largest forward pass (the prompt; a batch's tails): per token the
  embeddings and their merged copy, the residual stream and its norm (4 x hidden) and the MLP's gate, up and
  product (3 x intermediate), x ``s``; a Gemma 3 prompt adds its attention masks (2 bytes per query x key);
  then the logits kept (the last position; every tail position of a batch) and one row's float32
  log-softmax.
* **encoder activations**, one encoding's peak from the vision config's shapes: the pixels in float32 (and a
  copy in ``s``), the patch rearrangement (a conv stem's maps at full resolution), then the largest block:
  residual + norm + qkv + attention output and its copies (7 x hidden) or residual + norm + the MLP's two
  intermediate tensors (2 x hidden + 2 x intermediate), per token and image, x ``s``. Towers that return
  every layer's hidden states (CLIP in our tower or LLaVA) keep layers + 1 of them; MedGemma encodes all of
  a CT's slices at once (85 images).
* Both activation terms x ``ALLOCATOR_SLACK``: memory the allocator holds per live byte (measured on the
  CPU; assumed on a GPU).
* **overhead**: what loading adds besides the weights (``OVERHEAD_BYTES``; on the CPU the model's Python
  objects, its tokenizer and the code transformers imports for it, measured).

``total`` adds them all: the allocator keeps what encoding used (glibc's heap on the CPU, PyTorch's cache on
a GPU) while the key/value cache grows, so the peaks do not share memory (measured: docs/benchmarks.md, step
11). Preprocessing a study happens in host memory before the model runs and is bounded by the readers'
budget (``RADREPORT_MAX_VOLUME_MB``); it is not counted. On the CPU the weights are memory-mapped and the
embedding rows of tokens never seen are never read, so the estimate runs a little above the measured peaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_radreport.modeling.checkpoints import read_config, safetensors_header, weight_files
from napari_radreport.modeling.quantize import int4_groups, kernel_takes, quantized_bytes

GIB = 2**30
MIB = 2**20
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANTIZED = ("int8", "int4")  # modeling/quantize.QUANTIZATIONS but "none"
PRECISIONS = (*ITEMSIZE, *QUANTIZED)
# What loading adds besides the weights. CPU: measured (radreport bench, docs/benchmarks.md): the model's
# Python objects, tokenizer and the code transformers imports for it, in host memory. GPU: not measured here
# (no GPU on the machine that tuned this); the allocator's rounding and the BLAS workspaces, assumed.
OVERHEAD_BYTES = {"cpu": 175 * MIB, "gpu": 256 * MIB}
# Memory held per byte of live activations. CPU, measured: glibc keeps freed blocks that the next layer
# cannot reuse (the M3D ViT-B: 1.6x its live-tensor peak for 1 block, 2.3x for 12). GPU, assumed: PyTorch's
# caching allocator hands a layer's freed blocks to the next layer, which asks for the same sizes.
ALLOCATOR_SLACK = {"cpu": 2.0, "gpu": 1.2}
MARGIN = 1.15  # the estimate is within 15 % of the measured peaks (radreport bench)
# A report's longest prompt: the question, a template, the indication (image tokens come from the config).
DEFAULT_PROMPT_TOKENS = 256
DEFAULT_ANSWER_TOKENS = 256  # GenerationSettings.max_new_tokens
DIAGNOSIS_BATCH = 18  # labels asked at once (ModelRunner.next_token_logprobs' batch_size)
DIAGNOSIS_PROMPT_TOKENS = 64  # the text all diagnosis questions share
DIAGNOSIS_TAIL_TOKENS = 24  # each label's own words
_FLOATS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_INTEGERS = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
# 2-D tensors that are not a Linear layer's weight (input embeddings, position tables, norms, codebooks)
_NOT_LINEAR = ("embed_tokens", "word_embeddings", "wte", "wpe", "position", "codebook", "norm")
_M3D_TEXT_TYPES = ("lamed_llama", "lamed_phi3")


@dataclass
class Quantizable:
    """The Linear weights one quantization can store: their elements, output rows and 4-bit groups."""

    elements: int = 0
    rows: int = 0
    groups: int = 0

    def add(self, rows: int, columns: int) -> None:
        self.elements += rows * columns
        self.rows += rows
        self.groups += int4_groups(rows, columns)


@dataclass
class PartSize:
    """What one part's tensors hold: float elements, the Linear weights each quantization can store
    (``modeling/quantize.kernel_takes``), and integer bytes."""

    floats: int = 0
    quantizable: dict[str, Quantizable] = field(default_factory=lambda: {q: Quantizable() for q in QUANTIZED})
    integer_bytes: int = 0
    keep_float32: bool = False

    def bytes_at(self, precision: str, compute_itemsize: int | None = None) -> int:
        """Bytes of this part loaded at ``precision`` (one of PRECISIONS); a quantized part keeps its other
        tensors at ``compute_itemsize`` (default: bfloat16's)."""
        if self.keep_float32:
            return self.floats * 4 + self.integer_bytes
        if precision in ITEMSIZE:
            return self.floats * ITEMSIZE[precision] + self.integer_bytes
        s = compute_itemsize or ITEMSIZE["bfloat16"]
        linear = self.quantizable[precision]
        return ((self.floats - linear.elements) * s + self.integer_bytes
                + quantized_bytes(precision, linear.elements, linear.rows, linear.groups, s))


@dataclass(frozen=True)
class TextShape:
    """The language model's sizes that memory depends on."""

    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    sliding_layers: int = 0
    window: int = 0
    masks: bool = False  # Gemma 3 builds its attention masks as tensors

    def kv_bytes(self, tokens: int, itemsize: int) -> int:
        """Keys and values of ``tokens`` in every layer, plus two layers' worth for the moment a step
        concatenates a layer's new entries (the old and the new tensor both live) and attention's copies."""
        full = self.layers - self.sliding_layers
        held = full * tokens + self.sliding_layers * min(tokens, self.window) + 2 * tokens
        return 2 * self.kv_heads * self.head_dim * itemsize * held


@dataclass(frozen=True)
class VisionShape:
    """One encoding's sizes: ``images`` encoded at once, each ``tokens`` wide tokens of ``hidden``."""

    kind: str
    tokens: int
    hidden: int
    intermediate: int
    layers: int
    pixels: int  # values per image
    images: int = 1
    stem: tuple[int, ...] = ()
    voxels: int = 0  # conv stem resolution (pixels / channels)
    kept_states: int = 0  # hidden states kept besides the working ones
    float32: bool = False

    def activation_bytes(self, itemsize: int, slack: float) -> int:
        s = 4 if self.float32 else itemsize
        inputs = self.pixels * 4 + (0 if s == 4 else self.pixels * s)
        embed = self.pixels * s + self.tokens * self.hidden * s
        if self.stem:
            widest = max(a + 2 * b for a, b in zip((self.pixels // max(self.voxels, 1), *self.stem),
                                                   self.stem))
            embed = max(widest * self.voxels, 2 * (self.pixels + self.stem[-1] * self.voxels)) * s
        block = self.tokens * max(7 * self.hidden, 2 * self.hidden + 2 * self.intermediate) * s
        kept = self.kept_states * self.tokens * self.hidden * s
        return int(self.images * (inputs + max(embed, block + kept)) * slack)


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read once from a folder: tensors per part, text and vision sizes."""

    folder: Path
    parts: dict[str, PartSize]
    text: TextShape
    vision: VisionShape | None
    image_tokens: int
    labels: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model needs at ``dtype`` for a prompt and answer of the given lengths (see the module)."""

    folder: str
    dtype: str
    weights: dict[str, int]
    kv_cache: int
    activations: int
    encoder: int
    overhead: int
    image_tokens: int
    prompt_tokens: int
    answer_tokens: int
    batch: int = 1
    at_precision: dict[str, int] = field(default_factory=dict)  # weight bytes at every precision

    @property
    def weight_bytes(self) -> int:
        return sum(self.weights.values())

    @property
    def total(self) -> int:
        return self.weight_bytes + self.overhead + self.encoder + self.kv_cache + self.activations

    def as_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "total_bytes": self.total, "weights_bytes": dict(self.weights),
                "kv_cache_bytes": self.kv_cache, "activation_bytes": self.activations,
                "encoder_bytes": self.encoder, "overhead_bytes": self.overhead,
                "image_tokens": self.image_tokens, "prompt_tokens": self.prompt_tokens,
                "answer_tokens": self.answer_tokens, "batch": self.batch,
                "weights_at_precision": dict(self.at_precision)}


# -- reading a folder --------------------------------------------------------------------------------------
def _part(name: str) -> str:
    if any(k in name for k in ("seg_module", "seg_projector", "segmentation.", "grounding_head.")):
        return "other"
    if any(k in name for k in ("vision_tower", "vision_model", "visual.")):
        return "vision"
    if any(k in name for k in ("perceiver.", "multi_modal_projector", "mm_projector")):
        return "perceiver"
    return "language"


def _is_linear(name: str, shape: list[int]) -> bool:
    return len(shape) == 2 and name.endswith(".weight") and not any(k in name for k in _NOT_LINEAR)


def read_parts(files: list[Path], float32_parts: tuple[str, ...] = ()) -> dict[str, PartSize]:
    """Tensor sizes per part from safetensors headers (a cut or garbled file is a CheckpointError)."""
    parts = {name: PartSize(keep_float32=name in float32_parts)
             for name in ("vision", "perceiver", "language", "other")}
    for path in files:
        for name, tensor in safetensors_header(path).items():
            if name == "__metadata__":
                continue
            shape, dtype = tensor.get("shape", []), tensor.get("dtype", "F32")
            count, part = math.prod(shape), parts[_part(name)]
            if dtype in _FLOATS:
                part.floats += count
                if _is_linear(name, shape):
                    for kind, linear in part.quantizable.items():
                        if kernel_takes(kind, *shape):
                            linear.add(*shape)
            else:
                part.integer_bytes += count * _INTEGERS.get(dtype, 4)
    return parts


def _sliding(text: dict) -> int:
    types = text.get("layer_types")
    if types:
        return sum(t == "sliding_attention" for t in types)
    pattern = text.get("sliding_window_pattern")
    if pattern and text.get("sliding_window"):
        return text["num_hidden_layers"] - text["num_hidden_layers"] // int(pattern)
    return 0


def text_shape(text: dict, masks: bool = False) -> TextShape:
    """A text config's sizes (kv heads default to the heads, head dim to hidden / heads)."""
    heads = text["num_attention_heads"]
    hidden = text["hidden_size"]
    sliding = _sliding(text)
    return TextShape(layers=text["num_hidden_layers"], hidden=hidden,
                     intermediate=text.get("intermediate_size") or 4 * hidden,
                     kv_heads=text.get("num_key_value_heads") or heads,
                     head_dim=text.get("head_dim") or hidden // heads, vocab=text.get("vocab_size", 32000),
                     sliding_layers=sliding, window=(text.get("sliding_window") or 0) if sliding else 0,
                     masks=masks)


def _grid(vision: dict) -> list[int]:
    image, patch = vision["image_size"], vision["patch_size"]
    if isinstance(image, int):
        return [1, image // patch, image // patch]
    return [i // p for i, p in zip(image, patch)]


def _perceiver_tokens(perceiver: dict, grid: list[int]) -> int:
    kind = perceiver.get("perceiver_type", "spp")
    if kind in ("qformer_global", "mlp_mixer", "attn_pool"):
        return perceiver.get("num_queries", 256)
    if kind == "mlp2x":
        return math.prod(grid)
    size = perceiver.get("pooling_size", 2)
    sizes = list(size) if isinstance(size, (list, tuple)) else [size] * 3
    return math.prod(g // (k if g > 1 else 1) for g, k in zip(grid, sizes))


def _ours_vision(vision: dict, images: int, keep_states: int) -> VisionShape:
    kind = vision.get("model_type", "radreport_vit3d")
    grid = _grid(vision)
    if kind in ("clip_vision_model", "siglip_vision_model"):
        side, channels = vision["image_size"], vision.get("num_channels", 3)
        tokens = math.prod(grid) + (kind == "clip_vision_model")
        return VisionShape(kind, tokens, vision["hidden_size"], vision["intermediate_size"],
                           vision["num_hidden_layers"], channels * side * side, images,
                           kept_states=keep_states * (vision["num_hidden_layers"] + 1))
    channels = vision.get("in_channels", 1)
    voxels = math.prod(vision["image_size"])
    if kind == "radreport_ctvit":
        hidden = vision.get("hidden_size", 512)
        ff = int(vision.get("ff_mult", 4) * 2 / 3 * hidden)
        return VisionShape(kind, math.prod(grid), hidden, 2 * ff, vision.get("spatial_depth", 4),
                           channels * voxels, images, float32=True)
    return VisionShape(kind, math.prod(grid) + bool(vision.get("use_cls_token", True)), vision["hidden_size"],
                       vision["intermediate_size"], vision["num_hidden_layers"], channels * voxels, images,
                       stem=tuple(vision.get("conv_stem_channels") or ()), voxels=voxels)


def _ours(config: dict) -> tuple[TextShape, VisionShape, int, str]:
    vision, preprocess = config["vision_config"], config.get("preprocess") or {}
    ct = vision.get("model_type") in ("radreport_vit3d", "radreport_ctvit")
    separate = not ct and preprocess.get("stitch", "horizontal") == "separate"
    images = preprocess.get("max_images", 4) if separate else 1
    shape = _ours_vision(vision, images, keep_states=0 if ct else 1)
    tokens = _perceiver_tokens(config.get("perceiver_config") or {}, _grid(vision))
    tokens += vision.get("conv_stem_detectors", 0) if ct else 0
    return text_shape(config["text_config"]), shape, tokens * images, "ct" if ct else "xray"


def _gemma3(config: dict) -> tuple[TextShape, VisionShape, int, str]:
    scope = (config.get("scope") or {}).get("modalities") or ["ct"]
    preprocess = config.get("preprocess") or {}
    images = preprocess.get("max_slices", 85) if "ct" in scope else preprocess.get("max_images", 4)
    vision = {"model_type": "siglip_vision_model", **config["vision_config"]}
    vision.setdefault("num_channels", 3)
    shape = _ours_vision(vision, images, keep_states=0)
    tokens = config.get("mm_tokens_per_image", 256) * images
    return text_shape(config["text_config"], masks=True), shape, tokens, "ct" if "ct" in scope else "xray"


def _llava(config: dict) -> tuple[TextShape, VisionShape | None, int, str]:
    vision = config.get("vision_config") or {}
    shape = None
    if {"image_size", "patch_size", "hidden_size"} <= set(vision):
        vision = {"model_type": "clip_vision_model", "intermediate_size": 4 * vision["hidden_size"],
                  "num_hidden_layers": 24, **vision}
        shape = _ours_vision(vision, 1, keep_states=1)
    tokens = config.get("image_seq_length") or (shape.tokens - 1 if shape else 576)
    return text_shape(config.get("text_config") or config), shape, tokens, "xray"


def _m3d(config: dict, files: list[Path]) -> tuple[TextShape, VisionShape, int, str]:
    """A raw M3D-LaMed folder: the text config is config.json itself, the ViT's sizes are its tensors'."""
    shapes = {n: t["shape"] for f in files for n, t in safetensors_header(f).items() if n != "__metadata__"}
    prefix = "model.vision_tower.vision_tower."
    hidden = shapes.get(prefix + "cls_token", [768])[-1]
    layers = len({k.split(".")[4] for k in shapes if k.startswith(prefix + "blocks.")}) or 12
    vision = {"model_type": "radreport_vit3d", "image_size": config.get("image_size", [32, 256, 256]),
              "patch_size": config.get("patch_size", [4, 16, 16]), "hidden_size": hidden,
              "intermediate_size": shapes.get(prefix + "blocks.0.mlp.linear1.weight", [4 * hidden])[0],
              "num_hidden_layers": layers, "in_channels": config.get("image_channel", 1)}
    perceiver = {"perceiver_type": "spp", "pooling_size": config.get("proj_pooling_size", 2)}
    return (text_shape(config), _ours_vision(vision, 1, 0), _perceiver_tokens(perceiver, _grid(vision)), "ct")


def read_shape(folder: str | Path) -> ModelShape:
    """The sizes memory depends on, from ``folder``'s config.json and safetensors headers."""
    from napari_radreport.modeling.prompt_spec import model_labels

    folder = Path(folder)
    config, files = read_config(folder), weight_files(folder)
    kind = config.get("model_type")
    if kind == "radreport":
        text, vision, tokens, modality = _ours(config)
    elif kind in _M3D_TEXT_TYPES:
        text, vision, tokens, modality = _m3d(config, files)
    elif kind == "gemma3":
        text, vision, tokens, modality = _gemma3(config)
    else:
        text, vision, tokens, modality = _llava(config)
    keep = ("vision",) if vision is not None and vision.float32 else ()
    labels = len(model_labels(config.get("prompt"), modality))
    return ModelShape(folder, read_parts(files, keep), text, vision, tokens, labels)


# -- the estimate ------------------------------------------------------------------------------------------
def _compute_itemsize(precision: str, device: str) -> int:
    """Bytes per value of the activations and cache: the dtype's, or with quantized weights the device's
    default compute dtype (float32 on the CPU, bfloat16 on a GPU)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if precision in ITEMSIZE:
        return ITEMSIZE[precision]
    return ITEMSIZE["float32"] if _kind(device) == "cpu" else ITEMSIZE["bfloat16"]


def _language_activations(text: TextShape, prompt: int, answer: int, batch: int, s: int, slack: float) -> int:
    run = prompt if batch == 1 else batch * answer  # the tokens of the largest forward pass
    per_token = (4 * text.hidden + 3 * text.intermediate) * s
    masks = 2 * run * (prompt + (answer if batch > 1 else 0)) if text.masks else 0
    rows = batch * answer if batch > 1 else 1  # logits kept: every tail position of a batch, else the last
    logits = rows * text.vocab * s + min(rows, answer) * text.vocab * 8  # + one row's log-softmax in float32
    return int((run * per_token + masks) * slack) + logits


def _kind(device: str) -> str:
    return "cpu" if device == "cpu" else "gpu"


def estimate_shape(shape: ModelShape, dtype_name: str, *, prompt_tokens: int, answer_tokens: int,
                   batch: int = 1, image_tokens: int | None = None, device: str = "cpu") -> MemoryEstimate:
    """The estimate for an already read ``ModelShape`` (see ``estimate``)."""
    s = _compute_itemsize(dtype_name, device)
    image = shape.image_tokens if image_tokens is None else image_tokens
    context = image + prompt_tokens
    kv_tokens = context + answer_tokens if batch == 1 else (1 + batch) * context + batch * answer_tokens
    slack = ALLOCATOR_SLACK[_kind(device)]
    encoder = shape.vision.activation_bytes(s, slack) if shape.vision is not None else 0
    weights = {name: part.bytes_at(dtype_name, s) for name, part in shape.parts.items()}
    return MemoryEstimate(
        folder=str(shape.folder), dtype=dtype_name, weights=weights,
        kv_cache=shape.text.kv_bytes(kv_tokens, s),
        activations=_language_activations(shape.text, context, answer_tokens, batch, s, slack),
        encoder=encoder, overhead=OVERHEAD_BYTES[_kind(device)], image_tokens=image,
        prompt_tokens=prompt_tokens, answer_tokens=answer_tokens, batch=batch,
        at_precision={p: sum(part.bytes_at(p, _compute_itemsize(p, device)) for part in shape.parts.values())
                      for p in PRECISIONS})


def estimate(folder: str | Path, dtype_name: str, *, prompt_tokens: int, answer_tokens: int,
             batch: int = 1, image_tokens: int | None = None, device: str = "cpu") -> MemoryEstimate:
    """The memory ``folder``'s model needs on ``device`` at ``dtype_name`` (float32, bfloat16, float16, int8,
    int4) for a prompt of ``prompt_tokens`` text tokens after its image tokens (from the config unless given)
    and an answer of ``answer_tokens``; ``batch`` > 1: that many answers at once over copies of the prompt's
    cache."""
    return estimate_shape(read_shape(folder), dtype_name, prompt_tokens=prompt_tokens,
                          answer_tokens=answer_tokens, batch=batch, image_tokens=image_tokens, device=device)


def report_estimate(folder: str | Path | ModelShape, dtype_name: str, *, device: str = "cpu",
                    prompt_tokens: int = DEFAULT_PROMPT_TOKENS, answer_tokens: int = DEFAULT_ANSWER_TOKENS,
                    diagnosis_prompt_tokens: int = DIAGNOSIS_PROMPT_TOKENS,
                    diagnosis_tail_tokens: int = DIAGNOSIS_TAIL_TOKENS) -> MemoryEstimate:
    """The larger of a report's two peaks: its longest section (one sequence) and the diagnosis it is
    checked against (up to 18 labels at once over copies of the image's cache: the text all the questions
    share, then each label's tail)."""
    shape = folder if isinstance(folder, ModelShape) else read_shape(folder)
    write = estimate_shape(shape, dtype_name, prompt_tokens=prompt_tokens, answer_tokens=answer_tokens,
                           device=device)
    if not shape.labels:
        return write
    diagnose = estimate_shape(shape, dtype_name, prompt_tokens=diagnosis_prompt_tokens,
                              answer_tokens=diagnosis_tail_tokens, batch=min(DIAGNOSIS_BATCH, shape.labels),
                              device=device)
    return max(write, diagnose, key=lambda e: e.total)


# -- what fits ---------------------------------------------------------------------------------------------
def fits(estimate: MemoryEstimate, free_bytes: int | None, margin: float = MARGIN) -> bool:
    """Whether ``estimate`` x ``margin`` fits in ``free_bytes`` (unknown free memory: assume it fits)."""
    return free_bytes is None or estimate.total * margin <= free_bytes


def size_text(count: float) -> str:
    """'15.9 GiB', '230 MiB'."""
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.0f} MiB"


_LABELS = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "int8": "8-bit weights",
           "int4": "4-bit weights"}
_RANK = {"float32": 0, "float16": 1, "bfloat16": 1, "int8": 2, "int4": 3}


def cheaper(dtype_name: str, device: str) -> list[str]:
    """The precisions to offer after ``dtype_name``, largest first: bfloat16, then 8-bit and 4-bit weights
    (``modeling/quantize.py``, on any device)."""
    order = ["bfloat16", "int8", "int4"]
    return [p for p in order if _RANK[p] > _RANK.get(dtype_name, 0)]


def offer(model: str | Path | ModelShape, dtype_name: str, free_bytes: int, device: str = "cuda", *,
          margin: float = MARGIN) -> str:
    """One line: what a report needs at ``dtype_name``, what is free, and the cheaper precisions up to the
    first that fits (or accelerate's offload when none does)."""
    shape = model if isinstance(model, ModelShape) else read_shape(model)
    need = report_estimate(shape, dtype_name, device=device).total
    line = f"needs about {size_text(need)} in {dtype_name}, {size_text(free_bytes)} free"
    options = []
    for precision in cheaper(dtype_name, device):
        option = report_estimate(shape, precision, device=device)
        ok = fits(option, free_bytes, margin)
        verb = " needs" if not options else ""
        options.append(f"{_LABELS[precision]}{verb} {size_text(option.total)}" + (" (fits)" if ok else ""))
        if ok:
            return f"{line}: {', '.join(options)}"
    where = "disk" if device == "cpu" else "CPU memory"
    rest = f"{', '.join(options)}; " if options else ""
    return (f"{line}: {rest}none fits; accelerate's offload (device_map=\"auto\") would keep what fits here "
            f"and the rest on {where}, much slower")


def plan(folder: str | Path, dtype_name: str, free_bytes: int | None, device: str = "cpu", *,
         margin: float = MARGIN) -> tuple[MemoryEstimate, str | None]:
    """(a report's estimate at ``dtype_name`` on ``device``; None when it fits in ``free_bytes``, else the
    ``offer`` line)."""
    shape = read_shape(folder)
    chosen = report_estimate(shape, dtype_name, device=device)
    if fits(chosen, free_bytes, margin):
        return chosen, None
    return chosen, offer(shape, dtype_name, int(free_bytes or 0), device, margin=margin)
