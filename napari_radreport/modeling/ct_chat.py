"""CT-CHAT (Hamamci et al., CT-RATE) released parts -> one folder of this project's format.

CT-CHAT is LLaVA on CT-CLIP's CT-ViT: the encoder's quantised 24 x 24 x 24 tokens, an ``attn_pool+mlp2x_gelu``
projector (256 learned queries), and Llama 3.1 with a LoRA. Its parts are released separately; ``find_parts``
finds them inside one SRC folder by what they hold:

* the encoder: ``clip_visual_encoder.pth`` (CT-ViT's state dict, as CT-CHAT ``llava/serve/encode_script.py``
  loads it) or a whole CT-CLIP checkpoint (``CT-CLIP*.pt``: its ``visual_transformer.*`` part is taken, the
  text tower and latent projections dropped by name);
* the LoRA folder: ``adapter_config.json``, ``adapter_model.safetensors`` (or ``.bin``), ``config.json``
  (``llava_llama``) and ``non_lora_trainables.bin`` (the projector:
  ``base_model.model.model.mm_projector.*``);
* the base: the Llama 3.1 folder the LoRA was trained on (``config.json`` of ``llama``, safetensors,
  ``tokenizer.json``);
* CT-CHAT's ``llava/conversation.py``, read without running it (``conv_llama3``: its system prompt, role
  headers and separator), so its prompt text is taken from its own code at conversion.

The conversion does what CT-CHAT's loader (``llava/model/builder.py``, LoRA branch) does, once: the
``<pad>`` row as the mean of Llama's rows, the projector's key prefixes stripped, the LoRA merged (in
float32, stored in the base's dtype). Its loader gives the four task tokens new random rows on every load
(``resize_token_embeddings``; they were never trained); here they get, in the input and output embeddings,
the mean of the rows before them (CT-CHAT's rule for ``<pad>``), which makes the model deterministic. An
``<image>`` token is added last for the image placeholder (its features replace it; same rule for its rows).
Unknown, missing or misshapen tensors stop the conversion with their names; pickles need ``allow_pickle``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from napari_radreport.modeling.checkpoints import (
    PICKLE_SUFFIXES,
    CheckpointError,
    read_config,
    read_tokenizer,
    require_local_folder,
    safetensors_header,
    weight_files,
)

# CT-CHAT llava/serve/encode_script.py: CTViT(image_size=480, patch_size=20, temporal_patch_size=10) on the
# (1, 1, 240, 480, 480) volume of nii_img_to_tensor.
CT_CHAT_GEOMETRY = {"in_channels": 1, "image_size": [240, 480, 480], "patch_size": [10, 20, 20]}
CT_RATE_SPACING = [1.5, 0.75, 0.75]  # (k, i, j) mm, encode_script.py
# llava/constants.py, in the order llava/model/builder.py adds them (the third is spelled so there)
TASK_TOKENS = ("<multiple_choice>", "<long_answer>", "<short_answe>", "<report_generation>")
PAD_TOKEN = "<pad>"
IMAGE_TOKEN = "<image>"  # this project's placeholder (CT-CHAT splices at the id -200 instead)
PROJECTOR_HEADS = 8  # AttentionalPoolProjector's n_head default, which builder.py does not change
PROVIDED = "<provided>"  # put before the first question by CT-CHAT's web UI (gradio_web_server.py add_text)
ENCODER_PREFIXES = ("clip_visual_encoder", "ct-clip", "ct_clip")
# CT-CLIP parts besides the image encoder (CT_CLIP/ct_clip/ct_clip.py CTCLIP): dropped by name
CT_CLIP_OTHER = ("text_transformer.", "to_text_latent", "to_visual_latent", "temperature", "mlm.",
                 "visual_ssl.")
# CT-ViT tensors that encoding does not use: the decoder side, the quantiser's training state
CT_VIT_UNUSED = ("to_patch_emb_first_frame.", "to_pixels_first_frame.", "to_pixels.", "vq._codebook.initted",
                 "vq._codebook.cluster_size", "vq._codebook.embed_avg")
# our tasks' questions: this project's wording; the task tokens and their spelling are CT-CHAT's web UI's
TASKS = {
    "findings": "Write the findings of the radiology report for this chest CT volume. <report_generation>",
    "impression": "Write the impression of the radiology report for this chest CT volume. "
                  "<report_generation>",
    "region_findings": "Describe the findings in the {region} in this chest CT volume. <long_answer>",
    "diagnosis": "Does this chest CT volume show signs of {label}? <short_answer>",
    "choice": "{question}\n{choices}\nAnswer with the letter of the correct option. <multiple_choice>",
}
SCOPE = {"modalities": ["ct"], "body_regions": ["chest"],
         "training_data": "CT-RATE (25,692 non-contrast chest CT scans of 21,304 patients with their "
                          "reports), as over 2.7 million questions and answers built from the reports",
         "intended_use": "research; CT-RATE, CT-CLIP and CT-CHAT are CC BY-NC-SA 4.0 (non-commercial); "
                         "not for clinical use"}


@dataclass(frozen=True)
class CTChatParts:
    encoder: Path
    lora: Path
    base: Path
    conversation: Path

    def describe(self) -> str:
        return (f"encoder {self.encoder}, LoRA {self.lora}, base {self.base}, "
                f"conversation {self.conversation}")


@dataclass(frozen=True)
class Conversation:
    """CT-CHAT's ``conv_llama3``: the text before the turns, the two role headers and the separator."""

    system: str
    user: str
    assistant: str
    sep: str


