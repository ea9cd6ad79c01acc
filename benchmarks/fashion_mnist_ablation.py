"""Regenerates docs/results/fashion_mnist_ablation.md: what each part of the downstream recipe is worth on
Fashion-MNIST with 600 labels, judged on the VALIDATION split only (the test split plays no part in choosing).

Every row is one run of `maekit finetune` (or the CNN), seed 0, label subset 0, built from the sections of
configs/compare_fashion_mnist.yaml with the row's changes. A change `pretrain.KEY=VALUE` first pretrains its own
encoder (configs/fashion_mnist_long.yaml with that override) and fine-tunes from it. Runs resume and finished rows
are skipped. A second table (SHIPPED_ROWS) starts from the recipes as shipped today and fine-tunes the shipped
pretraining (the compare's `pretrained` run, which benchmarks/fashion_mnist_compare.py pretrains). Every row's result
is kept in a few numbers in docs/results/fashion_mnist_ablation_rows.json, so `--doc-only` needs no run directories:

    .venv/bin/python benchmarks/fashion_mnist_ablation.py [--pretrained RUN_DIR] [--only NAME ...]
    .venv/bin/python benchmarks/fashion_mnist_ablation.py --doc-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks/runs/fmnist_ablation"
DOC = ROOT / "docs/results/fashion_mnist_ablation.md"
CONFIG = "configs/compare_fashion_mnist.yaml"

PRETRAIN_CONFIG = "configs/fashion_mnist_long.yaml"
# The pretraining as shipped when the ablation began (PRETRAIN_CONFIG with these overrides) and its run: every row
# starts from them, so the rows stay comparable when the shipped pretraining changes
PRETRAIN_REFERENCE = {"model.decoder_attention": "self", "train.epochs": 14}
REFERENCE_ENCODER = "benchmarks/runs/fmnist_pretrain_long"


def _pretrain_epochs() -> int:
    return PRETRAIN_REFERENCE["train.epochs"]


RATES = ROOT / "docs/results/fashion_mnist_ablation_rates.json"


def _equal_time_rates(contender: str) -> tuple[float, float]:
    """(contender's, the shipped partial decoding's) images/s in the idle-core step rates of benchmarks/throughput.py
    (configuration f: the Fashion-MNIST recipe), as measured when the contender's row was added: kept in RATES, so
    that a later throughput run on another machine does not change a row that has run."""
    rates = json.loads(RATES.read_text()) if RATES.exists() else {}
    if contender not in rates:
        configs = json.loads((ROOT / "docs/results/throughput.json").read_text())["configs"]
        f = next(c["img_s"] for c in configs if c["key"] == "f")
        rates[contender] = {"img_s": f[contender]["median"], "partial_img_s": f["maekit partial"]["median"]}
        RATES.write_text(json.dumps(rates, indent=1) + "\n")
    return rates[contender]["img_s"], rates[contender]["partial_img_s"]


def _equal_time_epochs(contender: str = "maekit") -> int:
    """Pretraining epochs of a contender (throughput.py's name: "maekit" is the standard MAE, every masked patch
    decoded) that take the shipped pretraining's time."""
    own, partial = _equal_time_rates(contender)
    return max(1, round(_pretrain_epochs() * own / partial))


# What every row of a method starts from: its compare section with these changes, i.e. the recipe as it was shipped
# when the ablation began (the fine-tune: 50 epochs, no patch dropout), so the rows stay valid when the shipped
# section changes.
REFERENCE: dict[str, dict] = {"finetune": {"patch_dropout": 0.0, "train.epochs": 50}}

CROSS_PRETRAINING = {
    "pretrain.model.decoder_attention": "cross",
    "pretrain.train.epochs": _equal_time_epochs("maekit cross"),
}

