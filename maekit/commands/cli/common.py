"""What the config-driven commands (pretrain, linprobe, finetune, knn, compare) share on the command line:
`-c CONFIG` and `key.sub=value` overrides, resolved into the command's config and run directory."""

from __future__ import annotations

import argparse


def add_config_parser(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_ + " Overrides are key.sub=value (values parsed as YAML).")
    p.add_argument("-c", "--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p
