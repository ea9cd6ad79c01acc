"""maekit compare: pretrain (or reuse a run), then fine-tune, from-scratch, linear probe (pretrained and random
encoder) and k-NN for every label budget and seed; results.csv, results.md and accuracy-vs-labels plot.
Every cell is its own run directory with a result.json; finished cells are skipped when run again."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
import statistics
from pathlib import Path

import yaml

from .. import plots
from ..config import CompareConfig, read_yaml, save_yaml, to_dict
from ..files import atomic_write_text
from ..engine.dist import barrier, held as dist_held
from ..errors import MaekitError
from ..metrics import AUC_UNDEFINED, text_or_na
from . import finetune, knn, linprobe, pretrain
from .common import load_run

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


def _cell_config(cfg: CompareConfig, method: str, budget: float, seed: int, epochs: int | None, pretrained: str, arch=None):
    base = _section(cfg, method)
    random_init = method in ("scratch", "cnn", "pixel_knn", "linprobe_random", "knn_random")
    arch = arch or load_run(pretrained).model_cfg
    train = dataclasses.replace(base.train, seed=seed, epochs=epochs if (epochs and method in ("finetune", "scratch")) else base.train.epochs)
    c = dataclasses.replace(
        base, data=cfg.pretrain.data, model=dataclasses.replace(arch, drop_path=base.model.drop_path),
        pretrained=None if random_init else pretrained, labels=budget, label_seed=seed, train=train, resume=False,
    )
    return dataclasses.replace(c, features="pixels") if method == "pixel_knn" else c


def _section(cfg: CompareConfig, method: str):
    """The config section that holds a method's recipe."""
    return {"finetune": cfg.finetune, "scratch": cfg.scratch, "cnn": cfg.cnn, "pixel_knn": cfg.knn, "linprobe": cfg.linprobe,
            "linprobe_random": cfg.linprobe, "knn": cfg.knn, "knn_random": cfg.knn}[method]


TRAINED = ("finetune", "scratch", "cnn")  # methods with a learning rate (and a resumable training loop)


def _lr_grid(cfg: CompareConfig, method: str) -> list[float] | None:
    """The base_lr candidates a method's rate is chosen from on the validation split (None: its section's rate)."""
    return {"finetune": cfg.finetune_lrs, "scratch": cfg.scratch_lrs or cfg.finetune_lrs, "cnn": cfg.cnn_lrs}.get(method)


def run(cfg: CompareConfig, out: Path) -> list[dict]:
    """Under torchrun every process runs every cell (each cell trains or extracts features with DDP); the
    decisions about which cells to skip or resume are taken by all processes between barriers, and only rank 0
    writes the compare's own files."""
    with dist_held(cfg.pretrain.train.device) as d:
        return _run(cfg, out, d)


