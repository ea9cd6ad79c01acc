"""maekit knn [-c CONFIG] [key.sub=value ...]: the command line of commands/knn.py."""

from __future__ import annotations

import argparse

from .common import add_config_parser

HELP = "Weighted k-NN on encoder features (pretrained=RUN_DIR, HF_DIR or none)."


def add_parser(sub) -> argparse.ArgumentParser:
    return add_config_parser(sub, "knn", HELP)


def run(args: argparse.Namespace) -> None:
    from ..common import resolve
    from ..knn import run as knn

    knn(*resolve("knn", args.config, args.overrides))
