"""maekit report DIR: one self-contained report.html for a run, compare or sweep directory.

Images are embedded as base64 PNG data URIs and the style is inline, so the file opens without a network and
can be mailed or attached as it is. Whatever exists is shown: configuration, environment (versions, git commit,
hardware), loss curves, reconstruction grids, result tables, confusion matrices and accuracy-vs-labels plot.
Every string that comes from the run (names, paths, class names, config values) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

from ..engine.rundir import read_metrics
from ..errors import MaekitError
from ..files import atomic_write_text
from .cells import METRICS, SUMMARY_HEADER, read_csv, summarize, summary_row

DOWNSTREAM_KINDS = ("linprobe", "finetune", "knn", "scratch", "cnn", "pixel_knn", "linprobe_random", "knn_random")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.0em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: .8em; font-size: .8em; overflow-x: auto; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .8em; color: #555; }
nav a { margin-right: 1em; } .scroll { overflow-x: auto; } .note { color: #555; font-size: .9em; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class Page:
    """Sections of escaped HTML, rendered with a table of contents."""

    def __init__(self, title: str, root: Path):
        self.title = title
        self.root = root
        self.sections: list[tuple[str, list[str]]] = []

    def section(self, title: str) -> list[str]:
        parts: list[str] = []
        self.sections.append((title, parts))
        return parts

    def image(self, path: Path, caption: str | None = None) -> str:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        cap = caption if caption is not None else _rel(path, self.root)
        return (
            f'<figure><img src="data:image/png;base64,{data}" '
            f'alt="{esc(cap)}"><figcaption>{esc(cap)}</figcaption></figure>'
        )

    def render(self) -> str:
        nav = " ".join(f'<a href="#s{i}">{esc(t)}</a>' for i, (t, parts) in enumerate(self.sections) if parts)
        body = "\n".join(
            f'<section id="s{i}"><h2>{esc(t)}</h2>\n' + "\n".join(parts) + "\n</section>"
            for i, (t, parts) in enumerate(self.sections)
            if parts
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(self.title)}</title><style>{STYLE}</style></head>\n<body>\n"
            f'<h1>{esc(self.title)}</h1>\n<p class="note">directory: '
            f"<code>{esc(self.root)}</code></p>\n<nav>{nav}</nav>\n{body}\n</body></html>\n"
        )


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _number(key: str, value: Any) -> str:
    """Table text for a value: accuracies as %, other floats with 4 significant digits."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return value
        if not re.fullmatch(r"[-+]?[\d.]+(e[-+]?\d+)?|nan|inf", value.strip(), re.I):
            return value
        value = f if ("." in value or "e" in value.lower() or "nan" in value.lower()) else int(f)
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if "accuracy" in key and "%" not in key:
            return f"{100 * value:.2f}%"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def table(header: list[str], rows: Iterable[list[Any]], text_cols: int = 1, formatted: bool = False) -> str:
    """An HTML table; values are formatted by _number (unless `formatted`) and escaped."""
    head = "".join(f'<th class="{"text" if i < text_cols else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = v if formatted else _number(header[i] if i < len(header) else "", v)
            cells.append(f'<td class="{"text" if i < text_cols else ""}">{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def csv_table(path: Path, text_cols: int = 1) -> str:
    header, rows = read_csv(path)
    if not header:
        return ""
    return table(header, [[r.get(k) for k in header] for r in rows], text_cols)


def _env_section(page: Page, root: Path) -> None:
    from ..environment import environment

    parts = page.section("Environment")
    info = json.loads((root / "run.json").read_text()) if (root / "run.json").exists() else {}
    env = info.get("env")
    if env:
        parts.append('<p class="note">Recorded when the run started.</p>')
    else:
        env = environment()
        parts.append(
            '<p class="note">This run did not record its environment; shown: the machine that wrote this report.</p>'
        )
    names = {
        "python": "Python",
        "torch": "torch",
        "maekit": "maekit",
        "git_commit": "git commit",
        "platform": "platform",
        "cpu": "CPU",
        "cpu_count": "CPU cores",
        "torch_threads": "torch threads",
        "gpu": "GPU",
    }
    rows = [[names.get(k, k), "none" if v is None else v] for k, v in env.items()]
    extra = [[k, v] for k, v in info.items() if k not in ("env", "kind") and not isinstance(v, (dict, list))]
    parts.append(table(["", "value"], rows + extra, text_cols=2))


def _config_section(page: Page, root: Path) -> None:
    f = root / "config.yaml"
    if f.exists():
        page.section("Configuration").append(f"<pre>{esc(f.read_text())}</pre>")


def _last(paths: Iterable[Path]) -> Path | None:
    paths = sorted(paths)
    return paths[-1] if paths else None


def _pretrain_sections(page: Page, root: Path, prefix: str = "") -> None:
    curves = page.section(prefix + "Loss curves")
    if (root / "loss.png").exists():
        curves.append(page.image(root / "loss.png"))
    rows = [r for r in read_metrics(root) if "img_per_s" in r]
    if rows:
        keys = [k for k in ("train_recon_loss", "val_recon_loss", "test_recon_loss") if any(k in r for r in rows)]
        curves.append(
            "<h3>Per epoch</h3>"
            + table(
                ["epoch", "step", *keys, "images/s", "epoch time (s)"],
                [
                    [r["epoch"] + 1, r["step"], *[r.get(k) for k in keys], r["img_per_s"], r["epoch_time_s"]]
                    for r in rows
                ],
            )
        )
    recon = page.section(prefix + "Reconstructions")
    grid = _last(root.glob("recon_epoch*.png"))
    if grid is not None:
        recon.append(page.image(grid))
    for f in sorted(root.glob("reconstruct_*.png")):
        recon.append(page.image(f))
    jl = root / "reconstruct.jsonl"
    if jl.exists():
        recs = [json.loads(x) for x in jl.read_text().splitlines() if x.strip()]
        recon.append(
            table(
                ["split", "images", "mask ratio", "seed", "reconstruction loss"],
                [[r["split"], r["images"], r["mask_ratio"], r["seed"], r["recon_loss"]] for r in recs],
            )
        )


def _downstream_sections(page: Page, root: Path) -> None:
    res = root / "result.json"
    if res.exists():
        r = json.loads(res.read_text())
        page.section("Result").append(table(["", "value"], [[k, v] for k, v in r.items()], text_cols=1))
    curves = page.section("Training curves")
    if (root / "curves.png").exists():
        curves.append(page.image(root / "curves.png"))
    if (root / "confusion_matrix.png").exists():
        page.section("Confusion matrix").append(page.image(root / "confusion_matrix.png"))


def _compare_sections(page: Page, root: Path) -> None:
    results = []  # the cells of the comparison (results.csv), not the learning-rate trials next to them in cells/
    if (root / "results.csv").exists():
        for r in read_csv(root / "results.csv")[1]:
            num = {
                k: float(r[k]) if r.get(k) not in (None, "") else float("nan")
                for k in ("test_accuracy", "test_roc_auc", "val_accuracy")
            }
            results.append({**r, **num, "labels": int(float(r["labels"]))})
    parts = page.section("Results")
    if results:
        parts.append(
            "<h3>Mean ± std over seeds (test split)</h3>"
            + table(SUMMARY_HEADER, [summary_row(r) for r in summarize(results)], text_cols=2, formatted=True)
        )
    if (root / "results.md").exists():
        notes = [line[2:] for line in (root / "results.md").read_text().splitlines() if line.startswith("- ")]
        if notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    if (root / "results.csv").exists():
        parts.append("<h3>Every cell</h3>" + csv_table(root / "results.csv"))
    if (root / "accuracy_vs_labels.png").exists():
        page.section("Accuracy vs labels").append(page.image(root / "accuracy_vs_labels.png"))
    if (root / "pretrain" / "run.json").exists():
        _pretrain_sections(page, root / "pretrain", "Pretraining: ")
    cms = page.section("Confusion matrices")
    for f in sorted((root / "cells").glob("*/confusion_matrix.png")):
        cms.append(page.image(f, f.parent.name))


def _sweep_sections(page: Page, root: Path) -> None:
    parts = page.section("Results")
    if (root / "sweep.csv").exists():
        parts.append(csv_table(root / "sweep.csv"))
    if (root / "sweep.md").exists():  # what the numbers mean
        notes = [
            line for line in (root / "sweep.md").read_text().splitlines() if line and not line.startswith(("|", "!["))
        ]
        parts.extend(f'<p class="note">{esc(line)}</p>' for line in notes)
    heat = page.section("Heatmaps")
    order = {f"heatmap_{m}.png": i for i, (m, _, _) in enumerate(METRICS)}
    for f in sorted(root.glob("heatmap_*.png"), key=lambda f: (order.get(f.name, len(order)), f.name)):
        heat.append(page.image(f))
    curves = page.section("Loss curves")
    if (root / "loss_curves.png").exists():
        curves.append(page.image(root / "loss_curves.png"))
    recon = page.section("Reconstructions")
    if (root / "reconstructions.png").exists():
        recon.append(page.image(root / "reconstructions.png"))
    cms = page.section("Confusion matrices")
    for f in sorted((root / "cells").glob("*/*/confusion_matrix.png")):
        cms.append(page.image(f, f"{f.parent.parent.name}: {f.parent.name}"))


def build(root: Path) -> str:
    info = root / "run.json"
    if not info.exists():
        raise MaekitError(f"{root} is not a maekit run, compare or sweep directory (no run.json)")
    try:
        kind = json.loads(info.read_text()).get("kind")
    except (json.JSONDecodeError, AttributeError):
        raise MaekitError(f"{info} is not valid JSON (expected a maekit run.json)") from None
    page = Page(f"maekit {kind} report: {root.resolve().name}", root)
    if kind == "pretrain":
        _pretrain_sections(page, root)
    elif kind in DOWNSTREAM_KINDS:
        _downstream_sections(page, root)
    elif kind == "compare":
        _compare_sections(page, root)
    elif kind == "sweep":
        _sweep_sections(page, root)
    else:
        raise MaekitError(f"{info} has kind {kind!r}; expected a pretrain, downstream, compare or sweep run")
    _config_section(page, root)
    _env_section(page, root)
    return page.render()


def run(directory: str, out: str | None = None) -> Path:
    root = Path(directory)
    if not root.is_dir():
        raise MaekitError(f"report: {root} is not a directory (expected a run, compare or sweep directory)")
    path = Path(out) if out else root / "report.html"
    atomic_write_text(path, build(root))
    return path
