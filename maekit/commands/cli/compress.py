"""maekit compress RUN_DIR: the command line of commands/compress.py."""

from __future__ import annotations

import argparse

from ...errors import MaekitError


def add_parser(sub) -> argparse.ArgumentParser:
    z = sub.add_parser(
        "compress",
        help="The MAE as a lossy codec for detector images: bytes and physics fidelity vs raw and sparse storage.",
        description="Encode images to float16 latent tokens (+ visible-patch indices) at several "
        "mask ratios, decode them, and compare bytes per image and physics fidelity with raw "
        "float32 and a zero-suppressed sparse encoding. Writes compress.json and compress.md.",
    )
    z.add_argument("run_dir", metavar="RUN_DIR", help="maekit pretraining run on float detector images")
    z.add_argument(
        "--data", default=None, help="data file (same format and preprocessing as the run's; default: the run's own)"
    )
    z.add_argument("--split", default="test", choices=["train", "val", "test"])
    z.add_argument("--mask-ratios", default="0,0.5,0.75,0.9", help="comma-separated (default 0,0.5,0.75,0.9)")
    z.add_argument("--limit", type=int, default=2000, help="images (default 2000)")
    z.add_argument("--seed", type=int, default=0, help="seed of the masks")
    z.add_argument("--out", default=None, help="output folder (default RUN_DIR/compress_<split>)")
    z.add_argument(
        "--hit-decoding",
        default="top",
        help="model.loss=hit_intensity: top (default), sample or calibrated, as in reconstruct",
    )
    return z


def run(args: argparse.Namespace) -> None:
    try:
        ratios = tuple(float(v) for v in args.mask_ratios.split(",") if v.strip())
    except ValueError:
        raise MaekitError(f"--mask-ratios must be comma-separated numbers, got {args.mask_ratios!r}") from None
    from ..compress import run as compress

    compress(args.run_dir, args.data, args.split, ratios, args.limit, args.seed, args.out, args.hit_decoding)
