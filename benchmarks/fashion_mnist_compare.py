"""Regenerates docs/results/fashion_mnist.md: MAE pretraining on Fashion-MNIST (configs/fashion_mnist_long.yaml),
then `maekit compare` (configs/compare_fashion_mnist.yaml). Both steps resume where they stopped. The result files
the doc reads are kept in docs/results/fashion_mnist/, so `--doc-only` rewrites the doc from the repository alone.

    .venv/bin/python benchmarks/fashion_mnist_compare.py [--doc-only]
"""

from __future__ import annotations

import fnmatch
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml
from kept_files import kept

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_COMPARE_CFG = yaml.safe_load((ROOT / "configs/compare_fashion_mnist.yaml").read_text())
PRE = ROOT / _COMPARE_CFG["pretrained"]
CMP = ROOT / _COMPARE_CFG["out"]
DOC = ROOT / "docs/results/fashion_mnist.md"
FIGS = DOC.parent / "fashion_mnist"  # the kept result files and figures
PRETRAIN = [
    sys.executable,
    "-m",
    "maekit",
    "pretrain",
    "-c",
    "configs/fashion_mnist_long.yaml",
    f"out={PRE.relative_to(ROOT)}",
    "resume=true",
]
COMPARE = [sys.executable, "-m", "maekit", "compare", "-c", "configs/compare_fashion_mnist.yaml"]

# Public supervised baselines with all 60,000 labels (zalandoresearch/fashion-mnist README; see shared DATA.md)
BASELINES = [
    ("logistic regression on pixels", "~84"),
    ("k-NN on pixels", "~85-86"),
    ("MLP", "~88"),
    ("2-conv CNN", "88-94"),
    ("ResNet18", "94.9"),
]


def _results() -> list[dict]:
    import csv

    rows = list(csv.DictReader((FIGS / "results.csv").open()))
    for r in rows:
        r["labels"] = int(r["labels"])
        r["seed"] = int(r["seed"])
        for k in ("test_accuracy", "test_roc_auc", "val_accuracy", "time_s"):
            r[k] = float(r[k])
        r["base_lr"] = float(r["base_lr"]) if r["base_lr"] else None
    return rows


