"""Command line: `maekit <command> ...`. It builds the top-level parser, lets each command of commands/cli/ register
itself (`add_parser(sub)`), and dispatches to that command's `run(args)`; errors become one line and an exit status.
No command-specific logic here (tests/test_cli_structure.py checks it)."""

from __future__ import annotations

import argparse
import sys
import traceback

from .commands.cli import COMMANDS
from .errors import MaekitError
from .version import __version__


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="maekit", description="Masked-autoencoder pretraining of ViTs, and honest downstream evaluation."
    )
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--version", action="version", version=f"maekit {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
        return 0
    except MaekitError as e:
        from .engine.train import Interrupted

        if isinstance(e, Interrupted):
            print(f"maekit: {e}", file=sys.stderr)
            return 130
        if args.debug:
            traceback.print_exc()
        print(f"maekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