# (row name, method whose compare section is the starting point, changes as dotted keys of that section)
ROWS: list[tuple[str, str, dict]] = [
    ("fine-tune: the reference recipe (50 epochs, no patch dropout)", "finetune", {}),
    (
        "pretraining: standard MAE (decodes every masked patch) at equal time",
        "finetune",
        {"pretrain.model.decoder_keep": 1.0, "pretrain.train.epochs": _equal_time_epochs()},
    ),
    ("fine-tune: 100 epochs (twice the 5-minute budget)", "finetune", {"train.epochs": 100}),
    ("pretraining: cross-attention decoder (CrossMAE) at equal time", "finetune", CROSS_PRETRAINING),
    ("fine-tune: milder crops (area 0.6-1)", "finetune", {"data.augment.crop_scale": [0.6, 1.0]}),
    ("fine-tune: mixup 0.8 / cutmix 1.0", "finetune", {"mixup": 0.8, "cutmix": 1.0}),
    ("ViT from scratch: the shipped recipe", "scratch", {}),
    ("small CNN: the shipped recipe", "cnn", {}),
    ("small CNN: milder crops (area 0.6-1)", "cnn", {"data.augment.crop_scale": [0.6, 1.0]}),
    ("ViT from scratch: layer decay 0.75 (the fine-tune's)", "scratch", {"optim.layer_decay": 0.75}),
    ("fine-tune: layer decay 0.9", "finetune", {"optim.layer_decay": 0.9}),
    ("pretraining: half as long", "finetune", {"pretrain.train.epochs": _pretrain_epochs() // 2}),
    (
        "fine-tune: patch dropout 0.5, 100 epochs (about the time of 50 without)",
        "finetune",
        {"patch_dropout": 0.5, "train.epochs": 100},
    ),
    ("fine-tune: patch dropout 0.5", "finetune", {"patch_dropout": 0.5}),
    ("ViT from scratch: patch dropout 0.5, 100 epochs", "scratch", {"patch_dropout": 0.5, "train.epochs": 100}),
    ("small CNN: 300 epochs", "cnn", {"train.epochs": 300}),
    (
        "fine-tune: patch dropout 0.75, 200 epochs (about the FLOPs of 50 without)",
        "finetune",
        {"patch_dropout": 0.75, "train.epochs": 200},
    ),
    # the frozen encoder: does the cross-attention decoder's weaker linear probe come from its cls token?
    ("linear probe: the shipped recipe (cls token)", "linprobe", {}),
    ("linear probe: mean of the patch tokens", "linprobe", {"pool": "mean"}),
    ("linear probe: cross-attention decoder's encoder (cls token)", "linprobe", CROSS_PRETRAINING),
    (
        "linear probe: cross-attention decoder's encoder, mean of the patch tokens",
        "linprobe",
        CROSS_PRETRAINING | {"pool": "mean"},
    ),
    ("k-NN: the shipped recipe (cls token)", "knn", {}),
    ("k-NN: mean of the patch tokens", "knn", {"pool": "mean"}),
    ("k-NN: cross-attention decoder's encoder (cls token)", "knn", CROSS_PRETRAINING),
    ("k-NN: cross-attention decoder's encoder, mean of the patch tokens", "knn", CROSS_PRETRAINING | {"pool": "mean"}),
]


# Stage 2: the recipes as shipped in CONFIG (no REFERENCE changes) on the shipped pretraining, each row one change
SHIPPED_ROWS: list[tuple[str, str, dict]] = [
    ("fine-tune: as shipped", "finetune", {}),
    ("fine-tune: 200 epochs", "finetune", {"train.epochs": 200}),
    ("fine-tune: batch 32 (twice the steps)", "finetune", {"train.batch_size": 32}),
    ("fine-tune: layer decay 0.65", "finetune", {"optim.layer_decay": 0.65}),
    ("fine-tune: drop path 0.2", "finetune", {"model.drop_path": 0.2}),
    ("fine-tune: patch dropout 0.25", "finetune", {"patch_dropout": 0.25}),
    ("ViT from scratch: as shipped", "scratch", {}),
    ("ViT from scratch: 200 epochs", "scratch", {"train.epochs": 200}),
    ("ViT from scratch: 400 epochs", "scratch", {"train.epochs": 400}),
    ("pretraining: twice as long (56 epochs)", "finetune", {"pretrain.train.epochs": 56}),
]
# the sections as shipped when the second table began (CONFIG's may change since): fine-tune and ViT from scratch
# 100 epochs at base_lr 1.6e-2 and 4e-3
SHIPPED_REFERENCE: dict[str, dict] = {
    "finetune": {"train.epochs": 100, "optim.base_lr": 1.6e-2},
    "scratch": {"train.epochs": 100, "optim.base_lr": 4.0e-3},
}
SHIPPED_OUT = OUT / "shipped"
SUMMARY = ROOT / "docs/results/fashion_mnist_ablation_rows.json"  # every row's result in a few numbers


def row_dir(stage: str, name: str) -> Path:
    return (OUT if stage == "reference" else SHIPPED_OUT) / slug(name)


def pretrain_changes(changes: dict) -> dict:
    return {k.removeprefix("pretrain."): v for k, v in changes.items() if k.startswith("pretrain.")}


def pretrain_path(changes: dict, stage: str = "reference") -> Path | None:
    """Where the row's own pretraining run is (None: the row uses its stage's encoder)."""
    pre = pretrain_changes(changes)
    name = "pretrain_" + slug("_".join(f"{k}_{v}" for k, v in pre.items()))
    return ((OUT if stage == "reference" else SHIPPED_OUT) / name) if pre else None


def shipped_encoder() -> str:
    import yaml

    return yaml.safe_load((ROOT / CONFIG).read_text())["pretrained"]


def pretrain_minutes(run: Path) -> float:
    """Training minutes of a pretraining run (the sum of its epochs' times)."""
    from maekit.engine.rundir import read_metrics

    return sum(r["epoch_time_s"] for r in read_metrics(run) if "epoch_time_s" in r) / 60


def pretrain_epochs(run: Path) -> int:
    from maekit.engine.rundir import read_metrics

    return sum(1 for r in read_metrics(run) if "epoch_time_s" in r)


def final_val_recon_loss(run: Path) -> float:
    from maekit.engine.rundir import read_metrics

    return [r for r in read_metrics(run) if "val_recon_loss" in r][-1]["val_recon_loss"]


def pretrain_dir(changes: dict, stage: str = "reference") -> Path | None:
    """The row's own pretraining run (None: its stage's encoder), pretrained here (resuming) until it is finished:
    PRETRAIN_CONFIG with the row's changes, on top of PRETRAIN_REFERENCE's for the first table."""
    pre, out = pretrain_changes(changes), pretrain_path(changes, stage)
    if out is None:
        return None
    cmd = [sys.executable, "-m", "maekit", "pretrain", "-c", PRETRAIN_CONFIG, f"out={out}", "resume=true"]
    pre = (PRETRAIN_REFERENCE if stage == "reference" else {}) | pre
    subprocess.run(cmd + ["train.progress=false"] + [f"{k}={v}" for k, v in pre.items()], cwd=ROOT, check=True)
    return out


def _replace(cfg, dotted: dict):
    for key, value in dotted.items():
        head, _, rest = key.partition(".")
        cfg = dataclasses.replace(cfg, **{head: _replace(getattr(cfg, head), {rest: value}) if rest else value})
    return cfg


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def run_rows(pretrained: str | None, only: list[str] | None) -> None:
    from maekit.commands import compare, finetune, knn, linprobe
    from maekit.config import CompareConfig, load_config

    shipped = load_config(CompareConfig, CONFIG)
    cfg = load_config(CompareConfig, CONFIG, [f"pretrained={pretrained or REFERENCE_ENCODER}"])
    stages = [("reference", name, method, changes) for name, method, changes in ROWS]
    stages += [("shipped", name, method, changes) for name, method, changes in SHIPPED_ROWS]
    done = json.loads(SUMMARY.read_text())["rows"] if SUMMARY.exists() else {}
    for stage, name, method, changes in stages:
        out = row_dir(stage, name)
        if (only and slug(name) not in only) or (out / "result.json").exists() or f"{stage}/{slug(name)}" in done:
            continue  # a row whose result is kept has run (its run directory may be gone)
        pre = pretrain_dir(changes, stage)
        own = {k: v for k, v in changes.items() if not k.startswith("pretrain.")}
        if stage == "shipped":
            c = _replace(
                compare._cell_config(shipped, method, 600, 0, None, str(pre or shipped.pretrained)),
                SHIPPED_REFERENCE.get(method, {}) | own,
            )
        else:
            c = _replace(
                compare._cell_config(cfg, method, 600, 0, None, str(pre or cfg.pretrained)),
                REFERENCE.get(method, {}) | own,
            )
        print(f"+ {name}", flush=True)
        if method in ("linprobe", "knn"):  # seconds: no resuming
            (linprobe if method == "linprobe" else knn).run(c, out)
        else:
            finetune.run(dataclasses.replace(c, resume=out.exists() and (out / "run.json").exists()), out, method)


STEPS = ROOT / "docs/results/fashion_mnist_ablation_steps.json"


def count_steps(rates=(0.0, 0.5)) -> None:
    """Floating-point operations of one fine-tuning step (the compare's ViT, batch 64, forward and backward, counted by
    torch.utils.flop_counter) at each patch dropout rate, to STEPS: the cost of a step whatever the machine's load."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from maekit.models.vit import ViT

    flops = {}
    for rate in rates:
        torch.manual_seed(0)
        model = ViT((28, 28), 4, 1, 128, 6, 4, drop_path=0.1, num_classes=10, global_pool="mean", patch_dropout=rate)
        x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
        with FlopCounterMode(display=False) as counter:
            F.cross_entropy(model(x), y).backward()
        flops[str(rate)] = counter.get_total_flops()
    STEPS.write_text(json.dumps({"flops_per_step": flops, "batch": 64}, indent=1) + "\n")
    print(f"wrote {STEPS}")


def summaries() -> dict:
    """SUMMARY's rows and pretraining losses, refreshed from the run directories that exist here."""
    from maekit.engine.rundir import read_metrics

    kept = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {"rows": {}, "pretrain_val_recon_loss": {}}
    for stage, rows in (("reference", ROWS), ("shipped", SHIPPED_ROWS)):
        for name, _, changes in rows:
            f = row_dir(stage, name) / "result.json"
            if f.exists():
                r = json.loads(f.read_text())
                kept["rows"][f"{stage}/{slug(name)}"] = {
                    "method": r["method"],
                    "val_accuracy": r["val_accuracy"],
                    "precision": json.loads((f.parent / "run.json").read_text()).get("precision"),
                    # training only (a resumed row's result time is not); k-NN trains nothing and logs no epochs
                    "train_s": sum(m.get("epoch_time_s", 0.0) for m in read_metrics(f.parent)),
                }
            if (run := pretrain_path(changes, stage)) and (run / "metrics.jsonl").exists():
                key = slug(name) if stage == "reference" else f"{stage}/{slug(name)}"
                kept["pretrain_val_recon_loss"][key] = final_val_recon_loss(run)
                kept.setdefault("pretrain_train_min", {})[key] = pretrain_minutes(run)
                kept.setdefault("pretrain_epochs", {})[key] = pretrain_epochs(run)
    for key, run in (("reference", ROOT / REFERENCE_ENCODER), ("shipped", ROOT / shipped_encoder())):
        if (run / "metrics.jsonl").exists():
            kept["pretrain_val_recon_loss"][key] = final_val_recon_loss(run)
            kept.setdefault("pretrain_train_min", {})[key] = pretrain_minutes(run)
            kept.setdefault("pretrain_epochs", {})[key] = pretrain_epochs(run)
    SUMMARY.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")
    return kept


def _table(rows: list[tuple[str, dict, dict]]) -> tuple[list[str], list[tuple[float, str]]]:
    """The table's lines and each changed row's difference (points) to its method's unchanged row."""
    base = {r["method"]: r for _, ch, r in rows if not ch}
    lines = [
        "| row | change | val accuracy (%) | vs the reference recipe (points) | training time (s) |",
        "|---|---|---:|---:|---:|",
    ]
    deltas = []
    for name, changes, r in rows:
        ref = base.get(r["method"])
        delta = 100 * (r["val_accuracy"] - ref["val_accuracy"]) if ref and changes else None
        if delta is not None:
            deltas.append((delta, name))
        change = ", ".join(f"`{k}={v}`" for k, v in changes.items()) or "(none)"
        shown = f"{delta:+.2f}" if delta is not None else ""
        lines.append(f"| {name} | {change} | {100 * r['val_accuracy']:.2f} | {shown} | {r['train_s']:.0f} |")
    return lines, deltas


def write_doc() -> None:
    kept = summaries()
    rows = [
        (name, changes, kept["rows"][key])
        for name, _, changes in ROWS
        if (key := f"reference/{slug(name)}") in kept["rows"]
    ]
    table, deltas = _table(rows)
    lines = [
        "# Fashion-MNIST, 600 labels: what each part of the downstream recipe is worth",
        "",
        "Generated by `.venv/bin/python benchmarks/fashion_mnist_ablation.py` from its run "
        f"directories (`{OUT.relative_to(ROOT)}/`). One seed (0), one label subset, the learning "
        f"rate of `{CONFIG}`'s section; **validation accuracy only** (2,000 held-out training "
        "images): the test split chooses nothing. A row changes one thing from its method's "
        "reference recipe: its section of the compare config as shipped when the ablation began ("
        + "; ".join(f"{m}: " + ", ".join(f"`{k}={v}`" for k, v in ch.items()) for m, ch in REFERENCE.items())
        + " on top of today's section).",
        "",
        *table,
    ]
    big = sorted((d, n) for d, n in deltas if abs(d) >= 1.0)
    lines += [
        "",
        "Changes of a point or more (beyond one seed's noise): "
        + ("; ".join(f"{n} {d:+.2f}" for d, n in sorted(big, reverse=True)) if big else "none")
        + ".",
    ]
    std, part = _equal_time_rates("maekit")
    cross, part_now = _equal_time_rates("maekit cross")
    lines += [
        "",
        f"The other rows fine-tune the encoder of `{REFERENCE_ENCODER}`. Rows named *pretraining* pretrain their "
        f"own encoder (`{PRETRAIN_CONFIG}` with "
        + " ".join(f"`{k}={v}`" for k, v in PRETRAIN_REFERENCE.items())
        + ", the pretraining as shipped when the ablation began, and the change) and "
        f"fine-tune it with the reference recipe. Equal time: the standard MAE trains at {std:.0f} img/s "
        f"and the partial decoding then shipped at {part:.0f} img/s on idle cores (benchmarks/throughput.py, "
        f"configuration f), so {_equal_time_epochs()} standard epochs take the time of {_pretrain_epochs()} "
        "partial ones. The cross-attention decoder row was added later, on a machine where the same benchmark "
        f"measured {cross:.0f} img/s for it (partial decoding too) against {part_now:.0f} for the self-attention "
        "decoder: "
        f"{_equal_time_epochs('maekit cross')} epochs ({RATES.relative_to(ROOT)} keeps the rates each row used). "
        "Training times in the table were measured on cores shared with other jobs, except the cross-attention "
        "decoder row's (idle cores, a faster machine).",
        "Final validation reconstruction loss of each pretraining (normalised-pixel MSE on the masked patches, fixed "
        f"masks): reference {kept['pretrain_val_recon_loss']['reference']:.4f}; "
        + "; ".join(
            f"{name.removeprefix('pretraining: ')} {kept['pretrain_val_recon_loss'][slug(name)]:.4f}"
            for name, changes, _ in rows
            if pretrain_path(changes) and slug(name) in kept["pretrain_val_recon_loss"]
        )
        + ".",
        *(
            [
                "Step cost: a fine-tuning step with patch dropout 0.5 takes "
                f"{st['flops_per_step']['0.5'] / st['flops_per_step']['0.0']:.2f} of the floating-point operations of "
                f"one without ({st['flops_per_step']['0.5'] / 1e9:.1f} against {st['flops_per_step']['0.0'] / 1e9:.1f} "
                f"GFLOP, forward and backward, batch {st['batch']}, torch.utils.flop_counter; `--count-steps`), so 100 "
                f"such epochs cost about {2 * st['flops_per_step']['0.5'] / st['flops_per_step']['0.0']:.2f} times 50 "
                "plain ones. Wall-clock step times were not measured on idle cores for this table."
            ]
            if (st := (json.loads(STEPS.read_text()) if STEPS.exists() else None))
            else []
        ),
        "",
        "One seed: differences under about one point are within the seed-to-seed spread of the compare "
        "(docs/results/fashion_mnist.md gives the spread over three seeds).",
        "",
    ]
    lines += shipped_section(kept)
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


def shipped_section(kept: dict) -> list[str]:
    """The second table: one change at a time from the recipes as shipped, on the shipped pretraining."""
    import yaml

    rows = [
        (name, changes, kept["rows"][key])
        for name, _, changes in SHIPPED_ROWS
        if (key := f"shipped/{slug(name)}") in kept["rows"]
    ]
    if not rows or "shipped" not in kept["pretrain_val_recon_loss"]:
        return []
    pre = yaml.safe_load((ROOT / PRETRAIN_CONFIG).read_text())
    keys = ("pretrain_val_recon_loss", "pretrain_train_min", "pretrain_epochs")
    loss, minutes, epochs = (kept.get(k, {}) for k in keys)
    own = [
        f"{name.removeprefix('pretraining: ')}: {epochs[k]} epochs, {minutes[k]:.1f} min, loss {loss[k]:.4f}"
        for name, changes, _ in rows
        if pretrain_changes(changes) and (k := f"shipped/{slug(name)}") in loss
    ]
    table, deltas = _table(rows)
    big = sorted((d, n) for d, n in deltas if abs(d) >= 1.0)
    precisions = sorted({r["precision"] for _, _, r in rows if r.get("precision")}) or ["not recorded"]
    return [
        "## The shipped recipes, one change at a time",
        "",
        f"Each row starts from its method's section of `{CONFIG}` as shipped when this table began ("
        + "; ".join(f"{m}: " + ", ".join(f"`{k}={v:g}`" for k, v in ch.items()) for m, ch in SHIPPED_REFERENCE.items())
        + f") and fine-tunes the shipped pretraining, `{shipped_encoder()}` (`{PRETRAIN_CONFIG}`: "
        f"{epochs.get('shipped', '?')} epochs, {pre['model'].get('decoder_attention', 'self')}-attention decoder), "
        "which `benchmarks/fashion_mnist_compare.py` pretrains; rows named *pretraining* pretrain their own encoder ("
        f"`{PRETRAIN_CONFIG}` with the change). Seed 0, label subset 0, validation accuracy only; training precision "
        f"{', '.join(precisions)} (`train.precision: auto`). Final validation reconstruction loss and training time "
        f"of each pretraining: shipped {loss['shipped']:.4f}, {minutes['shipped']:.1f} min"
        + "".join(f"; {x}" for x in own)
        + ".",
        "",
        *table,
        "",
        "Changes of a point or more: "
        + ("; ".join(f"{n} {d:+.2f}" for d, n in sorted(big, reverse=True)) if big else "none")
        + ". The same one-seed caution applies.",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", help=f"pretraining run (default: {REFERENCE_ENCODER})")
    ap.add_argument("--only", nargs="*", help="row slugs to run")
    ap.add_argument("--doc-only", action="store_true")
    ap.add_argument(
        "--count-steps",
        action="store_true",
        help="count a fine-tuning step's operations with and without patch dropout first",
    )
    a = ap.parse_args()
    if a.count_steps:
        count_steps()
    if not a.doc_only:
        run_rows(a.pretrained, a.only)
    write_doc()


if __name__ == "__main__":
    main()
