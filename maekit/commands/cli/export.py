"""maekit export RUN_DIR OUT_DIR: the command line of commands/export.py."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    x = sub.add_parser(
        "export",
        help="Write a run's best checkpoint as a Hugging Face transformers ViTMAE directory.",
        description="Write a run's best checkpoint as a Hugging Face transformers ViTMAE directory: config.json, "
        "model.safetensors, preprocessor_config.json (load with ViTMAEForPreTraining / ViTMAEModel / ViTImageProcessor "
        ".from_pretrained). Square images only. Usage: maekit export RUN_DIR [--format hf] OUT_DIR (options anywhere). "
        "OUT_DIR must be new, empty, or a previous maekit export (which is replaced).",
    )
    x.add_argument("run_dir", metavar="RUN_DIR", help="maekit run directory (or a Hugging Face ViTMAE directory)")
    x.add_argument("out_dir", metavar="OUT_DIR", help="directory to write")
    x.add_argument(
        "--format", default="hf", choices=["hf"], help="hf: transformers ViTMAE (the only format, the default)"
    )
    return x


def run(args: argparse.Namespace) -> None:
    from ..export import run as export

    export(args.run_dir, args.out_dir, args.format)
