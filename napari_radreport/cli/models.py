"""``radreport convert``: a public checkpoint folder -> this project's format."""

from __future__ import annotations

import argparse


def cmd_convert_model(args: argparse.Namespace) -> int:
    from napari_radreport.modeling.m3d import convert_m3d

    out = convert_m3d(args.src, args.dst, allow_pickle=args.allow_pickle)
    print(f"converted {args.src} -> {out}")
    return 0


def add_model_commands(sub, common: argparse.ArgumentParser) -> None:
    convert = sub.add_parser("convert", parents=[common],
                             help="convert a public checkpoint to this project's format")
    convert.add_argument("format", choices=["m3d"], help="m3d: an M3D-LaMed folder (Llama-2 or Phi-3)")
    convert.add_argument("src", help="local checkpoint folder (config.json, *.safetensors, tokenizer)")
    convert.add_argument("dst", help="output folder")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="accept .bin/.pt weights (runs pickle code)")
    convert.set_defaults(func=cmd_convert_model)
