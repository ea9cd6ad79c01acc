"""maekit compare: pretrain (or reuse a run), then fine-tune, from-scratch, linear probe (pretrained and random
encoder) and k-NN for every label budget and seed; results.csv, results.md and accuracy-vs-labels plot.
Every cell is its own run directory with a result.json; finished cells are skipped when run again."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .. import plots
from ..config import CompareConfig, save_yaml, to_dict
from ..engine.dist import barrier, held as dist_held
from ..errors import MaekitError
from ..files import atomic_write_text
from ..runs import load_run
from . import cells, finetune, knn, linprobe, pretrain
from .cells import LABELS, summarize


def _cell_config(
    cfg: CompareConfig, method: str, budget: float, seed: int, epochs: int | None, pretrained: str, arch=None
):
    base = _section(cfg, method)
    random_init = method in ("scratch", "cnn", "pixel_knn", "linprobe_random", "knn_random")
    arch = arch or load_run(pretrained).model_cfg
    train = dataclasses.replace(
        base.train, seed=seed, epochs=epochs if (epochs and method in ("finetune", "scratch")) else base.train.epochs
    )
    c = dataclasses.replace(
        base,
        data=cfg.pretrain.data,
        model=dataclasses.replace(arch, drop_path=base.model.drop_path),
        pretrained=None if random_init else pretrained,
        labels=budget,
        label_seed=seed,
        train=train,
        resume=False,
    )
    return dataclasses.replace(c, features="pixels") if method == "pixel_knn" else c


def _section(cfg: CompareConfig, method: str):
    """The config section that holds a method's recipe."""
    return {
        "finetune": cfg.finetune,
        "scratch": cfg.scratch,
        "cnn": cfg.cnn,
        "pixel_knn": cfg.knn,
        "linprobe": cfg.linprobe,
        "linprobe_random": cfg.linprobe,
        "knn": cfg.knn,
        "knn_random": cfg.knn,
    }[method]


TRAINED = ("finetune", "scratch", "cnn")  # methods with a learning rate (and a resumable training loop)


LR_KEY = {"finetune": "finetune_lrs", "scratch": "scratch_lrs", "cnn": "cnn_lrs"}  # a method's learning-rate grid


def _lr_grid(cfg: CompareConfig, method: str) -> list[float] | None:
    """The base_lr candidates a method's rate is chosen from on the validation split (None: its section's rate);
    the from-scratch ViT falls back on the fine-tune's grid."""
    if method not in LR_KEY:
        return None
    return getattr(cfg, LR_KEY[method]) or (cfg.finetune_lrs if method == "scratch" else None)