def _walk(src: Path, depth: int = 5):
    """(folder, file names) under ``src``, ``depth`` deep (symbolic links followed, hidden folders
    skipped)."""
    base = len(src.parts)
    for folder, dirs, files in os.walk(src, followlinks=True):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        if len(here.parts) - base >= depth:
            dirs[:] = []
        yield here, files


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def find_parts(src: str | Path) -> CTChatParts:
    """The four parts of CT-CHAT inside ``src``; a CheckpointError says which are missing or ambiguous."""
    src = require_local_folder(src)
    encoders, loras, bases, conversations = [], [], [], []
    for folder, files in _walk(src):
        names = set(files)
        if "adapter_config.json" in names and "non_lora_trainables.bin" in names:
            loras.append(folder)
        elif "config.json" in names and "tokenizer.json" in names and _model_type(folder) == "llama":
            bases.append(folder)
        for name in files:
            lower = name.lower()
            if lower.startswith(ENCODER_PREFIXES) and lower.endswith((*PICKLE_SUFFIXES, ".safetensors")):
                encoders.append(folder / name)
            elif name == "conversation.py" and "conv_llama3" in (folder / name).read_text(errors="replace"):
                conversations.append(folder / name)
    only_encoder = [p for p in encoders if p.name.lower().startswith("clip_visual_encoder")]
    encoders = only_encoder or encoders
    found = {"encoder (clip_visual_encoder.pth or CT-CLIP*.pt)": encoders,
             "LoRA folder (adapter_config.json + non_lora_trainables.bin)": loras,
             "Llama 3.1 base folder (config.json of model_type llama + tokenizer.json)": bases,
             "CT-CHAT's llava/conversation.py": conversations}
    missing = [what for what, paths in found.items() if not paths]
    several = [f"{what}: {', '.join(str(p) for p in paths)}" for what, paths in found.items()
               if len(paths) > 1]
    if missing or several:
        parts = ([f"missing: {'; '.join(missing)}"] if missing else []) + \
                ([f"more than one {'; '.join(several)}"] if several else [])
        raise CheckpointError(f"{src}: not a CT-CHAT source folder ({' | '.join(parts)}); see "
                              "models/ct-chat/README.md for the parts and where each goes")
    return CTChatParts(encoders[0], loras[0], bases[0], conversations[0])


