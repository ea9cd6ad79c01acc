"""Cells: the sub-runs of `maekit compare` and `maekit sweep`, each in its own run directory under DIR/cells/.

One policy for every such run directory (`prepare`): a finished run is skipped; an interrupted run that can
continue (a trained method with a checkpoint) resumes from its last checkpoint; any other leftover directory
is deleted and run again; and, where asked, a run found on disk must have been run with the same recipe
(its config.yaml) or the command stops with an error naming the keys that differ. One rule for "is this
pretraining finished?" (`pretraining_finished`), and one writer and reader for the result tables (CSV and
markdown) that compare, sweep and report share, with the names their columns are shown under.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import shutil
import statistics
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import DownstreamConfig, read_yaml, to_dict
from ..engine.dist import barrier
from ..engine.rundir import read_metrics
from ..errors import MaekitError
from ..files import atomic_write_text, previous_path
from ..metrics import AUC_UNDEFINED, text_or_na
from ..models.mae import PRETRAINING_ONLY_FIELDS

CELLS = "cells"  # the folder of a compare or sweep directory that holds its cells

# ---------------------------------------------------------------- names and directories


def name_part(value: str) -> str:
    """A piece of a directory name: runs of characters other than letters, digits and ._+- become '-'."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", value).strip("-") or "x"


def cell_name(parts: list[tuple[str, str]]) -> str:
    """[('finetune', ''), ('labels', '600'), ('seed', '0')] -> 'finetune_labels600_seed0'
    (key and value, '_' between)."""
    return "_".join(f"{key}{value}" for key, value in parts)


def cell_dir(out: Path, name: str) -> Path:
    return Path(out) / CELLS / name


def open_dir(out: Path, kind: str) -> None:
    """Make a compare or sweep directory and record its kind and the environment it started in (run.json,
    written once; every cell's run.json has its own)."""
    from ..environment import environment

    out.mkdir(parents=True, exist_ok=True)
    if not (out / "run.json").exists():
        atomic_write_text(out / "run.json", json.dumps({"kind": kind, "env": environment()}, indent=1))


# ---------------------------------------------------------------- finished, resumable, same recipe


def pretraining_finished(run_dir: Path, epochs: int) -> bool:
    """A pretraining run is finished when its last evaluation is of its last epoch and both its checkpoints
    are there (`last`, written after that evaluation, and `best`, which the downstream runs load)."""
    rows = [r for r in read_metrics(run_dir) if "val_recon_loss" in r]
    ckpts = Path(run_dir) / "checkpoints"
    return (
        bool(rows)
        and rows[-1]["epoch"] + 1 >= epochs
        and (ckpts / "last.safetensors").exists()
        and (ckpts / "best.safetensors").exists()
    )


def can_resume(run_dir: Path) -> bool:
    """A run directory that a resumed run can continue: a maekit run (run.json) with a last checkpoint."""
    last = Path(run_dir) / "checkpoints" / "last.safetensors"
    return (Path(run_dir) / "run.json").exists() and (last.exists() or previous_path(last).exists())


def run_precision(run_dir: Path) -> str | None:
    """The precision a run trained in ('fp32', 'bf16', ...), as its run.json recorded it; None if it has none."""
    info = Path(run_dir) / "run.json"
    return json.loads(info.read_text()).get("precision") if info.exists() else None


def saved_precision(run_dir: Path) -> str | None:
    """train.precision in a run directory's saved config.yaml (None when there is none)."""
    saved = Path(run_dir) / "config.yaml"
    return (read_yaml(saved).get("train") or {}).get("precision") if saved.exists() else None


