"""The command-line convention (docs/architecture.md): each command's module in maekit/commands/cli/ registers its own
arguments (`add_parser(sub)`) and runs (`run(args)`); maekit/cli.py only builds the top-level parser, lets each command
register, and dispatches, with no command-specific logic; and building the parser (`maekit --help`,
`maekit pretrain --help`) imports neither torch nor numpy, so that help and `--version` stay instant."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from maekit.cli import build_parser
from maekit.commands.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "maekit" / "cli.py"
FACES = ROOT / "maekit" / "commands" / "cli"
GENERIC_ARGS = {"run", "debug"}  # the only attributes of the parsed arguments cli.py may read
TOP_OPTIONS = {"--debug", "--version"}  # the only arguments cli.py may add itself
# the maekit modules that cli.py and the commands' command-line modules may import at the top
LIGHT_MAEKIT = {"maekit.errors", "maekit.version", "maekit.commands.cli"}


def command_names() -> set[str]:
    """Every command and subcommand name the commands register (pretrain, data, inspect, jets, generate, ...)."""
    names: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    names.add(name)
                    walk(child)

    walk(build_parser())
    return names


def cli_logic_violations(source: str, names: set[str]) -> list[str]:
    """What in cli.py's source would be command-specific logic: a command's name, a read of a command's own argument
    (`args.command == ...`, `args.mask_ratios`), an argument of its own beyond --debug/--version."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            bad.append(f"line {node.lineno}: names the command {node.value!r}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "args"
            and node.attr not in GENERIC_ARGS
        ):
            bad.append(f"line {node.lineno}: reads args.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            flags = {a.value for a in node.args if isinstance(a, ast.Constant)}
            if not flags <= TOP_OPTIONS:
                bad.append(f"line {node.lineno}: adds the argument {sorted(flags)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_parser"
            and (node.keywords or any(isinstance(a, (ast.Constant, ast.JoinedStr)) for a in node.args))
        ):
            bad.append(f"line {node.lineno}: registers a command itself")  # a command's module does: add_parser(sub)
    return bad


def top_level_imports(path: Path) -> set[str]:
    """The modules a file imports at its top level (not inside functions), as absolute dotted names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_cli_py_has_no_command_specific_logic():
    names = command_names()
    assert {"pretrain", "reconstruct", "data", "inspect", "jets", "generate", "compress"} <= names
    bad = cli_logic_violations(CLI.read_text(encoding="utf-8"), names)
    assert not bad, (
        "maekit/cli.py must only build the top parser and dispatch; move this into the command's "
        "module in maekit/commands/cli/:\n" + "\n".join(bad)
    )


@pytest.mark.parametrize(
    "code, expect",
    [
        ('if args.command == "reconstruct":\n    pass\n', "names the command 'reconstruct'"),
        ("ratios = args.mask_ratios.split(',')\n", "reads args.mask_ratios"),
        ('sub.add_parser("export").add_argument("run_dir")\n', "adds the argument ['run_dir']"),
        ('sub.add_parser(name, help="Pretrain a ViT-MAE.")\n', "registers a command itself"),
    ],
)
def test_the_cli_check_reports_logic(code, expect):
    """The check is not vacuous: a line of the kind the old cli.py had is found."""
    bad = cli_logic_violations(code, command_names())
    assert any(expect in b for b in bad), bad


def test_every_command_registers_and_runs_itself():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    for face in COMMANDS:
        before = set(sub.choices)
        parser = face.add_parser(sub)
        added = set(sub.choices) - before
        assert isinstance(parser, argparse.ArgumentParser) and len(added) == 1, face.__name__
        assert face.__name__.rsplit(".", 1)[1] == added.pop(), "a command's module is named after the command"
        assert callable(face.run)
    modules = {p.stem for p in FACES.glob("*.py")} - {"__init__", "common"}
    registered = {face.__name__.rsplit(".", 1)[1] for face in COMMANDS}
    assert modules == registered, "every module of commands/cli is registered"


@pytest.mark.parametrize("path", sorted([CLI, *FACES.glob("*.py")]), ids=lambda p: p.name)
def test_the_command_line_imports_only_light_modules_at_the_top(path):
    """cli.py and the commands' command-line modules import only the standard library, maekit.errors, maekit.version
    and each other at the top; a command's work is imported inside its run()."""
    heavy = sorted(
        m
        for m in top_level_imports(path)
        if m.split(".")[0] not in sys.stdlib_module_names
        and m not in LIGHT_MAEKIT
        and not m.startswith("maekit.commands.cli.")
    )
    assert not heavy, f"{path.relative_to(ROOT)} imports {heavy} at the top; import it inside run()"
    assert top_level_imports(path), "the scan sees the imports"


def test_help_and_version_import_no_torch():
    """A real process: the top-level help, each command's help and --version load no torch (nor numpy)."""
    code = (
        "import contextlib, io, json, sys\n"
        "from maekit.cli import main\n"
        "calls = [['--help'], ['--version'], ['data', 'pack', '--help'], ['jets', 'generate', '--help']]\n"
        "calls += [[c, '--help'] for c in sys.argv[1:]]\n"
        "codes = []\n"
        "for argv in calls:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as e:\n"
        "            codes.append(e.code)\n"
        "print(json.dumps({'codes': codes, 'loaded': sorted(m for m in ('torch', 'numpy') if m in sys.modules),\n"
        "                  'faces': 'maekit.commands.cli.pretrain' in sys.modules}))\n"
    )
    tops = sorted(n for n in command_names() if n not in ("inspect", "preview", "pack", "generate"))
    r = subprocess.run([sys.executable, "-c", code, *tops], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["codes"] == [0] * (4 + len(tops)) and got["faces"], got
    assert got["loaded"] == [], f"maekit --help imported {got['loaded']}: keep heavy imports inside run()"