def keep_all() -> None:
    """Copy the result files the doc reads next to it; the compare's cells in a few numbers each (cells.json)."""
    for src, name in (
        (PRE / "metrics.jsonl", "pretrain_metrics.jsonl"),
        (PRE / "run.json", "pretrain_run.json"),
        (PRE / "config.yaml", "pretrain_config.yaml"),
        (PRE / "loss.png", "pretrain_loss.png"),
        (max(PRE.glob("recon_epoch*.png"), default=PRE / "none"), "pretrain_reconstructions.png"),
        (CMP / "results.csv", "results.csv"),
        (CMP / "results.md", "results.md"),
        (CMP / "config.yaml", "compare_config.yaml"),
        (CMP / "accuracy_vs_labels.png", "accuracy_vs_labels.png"),
    ):
        kept(src, FIGS / name)
    if not (CMP / "cells").is_dir():
        return
    cells = []
    for d in sorted(x for x in (CMP / "cells").iterdir() if (x / "run.json").exists()):
        ran = Path(str(yaml.safe_load((d / "config.yaml").read_text()).get("out") or "")).parent.parent
        metrics = (
            [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            if (d / "metrics.jsonl").exists()
            else []
        )
        info = json.loads((d / "run.json").read_text())
        cells.append(
            {
                "cell": d.name,
                "kind": info["kind"],
                "precision": info.get("precision"),
                "ran_in": str(ran) if ran.name else str(CMP.relative_to(ROOT)),
                "epochs": [
                    {"epoch_time_s": r["epoch_time_s"], "img_per_s": r["img_per_s"]}
                    for r in metrics
                    if "img_per_s" in r
                ],
            }
        )
    (FIGS / "cells.json").write_text(json.dumps(cells, indent=1) + "\n")


def main() -> None:
    if "--doc-only" not in sys.argv:
        for cmd in (PRETRAIN, COMPARE):
            print("+", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
    keep_all()
    rows = [json.loads(x) for x in (FIGS / "pretrain_metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "val_recon_loss" in r]
    train_s = sum(r["epoch_time_s"] for r in epochs)
    fastest = min(r["epoch_time_s"] for r in epochs)
    last = epochs[-1]

    def chosen_time_s(m: str) -> float:  # mean time of the method's cells at its chosen learning rate
        return statistics.mean(r["time_s"] for r in results if r["method"] == m and r["base_lr"] == _chosen(results, m))

    from maekit.commands.compare import LABELS, summarize
    from maekit.environment import SPEED_FLAGS

    results = _results()
    summary = {r["method"]: r for r in summarize(results)}
    info = json.loads((FIGS / "pretrain_run.json").read_text())
    env = info.get("env", {})  # the machine the pretraining ran on (as run.json recorded it)
    flags = [f for f in SPEED_FLAGS if f in env.get("cpu_flags", [])]
    ft = summary.get("finetune")
    model = yaml.safe_load((FIGS / "pretrain_config.yaml").read_text())["model"]
    partial = model.get("decoder_keep", 1.0) == 0.25
    cross = model.get("decoder_attention", "self") == "cross"
    idle_min = None
    tp = ROOT / "docs/results/throughput.json"
    # the recipe's step speed on idle cores (benchmarks/throughput.py, configuration f), which times these in fp32
    if tp.exists() and info.get("precision", "fp32") == "fp32":
        f = next((c for c in json.loads(tp.read_text())["configs"] if c["key"] == "f"), None)
        if f:
            # throughput.py's contender for this recipe (it times the cross-attention decoder with partial decoding)
            contenders = {(False, False): "maekit", (True, False): "maekit partial", (True, True): "maekit cross"}
            if contender := contenders.get((partial, cross)):
                idle_min = len(epochs) * 54000 / f["img_s"][contender]["median"] / 60
    text = [
        "# Fashion-MNIST, 600 labels: MAE-pretrained ViT against what a user would train instead",
        "",
        "Generated by `.venv/bin/python benchmarks/fashion_mnist_compare.py`, which runs",
        f"`maekit {' '.join(PRETRAIN[3:])}` and then `maekit {' '.join(COMPARE[3:])}`.",
        f"Machine: {env.get('cpu', '?')}, CPU flags {' '.join(flags) or 'none of ' + ', '.join(SPEED_FLAGS)}, "
        f"{env.get('torch_threads', '?')} threads, torch {env.get('torch', '?')}; pretraining precision "
        f"{info.get('precision', 'fp32')}.",
        "",
        "## Pretraining",
        "",
        "Model `mae-small` (encoder 6 x 128, decoder 2 x 96, patch 4, mask 0.75, norm_pix_loss, "
        f"decoder_keep {model.get('decoder_keep', 1.0):g}, {'cross' if cross else 'self'}-attention decoder) on the "
        "54,000 unlabelled "
        f"training images, {len(epochs)} epochs: **{train_s / 60:.1f} min** of training measured (sum of the "
        f"epochs' times; fastest epoch {fastest:.0f} s, slowest {max(r['epoch_time_s'] for r in epochs):.0f} "
        "s: the slow epochs shared the cores with tests and other jobs)"
        + (
            f"; at the idle-core step rate of benchmarks/throughput.py (configuration f, docs/performance.md) the same "
            f"{len(epochs)} epochs take **{idle_min:.1f} min**"
            if idle_min
            else f"; at the fastest epoch's rate the same {len(epochs)} epochs take "
            f"**{len(epochs) * fastest / 60:.1f} min**"
        )
        + ". Final reconstruction loss with fixed masks (normalised-pixel MSE on masked patches): train "
        f"{last['train_recon_loss']:.4f}, val {last['val_recon_loss']:.4f}, test {last['test_recon_loss']:.4f}.",
        "",
        "![reconstructions](fashion_mnist/pretrain_reconstructions.png)",
        "",
        "## Downstream, 600 labelled images (stratified, 60 per class), 3 seeds",
        "",
        (FIGS / "results.md").read_text(),
        _recipes(),
        "",
        "![accuracy vs labels](fashion_mnist/accuracy_vs_labels.png)",
        "",
        "Fine-tuning time per seed (mean over the seeds' cells, including the per-epoch validation and the test pass): "
        + ", ".join(f"{LABELS[m]} {chosen_time_s(m):.0f} s" for m in ("finetune", "scratch", "cnn") if m in summary)
        + ".",
        "",
        *_reused_cells(),
        _precisions(),
        "",
    ]
    seeds_study = ROOT / "docs/results/fashion_mnist_pretrain_seeds/pretrain_seed0_metrics.jsonl"
    study_epochs = (
        sum("val_recon_loss" in json.loads(x) for x in seeds_study.read_text().splitlines())
        if seeds_study.exists()
        else len(epochs)
    )
    text += [
        "One pretraining run here: the spread is over the downstream seeds (label subset, head, order). The spread "
        "over pretraining seeds is in [fashion_mnist_pretrain_seeds.md](fashion_mnist_pretrain_seeds.md)"
        + (f", measured with the earlier {study_epochs}-epoch pretraining." if study_epochs != len(epochs) else "."),
        "",
    ]
    if ft:
        text += ["## Targets (issue: time to quality)", ""]
        checks = [("MAE fine-tune >= 85 %", 100 * ft["mean"], 85.0)]
        ft_s = [
            r["time_s"] for r in results if r["method"] == "finetune" and r["base_lr"] == _chosen(results, "finetune")
        ]
        checks.append(("fine-tuning <= 5 min per seed (s, as measured)", -max(ft_s), -300.0))
        if (undisturbed := _undisturbed_s("finetune", _chosen(results, "finetune"))) is not None:
            checks.append(
                (
                    "fine-tuning <= 5 min per seed (s, training epochs at each cell's fastest epoch rate)",
                    -undisturbed,
                    -300.0,
                )
            )
        if "cnn" in summary:
            checks.append(("MAE fine-tune >= small CNN + 3 points", 100 * ft["mean"], 100 * summary["cnn"]["mean"] + 3))
        if "scratch" in summary:
            checks.append(
                ("MAE fine-tune >= ViT from scratch + 5 points", 100 * ft["mean"], 100 * summary["scratch"]["mean"] + 5)
            )
        checks.append(("pretraining <= 30 min (as measured)", -train_s / 60, -30.0))
        checks.append(
            (
                "pretraining <= 30 min on idle cores"
                if idle_min
                else "pretraining <= 30 min (at the fastest epoch's rate)",
                -(idle_min or len(epochs) * fastest / 60),
                -30.0,
            )
        )
        for name, value, bound in checks:
            ok = value >= bound
            gap = abs(value - bound)
            text.append(f"- {name}: {'met' if ok else 'missed'} ({'by a margin of' if ok else 'short by'} {gap:.2f})")
        text += [
            "",
            "The recipe ablation (validation split only) is in [fashion_mnist_ablation.md](fashion_mnist_ablation.md).",
            "",
        ]
    text += [
        "For reference, public supervised numbers with all 60,000 labels (test accuracy %): "
        + "; ".join(f"{name} {acc}" for name, acc in BASELINES)
        + ".",
        "",
    ]
    DOC.write_text("\n".join(text))
    print(f"wrote {DOC}")


def _recipes() -> str:
    """One line per trained method: its length and regularisers, read from the compare config as run."""
    import yaml

    cfg = yaml.safe_load((FIGS / "compare_config.yaml").read_text())
    parts = []
    for method, name in (("finetune", "fine-tune"), ("scratch", "ViT from scratch"), ("cnn", "small CNN")):
        sec = cfg.get(method) or {}
        if method not in cfg.get("methods", []) or not sec:
            continue
        train = sec.get("train", {})
        bits = [f"{train.get('epochs')} epochs of the labelled images, batch {train.get('batch_size')}"]
        if sec.get("patch_dropout"):
            bits.append(f"patch dropout {sec['patch_dropout']:g}")
        if method != "cnn" and "layer_decay" in sec.get("optim", {}):
            bits.append(f"layer decay {sec['optim']['layer_decay']:g}")
        if (sec.get("model") or {}).get("drop_path"):
            bits.append(f"drop path {sec['model']['drop_path']:g}")
        parts.append(f"{name}: " + ", ".join(bits))
    return "Recipes (configs/compare_fashion_mnist.yaml): " + "; ".join(parts) + "."


def _cells() -> list[dict]:
    path = FIGS / "cells.json"
    return json.loads(path.read_text()) if path.exists() else []


def _reused_cells() -> list[str]:
    """A paragraph naming the cells that ran in another compare directory and were copied here: rows that do not
    use the pretrained encoder, with the same recipe, seed and label subset (`compare` checks the recipe of every
    cell it finds); their times were measured where they ran."""
    moved: dict[str, list[str]] = {}
    for c in _cells():
        if c["ran_in"] != str(CMP.relative_to(ROOT)):
            moved.setdefault(c["ran_in"], []).append(c["kind"])
    return [
        f"Reused: {len(kinds)} cells ({', '.join(sorted(set(kinds)))}) ran in `{where}` and were copied here: they do "
        "not use the pretrained encoder and have the same recipe, seed and label subset (`maekit compare` checks the "
        "recipe of every cell it finds). Their times were measured there, on that run's machine.\n"
        for where, kinds in moved.items()
    ]


def _precisions() -> str:
    """The precision each trained method's cells ran in (`train.precision: auto` decides per run, by a timed trial)."""
    from maekit.commands.compare import LABELS

    by: dict[str, dict[str, int]] = {}
    for c in _cells():
        if c.get("precision"):
            method = c["cell"].split("_labels")[0]
            by.setdefault(method, {})
            by[method][c["precision"]] = by[method].get(c["precision"], 0) + 1
    parts = [
        f"{LABELS.get(m, m)} " + ", ".join(f"{p} ({n} cells)" for p, n in sorted(counts.items()))
        for m, counts in by.items()
    ]
    return "Training precision (`train.precision: auto`, chosen per run by a timed trial): " + "; ".join(parts) + "."


def _undisturbed_s(method: str, lr) -> float | None:
    """Training seconds of a method's chosen-rate cells had every epoch run at the cell's fastest epoch rate (the
    least disturbed by other jobs on the cores): an estimate for idle cores, mean over seeds; None without metrics."""
    est = []
    for c in _cells():
        ep = c["epochs"]
        if fnmatch.fnmatch(c["cell"], f"{method}_labels*_lr{lr:g}") and ep:
            est.append(sum(r["epoch_time_s"] * r["img_per_s"] for r in ep) / max(r["img_per_s"] for r in ep))
    return sum(est) / len(est) if est else None


def _chosen(results: list[dict], method: str):
    """The learning rate the seeds after the first ran with (the one chosen on validation)."""
    later = [r["base_lr"] for r in results if r["method"] == method and r["seed"] != results[0]["seed"]]
    return later[0] if later else next(r["base_lr"] for r in results if r["method"] == method)


if __name__ == "__main__":
    main()