def is_ct_chat_source(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding CT-CHAT's four parts (``find_parts`` finds each exactly once)."""
    try:
        find_parts(path)
    except CheckpointError:
        return False
    return True


# -- the prompt ------------------------------------------------------------------------------------------
def read_conversation(path: Path) -> Conversation:
    """``conv_llama3`` of CT-CHAT's conversation.py, read as literals (the file is not run)."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot be read as Python ({exc})") from exc
    call = next((node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "conv_llama3" for t in node.targets)
                 and isinstance(node.value, ast.Call)), None)
    if call is None:
        raise CheckpointError(f"{path}: no conv_llama3 = Conversation(...): not CT-CHAT's conversation.py")
    fields = {k.arg: k.value for k in call.keywords if k.arg}
    try:
        system, sep = ast.literal_eval(fields["system"]), ast.literal_eval(fields["sep"])
        roles = ast.literal_eval(fields["roles"])
        style = fields["sep_style"]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: conv_llama3 lacks a literal system, roles, sep_style or sep") from exc
    if not (isinstance(style, ast.Attribute) and style.attr == "MPT"):
        raise CheckpointError(f"{path}: conv_llama3's sep_style is not SeparatorStyle.MPT; this converter "
                              "writes the MPT layout (system + sep, then role + message + sep per turn)")
    if not (isinstance(system, str) and isinstance(sep, str) and len(roles) == 2
            and all(isinstance(r, str) for r in roles)):
        raise CheckpointError(f"{path}: conv_llama3's system, roles or sep are not strings")
    return Conversation(system=system, user=roles[0], assistant=roles[1], sep=sep)


def _jinja(text: str) -> str:
    """A Jinja string literal for ``text`` (Jinja reads string literals with Python's unicode escapes)."""
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def chat_template(conv: Conversation) -> str:
    """A chat template that writes CT-CHAT's prompt: BOS (the one its tokenizer adds), the system text (which
    starts with a second ``<|begin_of_text|>``) and the separator, then role header + message + separator per
    turn and the assistant's header; ``<provided>`` after the image placeholder's line break in the first
    message, as CT-CHAT's web UI puts it before the first question."""
    sep, user, assistant = _jinja(conv.sep), _jinja(conv.user), _jinja(conv.assistant)
    return ("{{ bos_token }}{{ " + _jinja(conv.system) + " }}{{ " + sep + " }}"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'user' -%}{{ " + user + " }}"
            "{%- if loop.first -%}{{ message['content'] | replace('\\n', '\\n" + PROVIDED + "', 1) }}"
            "{%- else -%}{{ message['content'] }}{%- endif -%}{{ " + sep + " }}"
            "{%- elif message['role'] == 'assistant' -%}{{ " + assistant + " }}{{ message['content'] }}"
            "{{ " + sep + " }}"
            "{%- else -%}{{ raise_exception('CT-CHAT takes user and assistant turns only') }}{%- endif -%}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ " + assistant + " }}{%- endif -%}")


# -- reading the parts ------------------------------------------------------------------------------------
def read_tensors(path: Path, *, allow_pickle: bool) -> dict:
    """{name: tensor} of one weight file; a pickle only with ``allow_pickle`` (loaded with weights_only)."""
    import torch
    from safetensors.torch import load_file

    if path.suffix == ".safetensors":
        safetensors_header(path)
        return load_file(str(path))
    if not allow_pickle:
        raise CheckpointError(f"{path}: a pickle; it can run arbitrary code when loaded. Pass "
                              "allow_pickle=True (--allow-pickle) if you trust its source")
    warnings.warn(f"{path}: loading pickle weights because allow_pickle was given", stacklevel=2)
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as tensors ({str(exc).splitlines()[0]})") from exc
    if isinstance(data, dict) and isinstance(data.get("model"), dict):  # CT-CLIP trainer's {model, optim}
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: not a table of tensors")
    return data


_VIT_RULES = (
    (r"to_patch_emb\.1\.(weight|bias)", r"patch_norm_in.\1"),
    (r"to_patch_emb\.2\.(weight|bias)", r"patch_proj.\1"),
    (r"to_patch_emb\.3\.(weight|bias)", r"patch_norm_out.\1"),
    (r"enc_(spatial|temporal)_transformer\.layers\.(\d+)\.0\.dsconv\.(weight|bias)",
     r"\1.layers.\2.peg.conv.\3"),
    (r"enc_(spatial|temporal)_transformer\.layers\.(\d+)\.1\.norm\.gamma", r"\1.layers.\2.attn.norm.weight"),
    (r"enc_(spatial|temporal)_transformer\.layers\.(\d+)\.1\.(to_q|to_kv|to_out)\.weight",
     r"\1.layers.\2.attn.\3.weight"),
    (r"enc_(spatial|temporal)_transformer\.layers\.(\d+)\.1\.(q_scale|k_scale)", r"\1.layers.\2.attn.\3"),
    (r"enc_(spatial|temporal)_transformer\.layers\.(\d+)\.3\.0\.(weight|bias)", r"\1.layers.\2.ff.norm.\3"),
    (r"enc_(spatial|temporal)_transformer\.layers\.(\d+)\.3\.1\.weight", r"\1.layers.\2.ff.proj_in.weight"),
    (r"enc_(spatial|temporal)_transformer\.layers\.(\d+)\.3\.4\.weight", r"\1.layers.\2.ff.proj_out.weight"),
    (r"enc_(spatial|temporal)_transformer\.norm_out\.gamma", r"\1.norm_out.weight"),
)
# the position bias MLP: net.N.0 is hidden Linear N, net.<last> the output Linear
_BIAS_NET = r"spatial_rel_pos_bias\.net\.(\d+)(\.0)?\.(weight|bias)"
# zero buffers of CT-ViT's bias-free LayerNorms, the unused context norm of its self-attention and its empty
# null key/value table: checked, then dropped
_VIT_CHECKED = (r"enc_(spatial|temporal)_transformer\.(layers\.\d+\.1\.norm|norm_out)\.beta",
                r"enc_(spatial|temporal)_transformer\.layers\.\d+\.1\.context_norm\.(gamma|beta)",
                r"enc_(spatial|temporal)_transformer\.layers\.\d+\.1\.null_kv")


def _vit_name(key: str, value, hidden_layers: int, bad: list[str]) -> tuple[str | None, object]:
    """Our name (None: not CT-ViT's) and tensor for one CT-ViT tensor; problems with it go to ``bad``."""
    if key == "vq._codebook.embed":
        if value.ndim != 3 or value.shape[0] != 1:
            bad.append(f"{key} has shape {list(value.shape)}; one codebook (1, size, dim) expected")
        return "codebook", value[0]
    match = re.fullmatch(_BIAS_NET, key)
    if match:
        index, hidden = int(match.group(1)), bool(match.group(2))
        if hidden:
            return f"position_bias.hidden.{index}.{match.group(3)}", value
        return (f"position_bias.out.{match.group(3)}", value) if index == hidden_layers else (None, value)
    for pattern, target in _VIT_RULES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, target, key), value
    return None, value


