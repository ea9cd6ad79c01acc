"""The layering of docs/architecture.md (the design's "imports only go down this list"), checked on the source text
with `ast` (nothing is imported): imports only go down the layers, and no module uses another maekit module's private
(`_name`) names. Imports inside functions count, and so do `__import__`/`importlib.import_module` calls
whose module name starts with a literal "maekit.".

The layer of each unit (a top-level module or subpackage of maekit/). A unit may import its own modules
(data/loader.py -> data/readers.py) and any unit on a strictly lower layer; never one on its own or a higher
layer. A unit that is missing here fails the test, so a new module gets a place on purpose.

| layer | units                    | why there                                                                   |
|-------|--------------------------|-----------------------------------------------------------------------------|
| 0     | models                   | pure torch (DESIGN convention 1): imports no other maekit module            |
| 0     | errors                   | MaekitError, the one user-facing exception; imports nothing from maekit     |
| 0     | version                  | `__version__` alone, so environment.py need not import the package root     |
| 1     | files                    | safe writes; raises errors                                                  |
| 1     | environment              | what a run ran on (needs version); read by data, engine, commands           |
| 2     | config                   | dataclasses + YAML; needs models (ModelConfig, PRESETS), files, errors      |
| 3     | data                     | readers and transforms; needs config (DataConfig), environment (memory)     |
| 4     | engine                   | the trainer, run dir, checkpoints; train.py uses data.loader.step_batches   |
| 5     | plots, metrics, interop  | libraries for commands: plots reads engine.rundir's metrics.jsonl; metrics  |
|       |                          | is pure torch; interop (transformers ViTMAE) needs config, models, files    |
| 6     | physics                  | detector geometry, jet generator, physics metrics; its pictures use plots   |
| 6     | runs                     | a run as a library: load_run, checkpoint metadata, batched inference; needs |
|       |                          | engine (checkpoints), data, interop (HF dirs); physics and runs are apart   |
| 7     | commands                 | one file per user-facing command; they may import each other's public names |
| 8     | api                      | the Python face: calls commands                                             |
| 9     | cli                      | the argparse face: each command of commands/cli registers and runs itself   |
| 10    | maekit (root), __main__  | the package root re-exports api lazily; `python -m maekit` runs cli         |
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "maekit"

LAYERS: dict[str, int] = {
    "models": 0,
    "errors": 0,
    "version": 0,
    "files": 1,
    "environment": 1,
    "config": 2,
    "data": 3,
    "engine": 4,
    "plots": 5,
    "metrics": 5,
    "interop": 5,
    "physics": 6,
    "runs": 6,
    "commands": 7,
    "api": 8,
    "cli": 9,
    "maekit": 10,
    "__main__": 10,
}


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """maekit -> 'maekit' (the root); maekit.engine.train -> 'engine'; maekit.cli -> 'cli'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    importer: str  # dotted module name of the importing file
    module: str  # the maekit module imported (a submodule where `from pkg import submodule`)
    name: str | None  # the name taken from it, or None for the module itself
    attribute: bool = False  # `module.name` used on a module imported elsewhere in the file, not an import