def flat_keys(d: dict, prefix: str = "") -> dict:
    """A nested config (or section) as {"a.b": value}."""
    out = {}
    for k, v in d.items():
        out.update(flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_same_recipe(run_dir: Path, cfg: Any) -> None:
    """A run found on disk is reused only if its saved config.yaml is the config that would run now; otherwise
    the error names the keys that differ (a changed recipe must not be mixed with old results). A downstream run
    builds only the encoder, so the model fields of the decoder and the pretraining objective do not count."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.exists():
        return
    saved = flat_keys(read_yaml(saved_file))
    via_yaml = lambda c: flat_keys(yaml.safe_load(yaml.safe_dump(to_dict(c))))  # noqa: E731 (as the saved file went)
    want = via_yaml(cfg)
    # a key added to maekit after the cell ran was, in effect, at its default then
    defaults = via_yaml(type(cfg)())
    unused = {"out", "resume"}
    if isinstance(cfg, DownstreamConfig):
        unused |= {f"model.{f}" for f in PRETRAINING_ONLY_FIELDS}
    keys = sorted(k for k in set(saved) | set(want) if k not in unused and saved.get(k, defaults.get(k)) != want.get(k))
    if keys:
        diff = ", ".join(f"{k} {saved.get(k)!r} -> {want.get(k)!r}" for k in keys[:4]) + (
            f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
        )
        raise MaekitError(
            f"{run_dir} was run with another recipe ({diff}); remove "
            "that cell directory to rerun it, or use another out=DIR"
        )


def prepare(
    run_dir: Path,
    cfg: Any,
    *,
    resumable: bool,
    finished: Callable[[Path], bool] | None = None,
    check_recipe: bool = False,
    main: bool = True,
) -> Any | None:
    """What to do with one run directory of a cell: None when it is finished (skip it; by default finished
    means it holds a result.json), else the config to run it with: `resume=True` for an interrupted run of a
    `resumable` method that has a checkpoint to continue from, else `resume=False` and any leftover directory
    is deleted (by the main process). With `check_recipe`, a finished or resumable run must have been run
    with `cfg`'s recipe. Under torchrun every process calls this and all of them decide on the same files."""
    done = finished or (lambda d: (d / "result.json").exists())
    barrier()  # every process decides on the same files
    is_done, exists, resume = done(run_dir), run_dir.exists(), resumable and can_resume(run_dir)
    barrier()
    if check_recipe and (is_done or resume):
        check_same_recipe(run_dir, cfg)  # never mix results of another recipe into the table
    if is_done:
        return None
    cfg = dataclasses.replace(cfg, resume=resume)
    if exists and not resume and main:
        shutil.rmtree(run_dir)
    barrier()
    return cfg


# ---------------------------------------------------------------- tables


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """A CSV table with these columns (keys a row lacks are empty, other keys are left out)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A table written by write_csv: its columns and its rows (every value a string, '' when empty)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def markdown_table(header: list[str], right: list[bool], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table; `right` says which columns are right-aligned (numbers)."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "".join("---:|" if r else "---|" for r in right),
        *["| " + " | ".join(row) + " |" for row in rows],
    ]


def fmt(value: Any, spec: str) -> str:
    """A table value in `spec` ('{:.4f}'); '-' for a missing or NaN one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return spec.format(value)


# what compare's methods are called in tables and figures, in table order
LABELS = {
    "finetune": "fine-tune (MAE-pretrained)",
    "scratch": "ViT from scratch (own recipe)",
    "cnn": "small CNN from scratch",
    "pixel_knn": "k-NN on pixels",
    "linprobe": "linear probe (MAE-pretrained)",
    "linprobe_random": "linear probe (random encoder)",
    "knn": "k-NN (MAE-pretrained)",
    "knn_random": "k-NN (random encoder)",
}

# the columns of a sweep's tables that get a heatmap: key, title, format
METRICS = [
    ("train_recon_loss", "train reconstruction loss", "{:.4f}"),
    ("test_recon_loss", "test reconstruction loss", "{:.4f}"),
    ("linprobe_test_accuracy", "linear probe test accuracy", "{:.2%}"),
    ("finetune_test_accuracy", "fine-tune test accuracy", "{:.2%}"),
    ("knn_test_accuracy", "k-NN test accuracy", "{:.2%}"),
    ("params_m", "parameters (M)", "{:.3f}"),
    ("mflops_per_image", "MFLOPs per image (forward)", "{:.1f}"),
    ("img_per_s", "training images/s", "{:.0f}"),
    ("wall_s", "wall time (s)", "{:.0f}"),
]


def summarize(results: list[dict]) -> list[dict]:
    """compare's cells grouped by (method, labels): mean and std over seeds of test accuracy and ROC-AUC."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["method"], r["labels"]), []).append(r)
    rows = []
    for (method, labels), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], list(LABELS).index(kv[0][0]))):
        acc = [r["test_accuracy"] for r in rs]
        auc = [r["test_roc_auc"] for r in rs if r["test_roc_auc"] is not None and not math.isnan(r["test_roc_auc"])]
        rows.append(
            {
                "method": method,
                "labels": labels,
                "seeds": len(rs),
                "mean": statistics.mean(acc),
                "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "auc_mean": statistics.mean(auc) if auc else float("nan"),
                "auc_std": statistics.stdev(auc) if len(auc) > 1 else 0.0,
                "val_mean": statistics.mean(
                    [r["val_accuracy"] for r in rs if r.get("val_accuracy") is not None] or [float("nan")]
                ),
            }
        )
    return rows


SUMMARY_HEADER = ["labelled images", "method", "seeds", "test accuracy (%)", "test ROC-AUC", "val accuracy (%)"]


def summary_row(r: dict) -> list[str]:
    """One row of summarize() as results.md and report.html show it (SUMMARY_HEADER)."""
    return [
        str(r["labels"]),
        LABELS.get(r["method"], r["method"]),
        str(r["seeds"]),
        f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}",
        text_or_na(r["auc_mean"], f"{r['auc_mean']:.4f} ± {r['auc_std']:.4f}", AUC_UNDEFINED),
        f"{100 * r['val_mean']:.2f}",
    ]
