"""maekit finetune [-c CONFIG] [key.sub=value ...]: the command line of commands/finetune.py."""

from __future__ import annotations

import argparse

from .common import add_config_parser

HELP = "Fine-tune a whole encoder (pretrained=RUN_DIR or HF_DIR, or none for the from-scratch baseline)."


def add_parser(sub) -> argparse.ArgumentParser:
    return add_config_parser(sub, "finetune", HELP)


def run(args: argparse.Namespace) -> None:
    from ..common import resolve
    from ..finetune import run as finetune

    finetune(*resolve("finetune", args.config, args.overrides))
