"""maekit compare [-c CONFIG] [key.sub=value ...]: the command line of commands/compare.py."""

from __future__ import annotations

import argparse

from .common import add_config_parser

HELP = "Pretrained vs from-scratch: every method, label budget and seed; tables and plots."


def add_parser(sub) -> argparse.ArgumentParser:
    return add_config_parser(sub, "compare", HELP)


def run(args: argparse.Namespace) -> None:
    from ..common import resolve
    from ..compare import run as compare

    compare(*resolve("compare", args.config, args.overrides))