def grid_edge(grid: list[float], chosen: float) -> str | None:
    """'lower' or 'upper' when the rate chosen from a grid of three or more is its smallest or largest: the best rate
    may lie beyond the grid, so the selection is not settled (None otherwise)."""
    if len(set(grid)) < 3:  # two rates have no inside
        return None
    return "lower" if chosen == min(grid) else "upper" if chosen == max(grid) else None


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
        cells.open_dir(out, "compare")
    barrier()
    pretrained = cfg.pretrained
    if pretrained is None:
        pre_dir = out / "pretrain"
        pre_cfg = cells.prepare(
            pre_dir,
            cfg.pretrain,
            resumable=True,
            main=main,
            finished=lambda p: cells.pretraining_finished(p, cfg.pretrain.train.epochs),
        )
        if pre_cfg is not None:
            pretrain.run(pre_cfg, pre_dir)
        barrier()
        pretrained = str(pre_dir)
    arch = load_run(pretrained).model_cfg  # fails early on a bad path; every cell shares this architecture
    results: list[dict] = []
    selection: list[str] = []
    # precision auto: a method's first cell times its step in fp32 and bf16 and every later cell of the method trains
    # in that choice, so that a speed-up near the bar (engine.train.BF16_MIN_SPEEDUP) cannot split its cells
    pinned: dict[str, str] = {}

    def cell(method: str, budget: float, seed: int, epochs: int | None, lr: float | None) -> dict:
        parts = [(method, ""), ("labels", f"{budget:g}"), ("seed", str(seed))]
        if lr is not None:  # chosen from a grid: the name says which
            parts.append(("lr", f"{lr:g}"))
        cell_dir = cells.cell_dir(out, cells.cell_name(parts))
        result_file = cell_dir / "result.json"
        c = _cell_config(cfg, method, budget, seed, epochs, pretrained, arch)
        if lr is not None:  # a grid value is a base_lr; it replaces the section's rate, an absolute optim.lr too
            c = dataclasses.replace(c, optim=dataclasses.replace(c.optim, base_lr=lr, lr=None))
        # (a cell that an older maekit ran with 'auto' keeps it, so that its recipe check still passes; a finished
        # cell pinned by an earlier run, now its method's first because the grid or the seeds changed, keeps the
        # precision it was pinned to: it is what that run's 'auto' chose)
        auto, saved = c.train.precision == "auto", cells.saved_precision(cell_dir)
        if auto and saved != "auto" and (precision := pinned.get(method) or saved):
            c = dataclasses.replace(c, train=dataclasses.replace(c.train, precision=precision))
        # fine-tuning resumes from its last checkpoint, the rest restart; a changed recipe is refused
        prepared = cells.prepare(cell_dir, c, resumable=method in TRAINED, check_recipe=True, main=main)
        if prepared is not None:
            _run_cell(prepared, cell_dir, method, budget)
        if auto and (chose := cells.run_precision(cell_dir)):
            pinned.setdefault(method, chose)
        return json.loads(result_file.read_text())  # the same result on every process

    def _run_cell(c, cell_dir: Path, method: str, budget: float) -> None:
        result_file = cell_dir / "result.json"
        runner = finetune.run if method in TRAINED else linprobe.run if method.startswith("linprobe") else knn.run
        res = runner(c, cell_dir, method)
        if "stopped_at_step" in res:  # train.stop_after in a section: no result yet
            raise MaekitError(
                f"{cell_dir} stopped at step {res['stopped_at_step']} of {res['steps']} (train.stop_after); "
                "run compare again to continue it"
            )
        if main:
            res["budget"] = budget
            # the rate the cell ran at: base_lr (per 256 images), or the absolute optim.lr that overrides it
            res["base_lr"] = c.optim.base_lr if method in TRAINED and c.optim.lr is None else None
            res["lr"] = c.optim.lr if method in TRAINED else None
            atomic_write_text(result_file, json.dumps(res, indent=1))
        barrier()

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
                line = f"- {LABELS[method]}, {trials[0][0]['labels']} labels: base_lr {lr:g} (val accuracy {tried})"
                if edge := grid_edge(_lr_grid(cfg, method), lr):
                    line += f"; at the {edge} end of the grid: {LR_KEY[method]} may need to go further"
                    if main:
                        print(f"compare: {line[2:]}", flush=True)
                selection.append(line)
            for seed in cfg.seeds:
                results.append(cell(method, budget, seed, epochs, lr))
                if main:
                    write_tables(results, out, pretrained, selection)
    if main:
        write_tables(results, out, pretrained, selection)
        save_yaml(to_dict(cfg) | {"out": str(out)}, out / "config.yaml")
    return results


def write_tables(results: list[dict], out: Path, pretrained: str, selection: list[str] | None = None) -> None:
    cells.write_csv(
        out / "results.csv",
        [
            "method",
            "budget",
            "labels",
            "seed",
            "base_lr",
            "lr",
            "test_accuracy",
            "test_roc_auc",
            "val_accuracy",
            "best_epoch",
            "time_s",
        ],
        results,
    )
    rows = summarize(results)
    lines = [
        f"Pretrained encoder: `{pretrained}`. Test accuracy and macro one-vs-rest ROC-AUC, mean ± std over seeds; "
        "checkpoints chosen on the validation split, the test split used once per cell.",
        "",
        *cells.markdown_table(
            cells.SUMMARY_HEADER, [True, False, True, True, True, True], [cells.summary_row(r) for r in rows]
        ),
    ]
    by = {(r["method"], r["labels"]): r for r in rows}
    gains = [
        f"- {labels} labels: fine-tune minus {LABELS[other]} = "
        f"{100 * (by[('finetune', labels)]['mean'] - by[(other, labels)]['mean']):+.2f} points"
        for (m, labels) in by
        if m == "finetune"
        for other in ("scratch", "cnn", "pixel_knn")
        if (other, labels) in by
    ]
    if gains:
        lines += ["", "Pretraining gain (mean test accuracy):", *gains]
    if selection:
        lines += [
            "",
            "Learning rate (base_lr, per 256 images) chosen on the validation split with the first seed:",
            *selection,
        ]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    plots.accuracy_vs_labels(
        [{"method": LABELS[r["method"]], **{k: v for k, v in r.items() if k != "method"}} for r in rows],
        out / "accuracy_vs_labels.png",
        "test accuracy vs labelled images",
    )
