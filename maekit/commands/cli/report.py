"""maekit report DIR: the command line of commands/report.py."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    rp = sub.add_parser(
        "report",
        help="One self-contained report.html for a run, compare or sweep directory.",
        description="Write DIR/report.html: configuration, environment, loss curves, "
        "reconstructions, result tables, confusion matrices and plots of a run, "
        "compare or sweep directory (images embedded; no network needed to view it).",
    )
    rp.add_argument("dir", metavar="DIR")
    rp.add_argument("--out", default=None, help="HTML path (default: DIR/report.html)")
    return rp


def run(args: argparse.Namespace) -> None:
    from ..report import run as report

    print(f"report: {report(args.dir, args.out)}")
