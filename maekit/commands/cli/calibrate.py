"""maekit calibrate RUN_DIR: the command line of commands/calibrate.py."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "calibrate",
        help="Fit the calibrated hit decoding of a model.loss=hit_intensity run on held-out detector images.",
        description="Fits, on the validation split, the temperature of the hits' positions and a per-channel "
        "intensity scale at which the reconstruction's energy and jet mass come out unbiased; writes "
        "RUN_DIR/hit_calibration.json, used by --hit-decoding calibrated (docs/physics.md).",
    )
    c.add_argument("run_dir")
    c.add_argument("--split", default="val", choices=["train", "val"], help="images to fit on (default val)")
    c.add_argument("--limit", type=int, default=2000, help="use the first N images of the split (default 2000)")
    c.add_argument("--seed", type=int, default=0, help="seed of the fixed masks and of the hits' draws")
    return c


def run(args: argparse.Namespace) -> None:
    from ..calibrate import run as calibrate

    calibrate(args.run_dir, args.split, args.limit, args.seed)
