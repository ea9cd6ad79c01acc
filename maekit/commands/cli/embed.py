"""maekit embed RUN_DIR [data.key=value ...]: the command line of commands/embed.py."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser(
        "embed",
        help="Encoder features of a data split as a .npy file (plus labels).",
        description="Encoder features [N, D] (float32 .npy, every patch visible) of a split, and "
        "<stem>_labels.npy when the data have labels. RUN_DIR is a maekit run or a Hugging Face "
        "ViTMAE directory; the data are the run's own (its saved data config) with data.key=value "
        "overrides on top (required for a Hugging Face directory without maekit metadata). Write "
        "the overrides right after RUN_DIR; options go before RUN_DIR or after the overrides.",
    )
    e.add_argument("run_dir", help="maekit run directory or Hugging Face ViTMAE directory")
    e.add_argument("overrides", nargs="*", metavar="data.key=value")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument(
        "--pool", default="mean", choices=["mean", "cls"], help="mean of the patch tokens (default) or the cls token"
    )
    e.add_argument(
        "--out",
        default=None,
        help="features .npy path (default: features_<split>_<pool>.npy in the run "
        "directory; in the current directory for a Hugging Face directory)",
    )
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    return e


def run(args: argparse.Namespace) -> None:
    from ..embed import run as embed

    embed(args.run_dir, args.split, args.pool, args.out, args.overrides, args.batch_size, args.device, args.threads)
