"""maekit linprobe [-c CONFIG] [key.sub=value ...]: the command line of commands/linprobe.py."""

from __future__ import annotations

import argparse

from .common import add_config_parser

HELP = "Linear probe of a frozen encoder (pretrained=RUN_DIR, HF_DIR or none)."


def add_parser(sub) -> argparse.ArgumentParser:
    return add_config_parser(sub, "linprobe", HELP)


def run(args: argparse.Namespace) -> None:
    from ..common import resolve
    from ..linprobe import run as linprobe

    linprobe(*resolve("linprobe", args.config, args.overrides))