def encoder_state(raw: dict, path: Path) -> dict:
    """Our CT-ViT tensors (``vision_tower.*`` names without the prefix) from a CT-ViT or a CT-CLIP state
    dict."""
    if any(k.startswith("visual_transformer.") for k in raw):  # a whole CT-CLIP checkpoint
        other = [k for k in raw if not k.startswith(("visual_transformer.", *CT_CLIP_OTHER))]
        if other:
            raise CheckpointError(f"{path}: unknown tensor names (not CT-CLIP): "
                                  f"{', '.join(sorted(other)[:10])}")
        prefix = "visual_transformer."
        raw = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    hidden_layers = len({m.group(1) for k in raw if (m := re.fullmatch(_BIAS_NET, k)) and m.group(2)})
    out, unknown, bad = {}, [], []
    for key, value in raw.items():
        if key.startswith(CT_VIT_UNUSED):
            continue
        if any(re.fullmatch(rule, key) for rule in _VIT_CHECKED):
            if key.endswith(".beta") and bool(value.any()):
                bad.append(f"{key} is not zero")
            elif key.endswith("null_kv") and value.numel():
                bad.append(f"{key} holds null keys/values (CT-ViT's self-attention has none)")
            continue
        name, tensor = _vit_name(key, value, hidden_layers, bad)
        if name is None:
            unknown.append(key)
        else:
            out[name] = tensor.contiguous()
    if unknown or bad:
        found = ([f"unknown tensor names: {', '.join(sorted(unknown)[:10])}"] if unknown else []) + bad[:5]
        raise CheckpointError(f"{path}: not CT-CHAT's CT-ViT encoder ({'; '.join(found)})")
    return out


