"""maekit sweep -c CONFIG --grid KEY=V1,V2 [KEY=V1,V2 ...] [--then linprobe,finetune,knn] [key=value ...]:
pretrain every cell of the grid (any config keys, any number of values) in its own run directory, optionally
followed by downstream evaluations, then sweep.csv, sweep.md, a heatmap per metric, overlaid loss curves and
the same test images reconstructed by every cell.

Layout of the sweep directory (default runs/<config>-<time>, or out=DIR):
  config.yaml, run.json               the base configuration and grid; kind "sweep" and the environment
  cells/<cell>/pretrain/              a pretraining run directory (as `maekit pretrain` writes it)
  cells/<cell>/<linprobe|finetune|knn>/  downstream run directories with result.json
  cells/<cell>/cell.json              the cell's row of sweep.csv, written when the cell is done
  sweep.csv, sweep.md, heatmap_<metric>.png, loss_curves.png, reconstructions.png

Running the same command again skips finished cells and resumes an interrupted pretraining (or fine-tuning)
from its last checkpoint. Downstream sections: `linprobe:`, `finetune:`, `knn:` in CONFIG or overrides such
as knn.labels=600; their data are the cell's pretraining data and `pretrained` is the cell's run.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .. import plots
from ..config import (
    Axis,
    FinetuneConfig,
    KnnConfig,
    LinprobeConfig,
    PretrainConfig,
    apply_overrides,
    from_dict,
    parse_grid,
    parse_override,
    read_yaml,
    save_yaml,
    to_dict,
)
from ..engine import checkpoint
from ..engine.rundir import default_out, read_metrics
from ..errors import MaekitError
from ..files import atomic_write_text
from . import cells as cell_runner, finetune, knn, linprobe, pretrain
from .cells import METRICS

DOWNSTREAM = {
    "linprobe": (LinprobeConfig, linprobe.run),
    "finetune": (FinetuneConfig, finetune.run),
    "knn": (KnnConfig, knn.run),
}
RECON_IMAGES = 6
RECON_SEED = 4321


@dataclass
class Cell:
    name: str  # directory name under cells/
    label: str  # "patch_size=2, mask_ratio=0.75"
    point: dict[str, Any]  # axis key -> value
    pretrain: PretrainConfig
    downstream: dict[str, Any]  # method -> its config (before `pretrained` and data are filled in)


def _short_keys(axes: list[Axis]) -> dict[str, str]:
    last = [a.key.rsplit(".", 1)[-1] for a in axes]
    return {a.key: (s if last.count(s) == 1 else a.key) for a, s in zip(axes, last)}


def _route(overrides: list[str]) -> tuple[list[str], dict[str, list[str]], str | None]:
    """Split key=value overrides into pretraining ones, downstream ones (linprobe./finetune./knn.) and out=."""
    pre: list[str] = []
    down: dict[str, list[str]] = {m: [] for m in DOWNSTREAM}
    out = None
    for o in overrides:
        path, value = parse_override(o)
        if path == ["out"]:
            out = value
        elif path[0] in DOWNSTREAM and len(path) > 1:
            down[path[0]].append(o.split(".", 1)[1])
        else:
            pre.append(o)
    return pre, down, out


def plan(
    config: str | None, grid: list[str], overrides: list[str], then: list[str]
) -> tuple[Path, list[Axis], list[Cell], dict]:
    """Every cell's validated configuration (nothing runs; bad keys and values fail here, before any training)."""
    for m in then:
        if m not in DOWNSTREAM:
            raise MaekitError(f"--then: unknown evaluation {m!r} (known: {', '.join(DOWNSTREAM)})")
    axes, constants = parse_grid(grid)
    if not axes:
        raise MaekitError(
            "--grid needs at least one key with two or more values, e.g. --grid model.mask_ratio=0.75,0.85"
        )
    data = read_yaml(config) if config else {}
    sections = {m: data.pop(m, None) or {} for m in DOWNSTREAM}
    for m, s in sections.items():
        if not isinstance(s, dict):
            raise MaekitError(f"config section '{m}' must be a mapping, got {s!r}")
    pre_over, down_over, out = _route([*overrides, *constants])
    if out is None:
        out = data.get("out")
    out_dir = Path(out) if out else default_out(config, "sweep")
    for key in ("out", "resume"):
        data.pop(key, None)
    base_pre = apply_overrides(data, pre_over)
    base_down = {m: apply_overrides(sections[m], down_over[m]) for m in DOWNSTREAM}
    short = _short_keys(axes)
    cells = []
    for combo in itertools.product(*[range(len(a.raw)) for a in axes]):
        point = {a.key: a.values[i] for a, i in zip(axes, combo)}
        name = cell_runner.cell_name(
            [(cell_runner.name_part(short[a.key]), cell_runner.name_part(a.raw[i])) for a, i in zip(axes, combo)]
        )
        label = ", ".join(f"{short[a.key]}={a.raw[i]}" for a, i in zip(axes, combo))
        pre_sets = [f"{a.key}={a.raw[i]}" for a, i in zip(axes, combo) if a.key.split(".")[0] not in DOWNSTREAM]
        down_sets = {
            m: [f"{a.key.split('.', 1)[1]}={a.raw[i]}" for a, i in zip(axes, combo) if a.key.split(".")[0] == m]
            for m in DOWNSTREAM
        }
        pcfg = from_dict(PretrainConfig, apply_overrides(base_pre, pre_sets))
        pcfg.validate()
        down = {}
        for m in DOWNSTREAM:
            cls = DOWNSTREAM[m][0]
            dcfg = from_dict(cls, apply_overrides(base_down[m], down_sets[m]), prefix=f"{m}.")
            down[m] = dcfg
        for m in then:
            _downstream_config(down[m], pcfg, cell_runner.cell_dir(out_dir, name) / "pretrain").validate()
        cells.append(Cell(name, label, point, pcfg, down))
    if len({c.name for c in cells}) != len(cells):
        raise MaekitError(
            "--grid values give two cells the same directory name; use values that differ in letters or digits"
        )
    record = {
        "grid": {a.key: a.values for a in axes},
        "then": list(then),
        **to_dict(from_dict(PretrainConfig, base_pre)),  # the resolved base configuration, for the reader
        **{m: base_down[m] for m in DOWNSTREAM if base_down[m]},
        # what the user set: compared on reruns
        "given": {**base_pre, **{m: base_down[m] for m in DOWNSTREAM if base_down[m]}},
    }
    return out_dir, axes, cells, record