def _literal_prefix(node: ast.expr) -> str | None:
    """The module named by a string literal, or by the literal start of an f-string up to its last dot."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        head = str(node.values[0].value)
        return head.rsplit(".", 1)[0] if "." in head else None
    return None


def collect(pkg: Path = PKG) -> tuple[list[Import], set[str]]:
    """Every import of a maekit module (or of a name from one) made anywhere in pkg, and the set of modules."""
    files = sorted(pkg.rglob("*.py"))
    modules = {module_name(p, pkg) for p in files}
    top = pkg.name
    found: list[Import] = []
    for path in files:
        me = module_name(path, pkg)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        rel = str(path.relative_to(pkg.parent))
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        aliases: dict[str, str] = {}  # local name -> maekit module it is bound to (whole file, any scope)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == top:
                        found.append(Import(rel, node.lineno, me, a.name, None))
                        aliases[a.asname or top] = a.name if a.asname else top
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != top:
                    continue
                for a in node.names:
                    sub = f"{source}.{a.name}"
                    if sub in modules:  # `from maekit.engine import dist`: the submodule itself
                        found.append(Import(rel, node.lineno, me, sub, None))
                        aliases[a.asname or a.name] = sub
                    else:
                        found.append(Import(rel, node.lineno, me, source, a.name))
            elif isinstance(node, ast.Call) and node.args:
                f = node.func
                called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if called in ("__import__", "import_module"):
                    target = _literal_prefix(node.args[0])
                    if target and target.split(".")[0] == top:
                        found.append(Import(rel, node.lineno, me, target, None))
        # attribute use of a private name on an imported maekit module: `dist._helper`, `maekit.engine._x`
        inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or id(node) in inner:
                continue  # each chain a.b.c once, from its outermost node
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if not isinstance(base, ast.Name) or base.id not in aliases:
                continue
            current = aliases[base.id]
            for attr in reversed(chain):
                if f"{current}.{attr}" not in modules:
                    found.append(Import(rel, node.lineno, me, current, attr, attribute=True))
                    break
                current = f"{current}.{attr}"
    return found, modules


def private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_violations(imports: list[Import]) -> list[str]:
    return [
        f"{i.file}:{i.line} uses the private name {i.name!r} of {i.module}"
        for i in imports
        if private(i.name) and i.module != i.importer
    ]


def layer_violations(imports: list[Import], layers: dict[str, int] = LAYERS) -> list[str]:
    out = []
    for i in imports:
        src, dst = unit(i.importer), unit(i.module)
        if src == dst or i.attribute:  # the import that bound the module is checked itself
            continue
        if layers[dst] >= layers[src]:
            out.append(
                f"{i.file}:{i.line} imports {i.module} ({dst}, layer {layers[dst]}) from {src} "
                f"(layer {layers[src]}): imports only go down the layers (tests/test_architecture.py)"
            )
    return out


IMPORTS, MODULES = collect()


def test_every_unit_has_a_layer():
    missing = sorted({unit(m) for m in MODULES} - set(LAYERS))
    assert not missing, f"give these maekit units a layer in tests/test_architecture.py's LAYERS: {missing}"
    stale = sorted(set(LAYERS) - {unit(m) for m in MODULES})
    assert not stale, f"LAYERS names units that no longer exist: {stale}"


def test_the_scan_sees_the_imports_it_must():
    """The collector is not vacuous: an import of each kind is found."""

    def seen(importer: str, module: str) -> bool:
        return any(i.importer == importer and i.module == module for i in IMPORTS)

    assert seen("maekit.engine.train", "maekit.engine.dist")  # from .dist import ...
    assert seen("maekit.environment", "maekit.version")  # inside a function
    assert seen("maekit.physics.metrics", "maekit.plots")  # from ..plots import ..., inside a function
    assert seen("maekit.api", "maekit.commands")  # __import__(f"maekit.commands.{command}", ...)
    assert seen("maekit.__main__", "maekit.cli")
    assert len(IMPORTS) > 100


def test_no_module_uses_another_modules_private_names():
    bad = private_violations(IMPORTS)
    assert not bad, "\n".join(bad)


def test_imports_only_go_down_the_layers():
    bad = layer_violations(IMPORTS)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "code, expect",
    [
        (
            "from .engine.dist import _helper\n",
            "maekit/plots.py:1 uses the private name '_helper' of maekit.engine.dist",
        ),
        (
            "def f():\n    from .engine import dist\n    return dist._helper\n",
            "maekit/plots.py:3 uses the private name '_helper' of maekit.engine.dist",
        ),
        (
            "def f():\n    import maekit.commands.common\n",
            "maekit/plots.py:2 imports maekit.commands.common (commands, layer 7) from plots (layer 5)",
        ),
        ("from . import api\n", "maekit/plots.py:1 imports maekit.api (api, layer 8) from plots (layer 5)"),
    ],
)
def test_the_checks_report_a_violation(tmp_path, code, expect):
    """A copy of the package with one bad line in plots.py: the report names the file, the line and the module."""
    pkg = tmp_path / "maekit"
    for p in PKG.rglob("*.py"):
        q = pkg / p.relative_to(PKG)
        q.parent.mkdir(parents=True, exist_ok=True)
        q.write_text(
            code if p.name == "plots.py" and p.parent == PKG else p.read_text(encoding="utf-8"), encoding="utf-8"
        )
    imports, _ = collect(pkg)
    bad = private_violations(imports) + layer_violations(imports)
    assert any(b.startswith(expect) for b in bad), bad
