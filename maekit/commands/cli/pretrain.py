"""maekit pretrain [-c CONFIG] [key.sub=value ...]: the command line of commands/pretrain.py."""

from __future__ import annotations

import argparse

from .common import add_config_parser

HELP = "Pretrain a ViT-MAE."


def add_parser(sub) -> argparse.ArgumentParser:
    return add_config_parser(sub, "pretrain", HELP)


def run(args: argparse.Namespace) -> None:
    from ..common import resolve
    from ..pretrain import run as pretrain

    pretrain(*resolve("pretrain", args.config, args.overrides))