def _downstream_config(cfg, pcfg: PretrainConfig, pre_dir: Path):
    return dataclasses.replace(cfg, data=pcfg.data, pretrained=str(pre_dir), resume=False, out=None)


INVOCATION = ("stop_after", "progress", "threads")  # train.* keys that belong to an invocation, not to the sweep
_MISSING = object()


def _given(record: dict) -> dict:
    g = json.loads(json.dumps(record.get("given") or {}))
    for key in INVOCATION:
        g.get("train", {}).pop(key, None)
    return g


def _leaves(d: dict, prefix: tuple = ()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def _at(d: Any, path: tuple) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return _MISSING
        d = d[p]
    return d


def _mismatch(old: dict, new: dict) -> str | None:
    """Where a sweep directory's recorded settings differ from this invocation's (None: the same sweep).
    The grid and what the user set (config file + overrides) are compared, not the defaults, so a maekit that
    grew a config key with a default can continue an older sweep."""
    if old.get("grid") != new["grid"]:
        return _first_difference({"grid": old.get("grid")}, {"grid": new["grid"]})
    if "given" in old:
        a, b = _given(old), _given(new)
        return None if a == b else _first_difference(a, b)
    for path, _ in _leaves(_given(new)):  # recorded by an earlier version: compare with its resolved configuration
        if _at(old, path) != _at(new, path):
            return ".".join(path)
    return None


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return prefix.rstrip(".") or "<top>"


def _open_sweep(out: Path, record: dict) -> None:
    """A new sweep directory, or the same sweep (same grid and configuration; --then may grow) to continue."""
    if out.exists() and not out.is_dir():
        raise MaekitError(f"output path {out} exists and is not a directory")
    info, saved = out / "run.json", out / "config.yaml"
    if out.is_dir() and any(out.iterdir()):
        kind = json.loads(info.read_text()).get("kind") if info.exists() else None
        if kind != "sweep" or not saved.exists():
            raise MaekitError(f"{out} already holds files and is not a sweep directory; choose another out=DIR")
        old = yaml.safe_load(saved.read_text()) or {}
        where = _mismatch(old, record)
        if where is not None:
            raise MaekitError(
                f"{out} holds a sweep with a different grid or configuration (at "
                f"'{where}'); use the same settings to continue it, or another out=DIR"
            )
        record = {
            **record,
            "then": sorted(set(old.get("then") or []) | set(record["then"]), key=list(DOWNSTREAM).index),
        }
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(record, saved)
    cell_runner.open_dir(out, "sweep")


def _add_time(cell_dir: Path, key: str, seconds: float) -> None:
    f = cell_dir / "wall.json"
    t = json.loads(f.read_text()) if f.exists() else {}
    t[key] = t.get(key, 0.0) + seconds
    atomic_write_text(f, json.dumps(t, indent=1))


def run_cell(cell: Cell, out: Path, then: list[str]) -> dict | None:
    """Pretrain (or resume) one cell and run its evaluations; its record, or None if it stopped early
    (train.stop_after)."""
    cell_dir = cell_runner.cell_dir(out, cell.name)
    done_file = cell_dir / "cell.json"
    if done_file.exists():
        rec = json.loads(done_file.read_text())
        if all(f"{m}_test_accuracy" in rec for m in then):
            print(f"sweep: {cell.label}: done, skipped")
            rec = cell_record(cell, out)  # recomputed from the files (cheap), so the tables follow this version
            atomic_write_text(done_file, json.dumps(rec, indent=1))
            return rec
    pre_dir = cell_dir / "pretrain"
    cell_dir.mkdir(parents=True, exist_ok=True)
    finished = lambda d: cell_runner.pretraining_finished(d, cell.pretrain.train.epochs)  # noqa: E731
    pcfg = cell_runner.prepare(
        pre_dir, dataclasses.replace(cell.pretrain, out=str(pre_dir)), resumable=True, finished=finished
    )
    if pcfg is not None:  # resumed from its last checkpoint, or (died before its first one) started again
        print(
            f"sweep: {cell.label}: " + ("resuming pretraining" if pcfg.resume else "pretraining") + f" in {pre_dir}",
            flush=True,
        )
        t0 = time.perf_counter()
        try:
            pretrain.run(pcfg, pre_dir)
        finally:
            _add_time(cell_dir, "pretrain_s", time.perf_counter() - t0)
        if not finished(pre_dir):
            return None
    for m in then:
        ddir = cell_dir / m
        # an unfinished evaluation: fine-tuning resumes from its last checkpoint, the rest restart
        dcfg = cell_runner.prepare(
            ddir, _downstream_config(cell.downstream[m], cell.pretrain, pre_dir), resumable=m == "finetune"
        )
        if dcfg is None:
            continue
        dcfg.validate()
        print(f"sweep: {cell.label}: {m} in {ddir}", flush=True)
        t0 = time.perf_counter()
        try:
            DOWNSTREAM[m][1](dcfg, ddir, m)
        finally:
            _add_time(cell_dir, f"{m}_s", time.perf_counter() - t0)
    rec = cell_record(cell, out)
    atomic_write_text(done_file, json.dumps(rec, indent=1))
    return rec


def cell_record(cell: Cell, out: Path) -> dict:
    """One row of sweep.csv: the grid point, final reconstruction losses, downstream results, size and speed."""
    from ..models.flops import flops_per_image
    from ..runs import load_run

    cell_dir = cell_runner.cell_dir(out, cell.name)
    pre_dir = cell_dir / "pretrain"
    rows = read_metrics(pre_dir)
    last = [r for r in rows if "test_recon_loss" in r][-1]
    epochs = [r for r in rows if "img_per_s" in r]
    seen = sum(r["img_per_s"] * r["epoch_time_s"] for r in epochs)
    train_time = sum(r["epoch_time_s"] for r in epochs)
    loaded = load_run(pre_dir, "best")
    from ..models.mae import MAE

    model = MAE(loaded.model_cfg)
    fl = flops_per_image(model)
    wall = json.loads((cell_dir / "wall.json").read_text()) if (cell_dir / "wall.json").exists() else {}
    rec: dict[str, Any] = {"cell": cell.name, **{k: v for k, v in cell.point.items()}}
    rec.update(
        {
            "train_recon_loss": last["train_recon_loss"],
            "val_recon_loss": last["val_recon_loss"],
            "test_recon_loss": last["test_recon_loss"],
            "epochs": last["epoch"] + 1,
        }
    )
    for m in DOWNSTREAM:
        f = cell_dir / m / "result.json"
        if f.exists():
            res = json.loads(f.read_text())
            rec[f"{m}_test_accuracy"] = res["test_accuracy"]
            if res.get("val_accuracy") is not None:  # for choosing between cells without looking at the test split
                rec[f"{m}_val_accuracy"] = res["val_accuracy"]
            rec[f"{m}_labels"] = res.get("labels")
    rec.update(
        {
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "encoder_params_m": sum(p.numel() for p in model.encoder.parameters()) / 1e6,
            "mflops_per_image": fl["total"] / 1e6,
            "attention_mflops_per_image": fl["attention"] / 1e6,
            "img_per_s": seen / train_time if train_time else float("nan"),
            "train_time_s": train_time,
            "wall_s": sum(wall.values()),
        }
    )
    return rec


def run(config: str | None, grid: list[str], overrides: list[str] = (), then: list[str] = ()) -> Path:
    out, axes, cells, record = plan(config, list(grid), list(overrides), list(then))
    _open_sweep(out, record)
    then = yaml.safe_load((out / "config.yaml").read_text())["then"]
    print(
        f"sweep: {len(cells)} cells ({' x '.join(f'{a.key} {len(a.raw)}' for a in axes)}) in {out}"
        + (f", then {', '.join(then)}" if then else ""),
        flush=True,
    )
    records: dict[str, dict] = {}
    stopped = []
    for cell in cells:
        rec = run_cell(cell, out, then)
        if rec is None:
            stopped.append(cell)
            break  # train.stop_after ended this invocation
        records[cell.name] = rec
        write_tables(out, axes, cells, records, then)
    write_tables(out, axes, cells, records, then)
    write_figures(out, axes, cells, records)
    print(f"sweep directory: {out}")
    for f in ("sweep.csv", "sweep.md", "loss_curves.png", "reconstructions.png"):
        print(f"  {out / f}")
    if stopped:
        print(f"sweep: stopped in {stopped[0].label} (train.stop_after); run the same command again to continue")
    return out


# ---------------------------------------------------------------- tables and figures


def _present(records: dict[str, dict]) -> list[tuple[str, str, str]]:
    return [(m, t, f) for m, t, f in METRICS if any(m in r for r in records.values())]


def write_tables(out: Path, axes: list[Axis], cells: list[Cell], records: dict[str, dict], then: list[str]) -> None:
    """sweep.csv (every column) and sweep.md (the main metrics, the figures)."""
    keys = ["cell", *[a.key for a in axes]]
    present = [m for m, _, _ in _present(records)]
    extra = [
        "val_recon_loss",
        "epochs",
        *[f"{m}_val_accuracy" for m in DOWNSTREAM if any(f"{m}_val_accuracy" in r for r in records.values())],
        *[f"{m}_labels" for m in DOWNSTREAM if any(f"{m}_labels" in r for r in records.values())],
        "encoder_params_m",
        "attention_mflops_per_image",
        "train_time_s",
    ]
    fields = [*keys, "status", *present, *extra]
    cell_runner.write_csv(
        out / "sweep.csv",
        fields,
        [
            {
                "cell": c.name,
                **c.point,
                "status": "done" if records.get(c.name) else "pending",
                **records.get(c.name, {}),
            }
            for c in cells
        ],
    )

    shown = _present(records)
    lines = [
        f"Sweep of {len(cells)} cells over {'; '.join('`' + a.key + '` (' + ', '.join(a.raw) + ')' for a in axes)}; "
        f"{len(records)} done." + (f" Evaluations after pretraining: {', '.join(then)}." if then else ""),
        "",
        *cell_runner.markdown_table(
            [*[a.key for a in axes], *[t for _, t, _ in shown]],
            [False] * len(axes) + [True] * len(shown),
            [
                [
                    *[str(c.point[a.key]) for a in axes],
                    *[cell_runner.fmt(records.get(c.name, {}).get(m), f) for m, _, f in shown],
                ]
                for c in cells
            ],
        ),
        "",
        "Reconstruction loss: mean squared error on the masked patches (in normalised pixel units, with norm_pix_loss "
        "per-patch normalised), on the fixed evaluation subset of each split with fixed masks at the cell's own mask "
        "ratio, after the last epoch. MFLOPs: one forward pass of the MAE for one image at the cell's mask ratio "
        "(torch.utils.flop_counter; scaled_dot_product_attention on CPU added by formula, see maekit/models/flops.py). "
        "Images/s: pretraining throughput without evaluation. Wall time: pretraining (with its evaluations and "
        "pictures) plus the evaluations, as measured by the sweep process(es).",
    ]
    if any(c.pretrain.model.norm_pix_loss for c in cells) and any(a.key == "model.patch_size" for a in axes):
        lines += [
            "",
            "Note: with norm_pix_loss the targets are normalised per patch, "
            "so losses of different patch sizes are not on the same scale.",
        ]
    lines += ["", "![loss curves](loss_curves.png)", "", "![reconstructions](reconstructions.png)", ""]
    for m, t, _ in shown:
        lines.append(f"![{t}](heatmap_{m}.png)")
    atomic_write_text(out / "sweep.md", "\n".join(lines) + "\n")


def write_figures(out: Path, axes: list[Axis], cells: list[Cell], records: dict[str, dict]) -> None:
    """A heatmap per metric over the grid, overlaid loss curves, the reconstructions of every cell."""
    if not records:
        return
    shown = _present(records)
    rows_axes, col_axis = axes[:-1], axes[-1]
    row_points = list(itertools.product(*[a.values for a in rows_axes])) or [()]
    row_labels = [", ".join(f"{a.key.rsplit('.', 1)[-1]}={v}" for a, v in zip(rows_axes, p)) or "" for p in row_points]
    by_point = {tuple(c.point[a.key] for a in axes): records.get(c.name) for c in cells}
    for m, t, f in shown:
        vals = np.full((len(row_points), len(col_axis.values)), np.nan)
        for i, p in enumerate(row_points):
            for j, v in enumerate(col_axis.values):
                r = by_point.get((*p, v))
                if r and r.get(m) is not None:
                    vals[i, j] = r[m]
        pct = "accuracy" in m
        plots.heatmap(
            vals * (100 if pct else 1),
            row_labels,
            [str(v) for v in col_axis.values],
            out / f"heatmap_{m}.png",
            t + (" (%)" if pct else ""),
            xlabel=col_axis.key,
            ylabel=", ".join(a.key for a in rows_axes),
            fmt="{:.2f}" if pct else f,
        )
    done = [c for c in cells if c.name in records]
    plots.overlaid_loss_curves(
        [(c.label, out / "cells" / c.name / "pretrain") for c in done],
        out / "loss_curves.png",
        title="MAE pretraining of every cell",
    )
    reconstruction_figure(out, done)


@torch.no_grad()
def reconstruction_figure(out: Path, cells: list[Cell]) -> None:
    """The same first test images, masked and reconstructed by every cell (own mask ratio, seeded masks)."""
    from ..data.loader import load_splits
    from ..data.transforms import normalize
    from ..models.mae import MAE
    from ..runs import fixed_noise, load_run

    cache: dict[str, Any] = {}
    columns: dict[str, np.ndarray] = {}
    for c in cells:
        loaded = load_run(out / "cells" / c.name / "pretrain", "best")
        key = json.dumps(to_dict(c.pretrain.data), sort_keys=True)
        if key not in cache:
            cache[key] = load_splits(c.pretrain.data).test.images[:RECON_IMAGES]
        images = cache[key]
        model = MAE(loaded.model_cfg)
        checkpoint.load_weights(model, loaded.state, str(loaded.path))
        model.eval()
        mean, std = loaded.mean, loaded.std
        x = normalize(images, mean, std)
        noise = fixed_noise(len(images), model.num_patches, RECON_SEED)
        _, pred, mask = model(x, noise=noise)
        recon = model.predictions_to_pixels(x, pred, mask)
        p = model.patch_size
        m = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p * model.in_chans))
        m_, s_ = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

        def pix(t: torch.Tensor) -> np.ndarray:
            return (t * s_ + m_).clamp(0, 1).float().numpy()

        if "original" not in columns:
            columns["original"] = pix(x)
        label = c.label.replace(", ", "\n")
        columns[f"{label}\nmasked"] = pix(x) * (1 - m.numpy()) + 0.5 * m.numpy()
        columns[f"{label}\nreconstruction"] = pix(recon * m + x * (1 - m))
    if columns:
        plots.recon_grid(
            columns,
            out / "reconstructions.png",
            "the same test images: masked input and reconstruction (visible patches pasted back) of every cell",
        )
