"""maekit reconstruct RUN_DIR: the command line of commands/reconstruct.py."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("reconstruct", help="Reconstruction grid and loss of a run's best checkpoint.")
    r.add_argument("run_dir")
    r.add_argument("--split", default="test", choices=["train", "val", "test"])
    r.add_argument("--n", type=int, default=8, help="images in the grid")
    r.add_argument("--mask-ratio", type=float, default=None, help="default: the run's mask ratio")
    r.add_argument("--seed", type=int, default=0, help="seed of the fixed masks")
    r.add_argument("--limit", type=int, default=None, help="use only the first N images of the split for the loss")
    r.add_argument("--out", default=None, help="grid PNG path (default: in the run directory)")
    r.add_argument(
        "--hit-decoding",
        default="top",
        help="model.loss=hit_intensity: top (the expected number of hits at the most probable pixels, default) or "
        "sample (each pixel's hit drawn from its probability, and with model.hit_variance its intensity too, seeded "
        "by --seed) or calibrated (fitted by `maekit calibrate RUN_DIR`); docs/physics.md",
    )
    return r


def run(args: argparse.Namespace) -> None:
    from ..reconstruct import run as reconstruct

    reconstruct(args.run_dir, args.split, args.n, args.mask_ratio, args.seed, args.limit, args.out, args.hit_decoding)
