"""``radreport convert``: a public checkpoint folder -> this project's format; ``radreport models``: the model
folders the plugin recognises, with their family, size, scope, memory at each precision and what a report
needs at this machine's default precision (``engine/memory_plan.py``)."""

from __future__ import annotations

import argparse
import json


def cmd_convert_model(args: argparse.Namespace) -> int:
    if args.format == "ct-chat":
        from napari_radreport.modeling.ct_chat import convert_ct_chat as convert
    else:
        from napari_radreport.modeling.m3d import convert_m3d as convert

    out = convert(args.src, args.dst, allow_pickle=args.allow_pickle)
    print(f"converted {args.src} -> {out}")
    return 0


def _estimates(entries) -> tuple[str, str, dict]:
    """(device, precision, {model path: its report estimate or None}) at this machine's default precision."""
    from napari_radreport.engine import device as dev
    from napari_radreport.engine import memory_plan
    from napari_radreport.modeling.checkpoints import CheckpointError

    device = dev.resolve_device("auto")
    dtype = str(dev.resolve_dtype(device)).removeprefix("torch.")
    found = {}
    for entry in entries:
        try:
            found[entry.path] = (None if entry.problem else
                                 memory_plan.report_estimate(entry.path, dtype, device=device))
        except (CheckpointError, KeyError, TypeError, ValueError):  # a config missing a size it needs
            found[entry.path] = None
    return device, dtype, found


def _need_line(estimate, device: str) -> str:
    from napari_radreport.engine.memory_plan import size_text

    if estimate is None:
        return ""
    return (f"; a report needs about {size_text(estimate.total)} in {estimate.dtype} on {device} "
            f"(weights {size_text(estimate.weight_bytes)}, key/value cache {size_text(estimate.kv_cache)}, "
            f"encoder {size_text(estimate.encoder)})")


def cmd_models(args: argparse.Namespace) -> int:
    from napari_radreport.engine.engine import default_model
    from napari_radreport.modeling.catalog import describe_line, describe_model, find_models
    from napari_radreport.user_settings import UserSettings

    folder = args.folder or UserSettings.load().models_folder
    entries = find_models(folder) if folder else []
    demo = default_model()
    if not args.folder and demo is not None:
        entries.insert(0, describe_model(demo))
    device, _dtype, estimates = _estimates(entries)
    if args.json:
        listed = [{**e.as_dict(), "memory_estimate": ({**estimates[e.path].as_dict(), "device": device}
                                                      if estimates[e.path] else None)} for e in entries]
        print(json.dumps(listed, indent=1))
        return 0
    if not entries:
        where = folder or "the Settings dock's models folder (none set; give DIR)"
        print(f"radreport: no model folders in {where}")
        return 0
    for entry in entries:
        print(describe_line(entry) + _need_line(estimates[entry.path], device))
    return 0


def add_model_commands(sub, common: argparse.ArgumentParser) -> None:
    models = sub.add_parser("models", parents=[common], help="list the model folders in a folder",
                            description="List the model folders in DIR (default: the Settings dock's models "
                                        "folder, and the demo model) with their family, parameters, scope "
                                        "and the memory their weights take at each precision, and what a "
                                        "report needs at this machine's default precision (weights, "
                                        "key/value cache, activations); nothing loads.")
    models.add_argument("folder", nargs="?", metavar="DIR", help="a folder of model folders (or one model)")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=cmd_models)

    convert = sub.add_parser("convert", parents=[common],
                             help="convert a public checkpoint to this project's format")
    convert.add_argument("format", choices=["m3d", "ct-chat"],
                         help="m3d: an M3D-LaMed folder (Llama-2 or Phi-3); ct-chat: a folder holding "
                              "CT-CHAT's parts (CT-CLIP encoder, LoRA folder, Llama 3.1 base, its "
                              "conversation.py; models/ct-chat/README.md)")
    convert.add_argument("src", help="local checkpoint folder (config.json, *.safetensors, tokenizer), or "
                                     "for ct-chat the folder holding its parts")
    convert.add_argument("dst", help="output folder")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="accept .bin/.pt weights (runs pickle code)")
    convert.set_defaults(func=cmd_convert_model)
