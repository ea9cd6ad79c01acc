"""maekit sweep -c CONFIG --grid KEY=V1,V2 ...: the command line of commands/sweep.py."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    w = sub.add_parser(
        "sweep",
        help="Pretrain every cell of a grid of config values (then optionally evaluate each); tables and figures.",
        description="Pretrain every cell of a grid (e.g. --grid model.patch_size=2,4 model.mask_ratio=0.75,0.85), "
        "each in its own run directory under the sweep directory (out=DIR), optionally followed by downstream "
        "evaluations; writes sweep.csv, sweep.md, heatmaps, overlaid loss curves and reconstructions. Running it "
        "again skips finished cells and resumes an interrupted one. Write key=value overrides right after -c "
        "CONFIG (downstream ones as knn.labels=600); a --grid item with one value is an override too.",
    )
    w.add_argument("-c", "--config", help="YAML pretraining config (optional sections linprobe:, finetune:, knn:)")
    w.add_argument("overrides", nargs="*", metavar="key.sub=value")
    w.add_argument(
        "--grid", nargs="+", required=True, metavar="KEY=V1,V2", help="config key and its comma-separated values"
    )
    w.add_argument(
        "--then", default="", metavar="linprobe,finetune,knn", help="evaluations to run on every cell after pretraining"
    )
    return w


def run(args: argparse.Namespace) -> None:
    from ..sweep import run as sweep

    sweep(args.config, args.grid, args.overrides, [m.strip() for m in args.then.split(",") if m.strip()])