def _run(cfg: CompareConfig, out: Path, d) -> list[dict]:
    main = d.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "config.yaml").exists():  # rewritten once every cell agrees with this config (at the end)
            save_yaml(to_dict(cfg) | {"out": str(out)}, out / "config.yaml")
        if not (out / "run.json").exists():
            from ..environment import environment

            atomic_write_text(out / "run.json", json.dumps({"kind": "compare", "env": environment()}, indent=1))
    barrier()
    pretrained = cfg.pretrained
    if pretrained is None:
        pre_dir = out / "pretrain"
        done = (pre_dir / "checkpoints" / "last.safetensors").exists() and _pretrain_finished(pre_dir, cfg)
        barrier()
        if not done:
            pretrain.run(dataclasses.replace(cfg.pretrain, resume=pre_dir.exists()), pre_dir)
        barrier()
        pretrained = str(pre_dir)
    arch = load_run(pretrained).model_cfg  # fails early on a bad path; every cell shares this architecture
    results: list[dict] = []
    selection: list[str] = []

    def cell(method: str, budget: float, seed: int, epochs: int | None, lr: float | None) -> dict:
        name = f"{method}_labels{budget:g}_seed{seed}"
        if lr is not None:  # chosen from a grid: the name says which
            name += f"_lr{lr:g}"
        cell_dir = out / "cells" / name
        result_file = cell_dir / "result.json"
        barrier()  # every process decides on the same files
        finished, exists, resumable = result_file.exists(), cell_dir.exists(), (cell_dir / "run.json").exists()
        barrier()
        c = _cell_config(cfg, method, budget, seed, epochs, pretrained, arch)
        if lr is not None:
            c = dataclasses.replace(c, optim=dataclasses.replace(c.optim, base_lr=lr))
        if finished or (resumable and method in TRAINED):
            _check_same_recipe(cell_dir, c)  # never mix results of another recipe into the table
        if finished:
            return json.loads(result_file.read_text())
        if exists:  # an unfinished cell: fine-tuning resumes from its last checkpoint, the rest restart
            if method in TRAINED and resumable:
                c = dataclasses.replace(c, resume=True)
            elif main:
                shutil.rmtree(cell_dir)
        barrier()
        runner = finetune.run if method in TRAINED else linprobe.run if method.startswith("linprobe") else knn.run
        res = runner(c, cell_dir, method)
        if "stopped_at_step" in res:  # train.stop_after in a section: no result yet
            raise MaekitError(f"{cell_dir} stopped at step {res['stopped_at_step']} of {res['steps']} (train.stop_after); "
                              "run compare again to continue it")
        if main:
            res["budget"] = budget
            res["base_lr"] = c.optim.base_lr if method in TRAINED else None
            atomic_write_text(result_file, json.dumps(res, indent=1))
        barrier()
        return json.loads(result_file.read_text())  # the same result on every process

    for bi, budget in enumerate(cfg.budgets):
        epochs = cfg.finetune_epochs[bi] if cfg.finetune_epochs else None
        for method in cfg.methods:
            lr = None
            if _lr_grid(cfg, method):
                # the learning rate is chosen on the validation split with the first seed, for each method apart
                trials = [(cell(method, budget, cfg.seeds[0], epochs, x), x) for x in _lr_grid(cfg, method)]
                best = max(trials, key=lambda t: t[0]["val_accuracy"])
                lr = best[1]
                tried = ", ".join(f"{x:g}: {100 * r['val_accuracy']:.2f}%" for r, x in trials)
                selection.append(f"- {LABELS[method]}, {trials[0][0]['labels']} labels: base_lr {lr:g} (val accuracy {tried})")
            for seed in cfg.seeds:
                results.append(cell(method, budget, seed, epochs, lr))
                if main:
                    write_tables(results, out, pretrained, selection)
    if main:
        write_tables(results, out, pretrained, selection)
        save_yaml(to_dict(cfg) | {"out": str(out)}, out / "config.yaml")
    return results


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_same_recipe(cell_dir: Path, c) -> None:
    """A cell found on disk is reused only if its saved config.yaml is the config this compare would run now;
    otherwise the error names the keys that differ (a changed recipe must not be mixed with old results)."""
    saved_file = cell_dir / "config.yaml"
    if not saved_file.exists():
        return
    saved = _flat(read_yaml(saved_file))
    via_yaml = lambda cfg: _flat(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))  # noqa: E731 (as the saved file went)
    want = via_yaml(c)
    # a key added to maekit after the cell ran was, in effect, at its default then
    defaults = via_yaml(type(c)())
    keys = sorted(k for k in set(saved) | set(want)
                  if k not in ("out", "resume") and saved.get(k, defaults.get(k)) != want.get(k))
    if keys:
        diff = ", ".join(f"{k} {saved.get(k)!r} -> {want.get(k)!r}" for k in keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        raise MaekitError(f"{cell_dir} was run with another recipe ({diff}); remove that cell directory to rerun it, or use another out=DIR")


def _pretrain_finished(pre_dir: Path, cfg: CompareConfig) -> bool:
    from ..engine.rundir import read_metrics

    rows = [r for r in read_metrics(pre_dir) if "val_recon_loss" in r]
    return bool(rows) and rows[-1]["epoch"] + 1 >= cfg.pretrain.train.epochs


def summarize(results: list[dict]) -> list[dict]:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["method"], r["labels"]), []).append(r)
    rows = []
    for (method, labels), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], list(LABELS).index(kv[0][0]))):
        acc = [r["test_accuracy"] for r in rs]
        auc = [r["test_roc_auc"] for r in rs if r["test_roc_auc"] is not None and not math.isnan(r["test_roc_auc"])]
        rows.append({
            "method": method, "labels": labels, "seeds": len(rs),
            "mean": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "auc_mean": statistics.mean(auc) if auc else float("nan"), "auc_std": statistics.stdev(auc) if len(auc) > 1 else 0.0,
            "val_mean": statistics.mean([r["val_accuracy"] for r in rs if r.get("val_accuracy") is not None] or [float("nan")]),
        })
    return rows


def write_tables(results: list[dict], out: Path, pretrained: str, selection: list[str] | None = None) -> None:
    buf = io.StringIO()
    keys = ["method", "budget", "labels", "seed", "base_lr", "test_accuracy", "test_roc_auc", "val_accuracy", "best_epoch", "time_s"]
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in results:
        w.writerow(r)
    atomic_write_text(out / "results.csv", buf.getvalue())
    rows = summarize(results)
    lines = [
        f"Pretrained encoder: `{pretrained}`. Test accuracy and macro one-vs-rest ROC-AUC, mean ± std over seeds; "
        "checkpoints chosen on the validation split, the test split used once per cell.",
        "",
        "| labelled images | method | seeds | test accuracy (%) | test ROC-AUC | val accuracy (%) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        auc = text_or_na(r["auc_mean"], f"{r['auc_mean']:.4f} ± {r['auc_std']:.4f}", AUC_UNDEFINED)
        lines.append(
            f"| {r['labels']} | {LABELS[r['method']]} | {r['seeds']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | "
            f"{auc} | {100 * r['val_mean']:.2f} |"
        )
    by = {(r["method"], r["labels"]): r for r in rows}
    gains = [
        f"- {labels} labels: fine-tune minus {LABELS[other]} = {100 * (by[('finetune', labels)]['mean'] - by[(other, labels)]['mean']):+.2f} points"
        for (m, labels) in by if m == "finetune" for other in ("scratch", "cnn", "pixel_knn") if (other, labels) in by
    ]
    if gains:
        lines += ["", "Pretraining gain (mean test accuracy):", *gains]
    if selection:
        lines += ["", "Learning rate (base_lr, per 256 images) chosen on the validation split with the first seed:", *selection]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    plots.accuracy_vs_labels([{"method": LABELS[r["method"]], **{k: v for k, v in r.items() if k != "method"}} for r in rows], out / "accuracy_vs_labels.png", "test accuracy vs labelled images")