def vision_config(state: dict, geometry: dict, path: Path) -> dict:
    """The CT-ViT config whose parameters have the shapes of ``state`` (head size from the query scales,
    depths from the layer numbers); the patch geometry is CT-CHAT's, checked against the patch Linear."""
    import math

    try:
        hidden, patch_dim = state["patch_proj.weight"].shape
        head_dim = state["spatial.layers.0.attn.q_scale"].numel()
        inner = state["spatial.layers.0.attn.to_q.weight"].shape[0]
        ff_inner = state["spatial.layers.0.ff.proj_out.weight"].shape[1]
        codes = state["codebook"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"{path}: no {exc.args[0]}: not a CT-ViT encoder") from exc
    wanted = geometry["in_channels"] * math.prod(geometry["patch_size"])
    if patch_dim != wanted:
        raise CheckpointError(f"{path}: the patch embedding takes {patch_dim} values per patch; CT-CHAT's "
                              f"geometry {geometry['patch_size']} x {geometry['in_channels']} channel(s) "
                              f"gives {wanted}")
    if ff_inner != int(4 * (2 / 3) * hidden):
        raise CheckpointError(f"{path}: feed-forward width {ff_inner} is not CT-ViT's "
                              f"int(4 * 2/3 * {hidden})")
    depth = {side: len({int(m.group(1)) for k in state if (m := re.match(rf"{side}\.layers\.(\d+)\.", k))})
             for side in ("spatial", "temporal")}
    layers = len({k.split(".")[2] for k in state if k.startswith("position_bias.hidden.")})
    return {"model_type": "radreport_ctvit", **geometry, "hidden_size": int(hidden),
            "spatial_depth": depth["spatial"], "temporal_depth": depth["temporal"],
            "num_attention_heads": int(inner // head_dim), "head_dim": int(head_dim),
            "position_bias_layers": layers, "codebook_size": int(codes), "quantize": True}


def projector_state(raw: dict, path: Path) -> tuple[dict, dict]:
    """(our perceiver tensors, base-model tensors it overrides) from non_lora_trainables.bin, its key
    prefixes stripped as CT-CHAT's builder.py does (``base_model.``, then ``model.`` before
    ``model.model.``)."""
    keys = {(k[len("base_model."):] if k.startswith("base_model.") else k): v for k, v in raw.items()}
    if any(k.startswith("model.model.") for k in keys):
        keys = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in keys.items()}
    perceiver, overrides = {}, {}
    for key, value in keys.items():
        match = re.fullmatch(r"model\.mm_projector\.(attn_pool\.(?:query|(?:ln_q|ln_k)\.(?:weight|bias)|"
                             r"(?:to_q|to_kv|to_out)\.weight)|ln\.(?:weight|bias)|proj\.(\d+)\.(?:weight|bias))",
                             key)
        if match:
            name = match.group(1)
            perceiver["projector." + name[len("proj."):] if name.startswith("proj.") else name] = value
        elif key.startswith(("model.layers.", "model.norm.", "model.embed_tokens.", "lm_head.")):
            overrides[key] = value
        else:
            raise CheckpointError(f"{path}: unknown tensor {key!r} (CT-CHAT's projector is "
                                  "model.mm_projector.attn_pool.*, .ln.*, .proj.*)")
    if "attn_pool.query" not in perceiver:
        raise CheckpointError(f"{path}: no model.mm_projector.attn_pool.query: not CT-CHAT's attn_pool "
                              "projector")
    return perceiver, overrides


def _projector_depth(llava: dict, path: Path) -> int:
    kind = str(llava.get("mm_projector_type", ""))
    match = re.fullmatch(r"attn_pool\+mlp(\d+)x_gelu", kind)
    if not match:
        raise CheckpointError(f"{path}/config.json: mm_projector_type {kind!r}; this converter reads "
                              "CT-CHAT's 'attn_pool+mlp<N>x_gelu'")
    return int(match.group(1))


@dataclass(frozen=True)
class LoraDelta:
    a: object  # (r, in)
    b: object  # (out, r)
    scale: float


def lora_deltas(folder: Path, *, allow_pickle: bool) -> dict[str, LoraDelta]:
    """{base tensor name: LoRA factors} of a peft LoRA folder (adapter_config.json + adapter_model.*)."""
    try:
        adapter = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}/adapter_config.json: cannot be read ({exc})") from exc
    checks = (("peft_type", adapter.get("peft_type", "LORA") == "LORA"),
              ("bias", adapter.get("bias", "none") == "none"),
              *((k, not adapter.get(k))
                for k in ("use_dora", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern")))
    problems = [f"{k}={adapter.get(k)!r}" for k, ok in checks if not ok]
    if problems:
        raise CheckpointError(f"{folder}/adapter_config.json: {', '.join(problems)} is not supported "
                              "(a plain LoRA is merged)")
    r, alpha = int(adapter["r"]), float(adapter["lora_alpha"])
    scale = alpha / (r ** 0.5) if adapter.get("use_rslora") else alpha / r
    files = [folder / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (folder / n).is_file()]
    if not files:
        raise CheckpointError(f"{folder}: no adapter_model.safetensors (or .bin)")
    factors: dict[str, dict] = {}
    for key, value in read_tensors(files[0], allow_pickle=allow_pickle).items():
        match = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight", key)
        if not match:
            raise CheckpointError(f"{files[0]}: unknown tensor {key!r} (a LoRA's are "
                                  "base_model.model.<module>.lora_A/lora_B.weight)")
        factors.setdefault(match.group(1) + ".weight", {})[match.group(2)] = value
    lonely = [k for k, ab in factors.items() if set(ab) != {"A", "B"}]
    if lonely:
        raise CheckpointError(f"{files[0]}: lora_A without lora_B (or the reverse) for "
                              f"{', '.join(lonely[:5])}")
    return {k: LoraDelta(ab["A"], ab["B"], scale) for k, ab in factors.items()}


# -- the conversion ---------------------------------------------------------------------------------------
def _expected_keys(config) -> dict[str, tuple]:
    """Tensor names and shapes of our model for ``config``, built on the meta device (no memory)."""
    import torch

    from napari_radreport.modeling.modeling_radreport import RadReportForConditionalGeneration

    with torch.device("meta"):
        model = RadReportForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _mean_rows(weight, base_vocab: int, new: int):
    """``weight`` (base_vocab rows) with ``new`` rows appended, each the mean of the rows before the first."""
    import torch

    mean = weight[:base_vocab].double().mean(dim=0, keepdim=True)
    return torch.cat([weight, mean.to(weight.dtype).expand(new, -1)]).contiguous()


def _tokenizer(base: Path, conv: Conversation):
    from transformers import AutoTokenizer

    tokenizer = read_tokenizer(base, lambda: AutoTokenizer.from_pretrained(str(base), local_files_only=True,
                                                                          trust_remote_code=False))
    start = len(tokenizer)
    # added as builder.py adds them: <pad> (smart_tokenizer_and_embedding_resize), then the task tokens
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    for token in TASK_TOKENS:
        tokenizer.add_tokens(token, special_tokens=True)
    tokenizer.add_tokens(IMAGE_TOKEN, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids([PAD_TOKEN, *TASK_TOKENS, IMAGE_TOKEN])
    if ids != list(range(start, start + 6)):
        raise CheckpointError(f"{base}: the tokenizer already knows some of {PAD_TOKEN}, "
                              f"{', '.join(TASK_TOKENS)}, {IMAGE_TOKEN}: not the Llama 3.1 tokenizer CT-CHAT "
                              "used")
    tokenizer.chat_template = chat_template(conv)
    return tokenizer, start


def _text_config(base: Path, llava: dict, base_vocab: int, pad_id: int) -> dict:
    text = {k: v for k, v in read_config(base).items()
            if k not in ("architectures", "transformers_version", "auto_map", "_name_or_path")}
    if text.get("vocab_size") != base_vocab:
        raise CheckpointError(f"{base}: config.json says vocabulary {text.get('vocab_size')}, the tokenizer "
                              f"has {base_vocab}")
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                "num_key_value_heads"):
        if key in llava and llava[key] != text.get(key):
            raise CheckpointError(f"{base}: {key}={text.get(key)} but the LoRA was trained on "
                                  f"{key}={llava[key]}: not the base CT-CHAT's LoRA belongs to (Llama 3.1 "
                                  "8B or 70B Instruct)")
    if "vocab_size" in llava and llava["vocab_size"] - 1 - len(TASK_TOKENS) != base_vocab:
        raise CheckpointError(f"{base}: vocabulary {base_vocab}, but the LoRA's config.json says "
                              f"{llava['vocab_size']} = base + <pad> + 4 task tokens: another base")
    return {**text, "model_type": "llama", "vocab_size": base_vocab + 2 + len(TASK_TOKENS),
            "pad_token_id": pad_id}


def convert_ct_chat(src: str | Path, dst: str | Path, *, allow_pickle: bool = False,
                    geometry: dict | None = None) -> Path:
    """Write CT-CHAT's parts found in ``src`` as one RadReport model folder ``dst``. ``geometry``: the
    encoder's input size and patch size (CT-CHAT's by default)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_radreport.modeling.configuration import RadReportConfig

    parts = find_parts(src)
    geometry = {**CT_CHAT_GEOMETRY, **(geometry or {})}
    dst = Path(dst)
    conv = read_conversation(parts.conversation)
    llava = read_config(parts.lora)
    depth = _projector_depth(llava, parts.lora)
    vision_state = encoder_state(read_tensors(parts.encoder, allow_pickle=allow_pickle), parts.encoder)
    vision = vision_config(vision_state, geometry, parts.encoder)
    projector, overrides = projector_state(
        read_tensors(parts.lora / "non_lora_trainables.bin", allow_pickle=allow_pickle), parts.lora)
    deltas = lora_deltas(parts.lora, allow_pickle=allow_pickle)
    tokenizer, base_vocab = _tokenizer(parts.base, conv)
    pad_id, image_id = base_vocab, base_vocab + 1 + len(TASK_TOKENS)
    text = _text_config(parts.base, llava, base_vocab, pad_id)
    perceiver = {"perceiver_type": "attn_pool", "num_queries": int(projector["attn_pool.query"].shape[0]),
                 "num_heads": PROJECTOR_HEADS, "projector_depth": depth, "hidden_act": "gelu"}
    preprocess = {"target_shape": list(geometry["image_size"]), "spacing_mm": CT_RATE_SPACING,
                  "intensity": "ct_rate", "hu_window": [-1000.0, 1000.0], "resize": "crop_or_pad",
                  "channels": geometry["in_channels"]}
    config = RadReportConfig(vision_config=vision, perceiver_config=perceiver, text_config=text,
                             image_token=IMAGE_TOKEN, image_token_id=image_id,
                             tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
                             preprocess=preprocess, prompt={"chat_template": True, "tasks": dict(TASKS)},
                             scope=dict(SCOPE))
    expected = _expected_keys(config)

    base_files = weight_files(parts.base, allow_pickle=allow_pickle)
    base_shapes: dict[str, tuple] = {}
    for f in base_files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as handle:
                base_shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})  # noqa: SIM118
        else:
            base_shapes.update({k: tuple(v.shape) for k, v in read_tensors(f, allow_pickle=True).items()})
    new_rows = 2 + len(TASK_TOKENS)
    grown = {"model.embed_tokens.weight", "lm_head.weight"}
    mapped = {f"language_model.{k}": (s[0] + new_rows, *s[1:]) if k in grown else s
              for k, s in base_shapes.items()}
    mapped.update({f"vision_tower.{k}": tuple(v.shape) for k, v in vision_state.items()})
    mapped.update({f"perceiver.{k}": tuple(v.shape) for k, v in projector.items()})
    problems = [f"LoRA for {k}, which the base lacks" for k in deltas if k not in base_shapes]
    problems += [f"{k} {list(v.shape)} overrides a base tensor of shape {list(base_shapes.get(k, ()))}"
                 for k, v in overrides.items() if base_shapes.get(k) != tuple(v.shape)]
    problems += [f"LoRA for {k}: {tuple(d.b.shape[:1]) + tuple(d.a.shape[1:])} != {base_shapes[k]}"
                 for k, d in deltas.items() if k in base_shapes
                 and (d.b.shape[0], d.a.shape[1]) != base_shapes[k]]
    tied = config.text_config.tie_word_embeddings
    missing = sorted(k for k in expected if k not in mapped and not (tied and k.endswith("lm_head.weight")))
    extra = sorted(k for k in mapped if k not in expected)
    wrong = sorted(f"{k} {list(mapped[k])} != {list(expected[k])}" for k in mapped
                   if k in expected and tuple(mapped[k]) != tuple(expected[k]))
    if missing or extra or wrong or problems:
        parts_text = [f"missing: {', '.join(missing[:20])}" if missing else "",
                      f"unexpected: {', '.join(extra[:20])}" if extra else "",
                      f"wrong shape: {', '.join(wrong[:10])}" if wrong else "", "; ".join(problems[:10])]
        raise CheckpointError(f"{parts.describe()}: the weights do not fit the model "
                              f"({'; '.join(p for p in parts_text if p)})")

    dst.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    count = len(base_files) + 1
    for i, f in enumerate(base_files):
        out = {}
        for key, weight in read_tensors(f, allow_pickle=allow_pickle).items():
            weight = overrides.get(key, weight)  # builder.py loads non_lora_trainables over the base
            if key in deltas:
                d = deltas[key]
                weight = (weight.float() + d.scale * (d.b.float() @ d.a.float())).to(weight.dtype)
            if key in grown:
                weight = _mean_rows(weight, base_vocab, new_rows)
            out[f"language_model.{key}"] = weight.contiguous()
        name = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        save_file(out, str(dst / name), metadata={"format": "pt", "converted_from": "ct-chat"})
        weight_map.update(dict.fromkeys(out, name))
        del out
    name = f"model-{count:05d}-of-{count:05d}.safetensors"
    rest = {**{f"vision_tower.{k}": v.float() for k, v in vision_state.items()},  # CT-CHAT runs it in float32
            **{f"perceiver.{k}": v.contiguous() for k, v in projector.items()}}
    save_file(rest, str(dst / name), metadata={"format": "pt", "converted_from": "ct-chat"})
    weight_map.update(dict.fromkeys(rest, name))
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map},
                                                                 indent=1))
    config.architectures = ["RadReportForConditionalGeneration"]
    config.save_pretrained(dst)
    tokenizer.save_pretrained(str(dst))
    if (parts.base / "generation_config.json").is_file():
        shutil.copy2(parts.base / "generation_config.json", dst / "generation_config.json")
    return dst
