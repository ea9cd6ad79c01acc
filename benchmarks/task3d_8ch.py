"""Regenerates docs/results/task3d_8ch.md: the seed project "Task 3d" workflow (docs/seeds.md) end to end on
8-channel Pythia jets at 2-core scale. Jets from `maekit jets generate --channels 8`, rewritten in the Task 3d HDF5
layout (an unlabelled file `jet` (N,125,125,8) and a labelled file `jet` + `Y` (N,1)); MAE pretraining on the
unlabelled file (configs/seeds/task3d_8ch_cpu.yaml); `maekit reconstruct` on its training and its test split;
`maekit compress`; and two `maekit compare` runs on the labelled file (configs/seeds/task3d_8ch_cpu_downstream.yaml):
the seed's recipe (fine-tune the pretrained and the from-scratch ViT at lr 1e-5, linear probes with and without
pretraining), and the rates chosen on the validation split (with the CNN and pixel k-NN baselines). Every step is
skipped when its output is complete, and the pretraining and the comparisons resume where they stopped.

    .venv/bin/python benchmarks/task3d_8ch.py             # everything (about 50 minutes on 2 idle CPU cores)
    .venv/bin/python benchmarks/task3d_8ch.py --doc-only  # rewrite the doc from the result files
    .venv/bin/python benchmarks/task3d_8ch.py --smoke     # every step at tiny size: own run folder, doc in /tmp

--threads N sets the torch threads of every training command and the generator's workers (default: all cores).
The time above is an estimate from single-thread step rates; the doc reports the times measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import kept_files

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = [sys.executable, "-m", "maekit"]
PRE_CFG = "configs/seeds/task3d_8ch_cpu.yaml"
DOWN_CFG = "configs/seeds/task3d_8ch_cpu_downstream.yaml"
SEED_PRE, SEED_DOWN = "configs/seeds/task3d_8ch_pretrain.yaml", "configs/seeds/task3d_8ch_downstream.yaml"
# the seed project's own numbers (its README, quoted in configs/seeds/task3d_8ch_downstream.yaml): validation
# accuracy of its fine-tuned models on its data at full size; cited next to ours, never measured here
SEED_CLAIM = {"finetune": 85.5, "scratch": 69.5}
MASK_RATIOS = "0,0.5,0.75,0.9"
# the validated-rate comparison: each trained method's base_lr grid (per 256 images; it replaces the config's
# absolute lr 1e-5), the rate chosen on the validation split with the first seed
GRIDS = {
    "finetune_lrs": "[3.0e-4,1.0e-3,3.0e-3]",
    "scratch_lrs": "[3.0e-4,1.0e-3,3.0e-3]",
    "cnn_lrs": "[3.0e-3,6.0e-3,1.2e-2]",
}
TUNED = ["methods=[finetune,scratch,cnn,pixel_knn]", *[f"{k}={v}" for k, v in GRIDS.items()]]
WHO = {"finetune": "MAE-pretrained", "scratch": "from scratch"}
SECTIONS = ("finetune", "scratch", "cnn", "linprobe", "knn")  # the compare sections that train or extract features


@dataclass
class Study:
    """One study: jet counts, run folder, doc, and overrides of the configs (none for the full study)."""

    name: str
    runs: Path
    doc: Path
    unlabelled: int
    labelled: int
    pre_overrides: list[str] = field(default_factory=list)
    down_overrides: list[str] = field(default_factory=list)
    workers: int = 2

    @property
    def figs(self) -> Path:  # the result files the doc is made from, kept next to it
        return self.doc.parent / self.doc.stem

    def rel(self, path: Path) -> str:
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    @property
    def pre(self) -> Path:
        return self.runs / "pretrain"

    def compare_dir(self, kind: str) -> Path:
        return self.runs / f"compare_{kind}"


FULL = Study("full", ROOT / "benchmarks/runs/task3d", ROOT / "docs/results/task3d_8ch.md", 4000, 2000)
# the smoke test: 40 jets per file, one epoch, one seed, batches of 16 (the smallest split's training part is ~27 jets)
SMOKE = Study(
    "smoke",
    ROOT / "benchmarks/runs/task3d_smoke",
    Path(tempfile.gettempdir()) / "task3d_8ch_smoke/task3d_8ch.md",
    40,
    40,
    ["train.epochs=1", "train.batch_size=16"],
    [
        "seeds=[0]",
        "linprobe.train.epochs=2",
        *[f"{s}.train.epochs=1" for s in ("finetune", "scratch", "cnn")],
        *[f"{s}.train.batch_size=16" for s in ("finetune", "scratch", "cnn", "linprobe")],
    ],
)


# ---------------------------------------------------------------- the steps


def data_files(st: Study) -> dict[str, tuple[Path, Path, int, int]]:
    """kind -> (generated file, Task 3d file, jets, generator seed): independent jets in the two files."""
    return {
        "unlabelled": (st.runs / "gen_unlabelled.h5", st.runs / "unlabelled.h5", st.unlabelled, 1),
        "labelled": (st.runs / "gen_labelled.h5", st.runs / "labelled.h5", st.labelled, 2),
    }


def gen_command(st: Study, kind: str) -> list[str]:
    raw, _, n, seed = data_files(st)[kind]
    return PY + [
        "jets",
        "generate",
        "--out",
        st.rel(raw),
        "--n",
        str(n),
        "--channels",
        "8",
        "--seed",
        str(seed),
        "--workers",
        str(st.workers),
    ]


def pretrain_command(st: Study, threads: list[str]) -> list[str]:
    return PY + [
        "pretrain",
        "-c",
        PRE_CFG,
        f"data.path={st.rel(st.runs / 'unlabelled.h5')}",
        f"out={st.rel(st.pre)}",
        "resume=true",
        *st.pre_overrides,
        *threads,
    ]


def reconstruct_command(st: Study, split: str) -> list[str]:
    return PY + [
        "reconstruct",
        st.rel(st.pre),
        "--split",
        split,
        "--n",
        "4",
        "--out",
        st.rel(st.pre / f"recon_{split}.png"),
    ]


def compress_command(st: Study) -> list[str]:
    return PY + ["compress", st.rel(st.pre), "--mask-ratios", MASK_RATIOS]


def compare_command(st: Study, kind: str, threads: list[str]) -> list[str]:
    extra = TUNED if kind == "tuned" else []
    return PY + [
        "compare",
        "-c",
        DOWN_CFG,
        f"pretrained={st.rel(st.pre)}",
        f"pretrain.data.path={st.rel(st.runs / 'labelled.h5')}",
        f"out={st.rel(st.compare_dir(kind))}",
        *extra,
        *st.down_overrides,
        *threads,
    ]


def thread_overrides(threads: int | None) -> tuple[list[str], list[str]]:
    """train.threads for the pretraining and for every compare section (none: maekit's default, all cores)."""
    if threads is None:
        return [], []
    return [f"train.threads={threads}"], [f"{s}.train.threads={threads}" for s in ("pretrain", *SECTIONS)]


def to_task3d(raw: Path, dst: Path, labelled: bool, n: int) -> dict:
    """The generator's file (X_jets (N,125,125,8), y) rewritten in the Task 3d layout: `jet` (N,125,125,8) float32,
    chunked one jet per chunk and compressed, and for the labelled file `Y` (N,1) float32; written to a temporary
    file and renamed, so the file exists only when complete."""
    import h5py
    import numpy as np

    tmp = dst.with_name(dst.name + ".tmp")
    with h5py.File(raw, "r") as f:
        if f["X_jets"].shape[0] != n:
            raise SystemExit(f"{raw} holds {f['X_jets'].shape[0]} jets, not {n}: remove it to generate it again")
    with h5py.File(raw, "r") as f, h5py.File(tmp, "w") as g:
        x = f["X_jets"]
        shape = x.shape[1:]
        jet = g.create_dataset(
            "jet", (n, *shape), np.float32, chunks=(1, *shape), compression="gzip", compression_opts=4, shuffle=True
        )
        for i in range(0, n, 256):
            jet[i : i + 256] = x[i : i + 256].astype(np.float32)
        y = f["y"][...].astype(np.float32)
        if labelled:
            g.create_dataset("Y", data=y.reshape(-1, 1))
    tmp.replace(dst)
    return {
        "jets": int(n),
        "shape": list(shape),
        "keys": ["jet", "Y"] if labelled else ["jet"],
        "gluon_fraction": float((y == 1).mean()),
    }


def task3d_complete(path: Path, n: int) -> bool:
    import h5py

    if not path.exists():
        return False
    with h5py.File(path, "r") as f:
        return "jet" in f and f["jet"].shape[0] == n


def reconstructed(st: Study, split: str) -> bool:
    log = st.pre / "reconstruct.jsonl"
    if not log.exists() or not (st.pre / f"recon_{split}.png").exists():
        return False
    return any(json.loads(x)["split"] == split for x in log.read_text().splitlines() if x.strip())


def compare_complete(st: Study, kind: str) -> bool:
    from maekit.config import CompareConfig, load_config

    res = st.compare_dir(kind) / "results.csv"
    if not res.exists():
        return False
    cfg = load_config(CompareConfig, ROOT / DOWN_CFG, compare_command(st, kind, [])[6:])
    return len(list(csv.DictReader(res.open()))) == len(cfg.methods) * len(cfg.seeds) * len(cfg.budgets)


def run(st: Study, cmd: list[str], step: str, capture: bool = False) -> str:
    """Run one maekit command; its wall time goes to times.json (the invocation that finished the step)."""
    print("+ maekit", " ".join(cmd[3:]), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    record_time(st, step, time.time() - t0)
    if capture:
        print(p.stdout, end="")
    return p.stdout or ""


def record_time(st: Study, step: str, seconds: float) -> None:
    times_file = st.runs / "times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    times[step] = seconds
    times_file.write_text(json.dumps(times, indent=1))


def run_study(st: Study, threads: int | None) -> None:
    from maekit.commands.cells import pretraining_finished
    from maekit.config import PretrainConfig, load_config

    st.runs.mkdir(parents=True, exist_ok=True)
    pre_threads, down_threads = thread_overrides(threads)
    for kind, (raw, dst, n, _) in data_files(st).items():
        if task3d_complete(dst, n):
            continue
        if dst.exists():
            raise SystemExit(f"{dst} does not hold {n} jets: remove it (and {raw.name}) to generate it again")
        if not raw.exists():
            out = run(st, gen_command(st, kind), f"generate {kind}", capture=True)
            summary = [json.loads(x) for x in out.splitlines() if x.startswith('{"out"')][-1]
            (st.runs / f"gen_{kind}.json").write_text(json.dumps(summary, indent=1))
        t0 = time.time()
        info = to_task3d(raw, dst, kind == "labelled", n) | {"seconds": time.time() - t0}
        record_time(st, f"convert {kind}", info["seconds"])
        (st.runs / f"{kind}.json").write_text(json.dumps(info, indent=1))
        print(f"{dst}: {info['jets']} jets in the Task 3d layout ({', '.join(info['keys'])})", flush=True)
    epochs = load_config(PretrainConfig, ROOT / PRE_CFG, st.pre_overrides).train.epochs
    if not pretraining_finished(st.pre, epochs):
        run(st, pretrain_command(st, pre_threads), "pretrain")
    for split in ("train", "test"):
        if not reconstructed(st, split):
            run(st, reconstruct_command(st, split), f"reconstruct {split}")
    if not (st.pre / "compress_test" / "compress.json").exists():
        run(st, compress_command(st), "compress")
    for kind in ("seed", "tuned"):
        if not compare_complete(st, kind):
            run(st, compare_command(st, kind, down_threads), f"compare {kind}")


# ---------------------------------------------------------------- the doc


def kept(st: Study, path: Path, name: str) -> Path | None:
    """A result file of the study, kept next to its doc as NAME (kept_files.kept)."""
    return kept_files.kept(path, st.figs / name)


def keep_all(st: Study) -> None:
    """Copy every result file the doc reads; the split sizes from the runs' splits.npz."""
    import numpy as np

    for name in ("gen_unlabelled.json", "gen_labelled.json", "unlabelled.json", "labelled.json", "times.json"):
        kept(st, st.runs / name, name)
    for name in (
        "metrics.jsonl",
        "reconstruct.jsonl",
        "run.json",
        "config.yaml",
        "loss.png",
        "recon_train.png",
        "recon_test.png",
        "recon_test_channels.png",
    ):
        kept(st, st.pre / name, f"pretrain_{name}")
    for name in ("compress.json", "compress.md"):
        kept(st, st.pre / "compress_test" / name, name)
    for kind in ("seed", "tuned"):
        for name in ("results.csv", "results.md", "config.yaml"):
            kept(st, st.compare_dir(kind) / name, f"compare_{kind}_{name}")
    sizes = {}
    for what, folder in (
        ("pretraining", st.pre),
        ("downstream", next(iter(sorted((st.compare_dir("seed") / "cells").glob("finetune_*"))), None)),
    ):
        if folder is not None and (folder / "splits.npz").exists():
            rows = np.load(folder / "splits.npz")
            sizes[what] = {k[: -len("_rows")]: int(len(rows[k])) for k in rows.files if k.endswith("_rows")}
    if sizes:
        (st.figs / "splits.json").write_text(json.dumps(sizes, indent=1))


def _json(st: Study, name: str):
    f = st.figs / name
    return json.loads(f.read_text()) if f.exists() else None


def _lines(st: Study, name: str) -> list[dict]:
    f = st.figs / name
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []


def read_results(st: Study, kind: str) -> list[dict]:
    f = st.figs / f"compare_{kind}_results.csv"
    rows = list(csv.DictReader(f.open())) if f.exists() else []
    num = lambda v: float(v) if v not in ("", None) else None  # noqa: E731
    for r in rows:
        r["labels"], r["seed"] = int(r["labels"]), int(r["seed"])
        for k in ("test_accuracy", "test_roc_auc", "val_accuracy", "time_s", "base_lr", "lr"):
            r[k] = num(r.get(k))
        r["test_roc_auc"] = math.nan if r["test_roc_auc"] is None else r["test_roc_auc"]
    return rows


def summaries(rows: list[dict]) -> dict[str, dict]:
    """method -> mean and std (in %) of test accuracy, ROC-AUC, validation accuracy, and the rate it ran at."""
    from maekit.commands.cells import summarize

    out = {}
    for s in summarize(rows):
        r = next(x for x in rows if x["method"] == s["method"])
        rate = (
            f"lr {r['lr']:g}"
            if r["lr"] is not None
            else f"base_lr {r['base_lr']:g}"
            if r["base_lr"] is not None
            else ""
        )
        out[s["method"]] = {
            "acc": 100 * s["mean"],
            "sd": 100 * s["std"],
            "auc": s["auc_mean"],
            "auc_sd": s["auc_std"],
            "val": 100 * s["val_mean"],
            "seeds": s["seeds"],
            "labels": s["labels"],
            "rate": rate,
        }
    return out


def fmt(s: dict) -> str:
    auc = "n/a" if math.isnan(s["auc"]) else f"{s['auc']:.3f}"
    return f"{s['acc']:.2f} ± {s['sd']:.2f} % (ROC-AUC {auc}, {s['seeds']} seed{'s' if s['seeds'] > 1 else ''})"


def recipe_table(st: Study) -> list[str]:
    """The seed's settings next to this study's, read from the four configs (with the study's overrides)."""
    from maekit.config import CompareConfig, PretrainConfig, load_config

    rows = []
    cols = []
    for pre_file, down_file, pre_over, down_over in (
        (SEED_PRE, SEED_DOWN, [], []),
        (PRE_CFG, DOWN_CFG, st.pre_overrides, st.down_overrides),
    ):
        p = load_config(PretrainConfig, ROOT / pre_file, pre_over)
        d = load_config(CompareConfig, ROOT / down_file, down_over)
        m, o = p.model, p.optim
        h, w = (p.data.crop, p.data.crop) if p.data.crop else tuple(m.img_size)
        lr = lambda c: f"{c.lr:g}" if c.lr is not None else f"base_lr {c.base_lr:g}"  # noqa: E731
        cols.append(
            [
                f"`{pre_file}`, `{down_file}`",
                f"{h} x {w} x {m.in_chans}",
                f"{m.patch_size} ({(h // m.patch_size) * (w // m.patch_size)} tokens)",
                f"{m.depth} x {m.embed_dim} ({m.num_heads} heads)",
                f"{m.decoder_depth} x {m.decoder_embed_dim} ({m.decoder_num_heads} heads)",
                f"{m.mask_ratio:g}",
                f"AdamW lr {lr(o)}, weight decay {o.weight_decay:g}, batch {p.train.batch_size}",
                f"{o.schedule}"
                + (f", cycles of {o.restart_epochs:g} epochs" if o.schedule == "cosine_restarts" else "")
                + f", warmup {o.warmup_epochs:g}",
                str(p.train.epochs),
                f"lr {lr(d.finetune.optim)}, {d.finetune.train.epochs} epochs, "
                f"layer decay {d.finetune.optim.layer_decay:g}",
                f"lr {lr(d.scratch.optim)}, {d.scratch.train.epochs} epochs",
                f"{d.linprobe.train.epochs} epochs",
                ", ".join(str(s) for s in d.seeds),
            ]
        )
    names = [
        "configs",
        "image",
        "patch",
        "encoder",
        "decoder",
        "mask ratio",
        "optimiser",
        "schedule",
        "pretraining epochs",
        "fine-tune (pretrained)",
        "fine-tune (from scratch)",
        "linear probe",
        "seeds",
    ]
    rows = ["| | the seed (maekit's GPU-sized config of it) | this study (2 CPU cores) |", "|---|---|---|"]
    rows += [f"| {n} | {a} | {b} |" for n, a, b in zip(names, *cols)]
    return rows


def seen_text(st: Study) -> str:
    """What the models see of the images, from the pretraining config."""
    from maekit.config import PretrainConfig, load_config

    d = load_config(PretrainConfig, ROOT / PRE_CFG, st.pre_overrides).data
    pre = d.preprocess
    parts = [f"the central {d.crop} x {d.crop} pixels" if d.crop else "the whole images"]
    if pre.zero_suppress is not None:
        parts.append(f"zero-suppressed below {pre.zero_suppress:g}")
    if pre.log1p:
        parts.append("log1p-compressed")
    return ", ".join(parts)


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def write_doc(st: Study) -> None:
    keep_all(st)
    env = (_json(st, "pretrain_run.json") or {}).get("env", {})
    times = _json(st, "times.json") or {}
    gen = {k: _json(st, f"gen_{k}.json") for k in ("unlabelled", "labelled")}
    files = {k: _json(st, f"{k}.json") for k in ("unlabelled", "labelled")}
    sizes = _json(st, "splits.json") or {}
    pre_threads, down_threads = thread_overrides(None)
    commands = [
        *[gen_command(st, k) for k in ("unlabelled", "labelled")],
        pretrain_command(st, pre_threads),
        reconstruct_command(st, "train"),
        reconstruct_command(st, "test"),
        compress_command(st),
        compare_command(st, "seed", down_threads),
        compare_command(st, "tuned", down_threads),
    ]
    flags = " ".join(env.get("cpu_flags") or []) or "none of the listed speed flags"
    regen = "benchmarks/task3d_8ch.py" + (" --smoke" if st.name == "smoke" else "")
    lines = [
        "# Task 3d at 2-core scale: MAE on 8-channel jets, reconstruction, compression, pretrained vs scratch",
        "",
        f'Generated by `.venv/bin/python {regen}`, which runs the seed project "Task 3d" workflow',
        "([docs/seeds.md](../seeds.md)) end to end, each step skipped when its output is complete:",
        "",
        "```bash",
        *[" ".join(["maekit", *c[3:]]) for c in commands[:2]],
        "# then, in Python (h5py): X_jets -> `jet` (N,125,125,8) float32, chunked; y -> `Y` (N,1) float32 (labelled)",
        *[" ".join(["maekit", *c[3:]]) for c in commands[2:]],
        "```",
        "",
    ]
    if env:
        lines.append(
            f"Machine: {env['cpu']} ({env['cpu_count']} cores), CPU flags {flags}, {env['torch_threads']} "
            f"torch threads, torch {env['torch']}, maekit {env['maekit']} (the pretraining run's run.json)."
        )
    if times:
        total = sum(times.values())
        lines += [
            "Wall time of each step, as measured (the invocation that finished it): "
            + ", ".join(f"{k} {minutes(v)} min" for k, v in times.items())
            + f"; in all **{minutes(total)} min**."
        ]
    lines += [
        "",
        "## What the seed did and what this study does",
        "",
        *recipe_table(st),
        "",
        f"The seed reports {SEED_CLAIM['finetune']} % (MAE-pretrained, fine-tuned) against "
        f"{SEED_CLAIM['scratch']} % (from scratch) validation accuracy on its own Task 3d data at full size: "
        "the seed's claim, quoted, not a maekit measurement.",
        "",
    ]
    if all(gen.values()) and all(files.values()):
        g = gen["unlabelled"]
        lines += [
            "## Data",
            "",
            f"Pythia 8 Z(->nu nu)+jet events at 14 TeV (`maekit jets generate --channels 8`, "
            f"[docs/physics.md](../physics.md)): half quark and half gluon jets; 8 channels "
            f"{', '.join(g['channels'])}; {files['unlabelled']['jets']:,} jets for the unlabelled file (seed 1) "
            f"and {files['labelled']['jets']:,} for the labelled one (seed 2, gluon fraction "
            f"{files['labelled']['gluon_fraction']:.3f}), generated at "
            + " and ".join(
                f"{gen[k]['jets_per_second']:.1f} jets/s ({plural(gen[k]['workers'], 'worker')})" for k in gen
            )
            + f". The models see {seen_text(st)}.",
        ]
        for what, s in sizes.items():
            lines.append(f"Seeded splits of the {what} file: " + ", ".join(f"{v:,} {k}" for k, v in s.items()) + ".")
        lines.append("")
    ev = [r for r in _lines(st, "pretrain_metrics.jsonl") if "val_recon_loss" in r]
    if ev:
        best = min(ev, key=lambda r: r["val_recon_loss"])
        mins = sum(r.get("epoch_time_s", 0) for r in ev) / 60
        lines += [
            "## Pretraining",
            "",
            f"{plural(len(ev), 'epoch')}, {mins:.1f} min of training (sum of the epochs' times, evaluations "
            "included); "
            f"best checkpoint (minimum validation reconstruction loss) after epoch {best['epoch'] + 1}. "
            "Reconstruction loss: MSE on the masked patches of the normalised images, fixed masks, up to "
            "2,000 images of each split.",
            "",
            "| epoch | train | val | test |",
            "|---|---|---|---|",
        ]
        for r in sorted({id(r): r for r in (best, ev[-1])}.values(), key=lambda r: r["epoch"]):
            tag = " (best)" if r is best else " (last)"
            lines.append(
                f"| {r['epoch'] + 1}{tag} | {r['train_recon_loss']:.4f} | {r['val_recon_loss']:.4f} | "
                f"{r['test_recon_loss']:.4f} |"
            )
        lines.append("")
        if (st.figs / "pretrain_loss.png").exists():
            lines += [f"![pretraining loss]({st.figs.name}/pretrain_loss.png)", ""]
    rec = {r["split"]: r for r in _lines(st, "pretrain_reconstruct.jsonl")}
    if rec:
        lines += reconstruction_section(st, rec)
    comp = st.figs / "compress.md"
    if comp.exists():
        lines += ["## Compression (`maekit compress`, the best checkpoint)", "", comp.read_text().strip(), ""]
    seed_rows, tuned_rows = read_results(st, "seed"), read_results(st, "tuned")
    if seed_rows or tuned_rows:
        lines += downstream_section(st, seed_rows, tuned_rows)
    lines += ["## Observations", "", *observations(st, rec, seed_rows, tuned_rows), ""]
    st.doc.parent.mkdir(parents=True, exist_ok=True)
    st.doc.write_text("\n".join(lines))
    print(f"wrote {st.doc}")


def reconstruction_section(st: Study, rec: dict[str, dict]) -> list[str]:
    seeds = ", ".join(sorted({str(r["seed"]) for r in rec.values()}))
    out = [
        "## Reconstruction on the training and the test data (`maekit reconstruct`, best checkpoint)",
        "",
        f"Fixed masks (seed {seeds}, the run's mask ratio), every image of the split; physics metrics in the "
        "file's units (log1p undone), the visible patches pasted back. Baseline: the training split's mean "
        "image pasted into the masked patches of the same test images.",
        "",
        "| split | images | mask ratio | recon loss | total intensity rel. residual | image jet mass rel. residual |",
        "|---|---|---|---|---|---|",
    ]
    rows = [(s, r, r["physics"]) for s, r in rec.items()]
    if "test" in rec and "mean_image" in rec["test"]["physics"]:
        base = rec["test"]["physics"]["mean_image"]
        rows.append(("test, mean-image baseline", {**rec["test"], "recon_loss": None}, base))
    for name, r, ph in rows:
        ti, jm = ph["total_intensity"]["rel_residual"], ph["jet_mass"]["rel_residual"]
        loss = "" if r["recon_loss"] is None else f"{r['recon_loss']:.4f}"
        out.append(
            f"| {name} | {r['images']:,} | {r['mask_ratio']:g} | {loss} | "
            f"{ti['mean']:+.3f} ± {ti['std']:.3f} | "
            f"{jm['mean']:+.3f} ± {jm['std']:.3f} |"
        )
    ref = rec.get("test") or next(iter(rec.values()))
    chans = ref["physics"]["channels"]
    base = ref["physics"].get("mean_image")
    out += [
        "",
        "Per channel: MSE on the masked pixels (file units) and occupancy (fraction of pixels above the "
        "zero-suppression threshold), test split unless the column says train. Energy channels (total intensity "
        f"and jet mass): {', '.join(ref['physics']['energy_channels'])}.",
        "",
        "| channel | MSE masked, train | MSE masked, test | MSE masked, mean-image baseline | occupancy original "
        "-> reconstruction |",
        "|---|---|---|---|---|",
    ]
    for c in chans:
        tr = rec["train"]["physics"]["mse_masked"][c] if "train" in rec else math.nan
        bl = base["mse_masked"][c] if base else math.nan
        occ = ref["physics"]["occupancy"]
        out.append(
            f"| {c} | {tr:.4g} | {ref['physics']['mse_masked'][c]:.4g} | {bl:.4g} | "
            f"{occ['original'][c]:.4f} -> {occ['recon'][c]:.4f} |"
        )
    out.append("")
    for name in ("recon_train", "recon_test", "recon_test_channels"):
        if (st.figs / f"pretrain_{name}.png").exists():
            out += [f"![{name}]({st.figs.name}/pretrain_{name}.png)", ""]
    return out


def downstream_section(st: Study, seed_rows: list[dict], tuned_rows: list[dict]) -> list[str]:
    labels = (seed_rows or tuned_rows)[0]["labels"]
    test_n = (_json(st, "splits.json") or {}).get("downstream", {}).get("test")
    out = [
        "## Downstream: pretrained vs from scratch",
        "",
        f"{labels:,} labelled training jets (all of the labelled file's training split), "
        + (f"{test_n:,} " if test_n else "")
        + "test jets used once per run, after the checkpoint was chosen on "
        "the validation split; mean ± std over seeds. The seed's numbers are validation accuracies: compare them "
        "with the last column. Rates: `lr` is absolute, `base_lr` is per 256 images (lr = base_lr x batch / 256). "
        "The linear probes keep the config's own rate in either recipe.",
        "",
        "| recipe | method | rate | seeds | test accuracy % | test ROC-AUC | val accuracy % |",
        "|---|---|---|---|---|---|---|",
    ]
    for recipe, rows in (("the seed's", seed_rows), ("rate chosen on validation", tuned_rows)):
        for m, s in summaries(rows).items():
            auc = "n/a" if math.isnan(s["auc"]) else f"{s['auc']:.4f} ± {s['auc_sd']:.4f}"
            out.append(
                f"| {recipe} | {LABEL(m)} | {s['rate']} | {s['seeds']} | "
                f"{s['acc']:.2f} ± {s['sd']:.2f} | "
                f"{auc} | {s['val']:.2f} |"
            )
    md = st.figs / "compare_tuned_results.md"
    if md.exists() and "Learning rate" in (text := md.read_text()):  # the grid search, as compare wrote it
        out += ["", text[text.index("Learning rate") :].strip()]
    cells = sum(r["time_s"] or 0 for r in seed_rows + tuned_rows)
    out += [
        "",
        f"Fine-tuning, probing and k-NN time of the table's cells: {minutes(cells)} min (the learning-rate "
        "trials that were not chosen are not counted here; times.json has each comparison's wall time).",
        "",
    ]
    return out


def observations(st: Study, rec: dict, seed_rows: list[dict], tuned_rows: list[dict]) -> list[str]:
    """The findings, every number computed from the result files."""
    out = []
    s, t = summaries(seed_rows), summaries(tuned_rows)
    labelled = _json(st, "labelled.json")
    chance = 100 * max(labelled["gluon_fraction"], 1 - labelled["gluon_fraction"]) if labelled else None

    def gap(a: dict, b: dict) -> str:
        d, spread = a["acc"] - b["acc"], a["sd"] + b["sd"]
        where = "outside" if abs(d) > spread else "within"
        auc = "" if math.isnan(a["auc"]) or math.isnan(b["auc"]) else f", {a['auc'] - b['auc']:+.3f} ROC-AUC"
        return f"{d:+.2f} points{auc} ({where} the sum of the two seed spreads, {spread:.2f})"

    seed_gap = SEED_CLAIM["finetune"] - SEED_CLAIM["scratch"]
    for recipe, sm in (("At the seed's rate", s), ("At the rates chosen on validation", t)):
        if "finetune" in sm and "scratch" in sm:
            ft, sc = sm["finetune"], sm["scratch"]
            verdict = "beats" if ft["acc"] > sc["acc"] else "does not beat"
            claim = (
                f" The seed's claim at its rate: {SEED_CLAIM['finetune']} % against {SEED_CLAIM['scratch']} %, "
                f"{seed_gap:+.1f} points."
                if sm is s
                else ""
            )
            out.append(
                f"- {recipe} ({ft['rate']} pretrained, {sc['rate']} from scratch), the MAE-pretrained ViT "
                f"{verdict} the one from scratch: {fmt(ft)} against {fmt(sc)}, {gap(ft, sc)}.{claim}"
            )
    for m in ("finetune", "scratch"):
        if m in s and m in t:
            out.append(
                f"- The chosen rate against the seed's lr 1e-5, {WHO[m]}: "
                f"{t[m]['acc'] - s[m]['acc']:+.2f} points ({t[m]['rate']} against {s[m]['rate']})."
            )
    if chance is not None:
        near = [
            f"{LABEL(m)} ({recipe})"
            for recipe, sm in (("seed's rate", s), ("chosen rate", t))
            for m, x in sm.items()
            if x["acc"] - chance <= 2 * x["sd"] + 1.0
        ]
        out.append(
            f"- Chance level (the larger class's share of the labelled jets): {chance:.1f} %. "
            + (
                f"At most a point (plus two seed spreads) above it: {', '.join(near)}."
                if near
                else "Every row is more than a point (plus two seed spreads) above it."
            )
        )
    if "linprobe" in s and "linprobe_random" in s:
        out.append(
            f"- Linear probe: MAE features {fmt(s['linprobe'])} against a random encoder's "
            f"{fmt(s['linprobe_random'])}: {gap(s['linprobe'], s['linprobe_random'])}."
        )
    vit = [
        (f"{LABEL(m)} ({recipe})", x)
        for recipe, sm in (("seed's rate", s), ("chosen rate", t))
        for m, x in sm.items()
        if m in ("finetune", "scratch")
    ]
    if "cnn" in t and vit:
        name, best = max(vit, key=lambda v: v[1]["acc"])
        out.append(
            f"- The small CNN from scratch: {fmt(t['cnn'])}; the best ViT row, {name}: {fmt(best)}; "
            f"ViT minus CNN {best['acc'] - t['cnn']['acc']:+.2f} points."
        )
    if "pixel_knn" in t:
        out.append(f"- k-NN on pixels: {fmt(t['pixel_knn'])}.")
    if "train" in rec and "test" in rec:
        a, b = rec["train"]["recon_loss"], rec["test"]["recon_loss"]
        out.append(
            f"- Reconstruction loss on the training split {a:.4f} ({rec['train']['images']:,} jets) against the "
            f"test split {b:.4f} ({rec['test']['images']:,} jets): test/train = {b / a:.3f}."
        )
    if "test" in rec and "mean_image" in rec["test"]["physics"]:
        ph, base = rec["test"]["physics"], rec["test"]["physics"]["mean_image"]
        better = [c for c in ph["channels"] if ph["mse_masked"][c] < base["mse_masked"][c]]
        out.append(
            f"- On the masked test pixels the MAE has a lower MSE than the mean-image baseline in {len(better)} "
            f"of {len(ph['channels'])} channels" + (f" ({', '.join(better)})" if better else "") + "; total "
            f"intensity residual {ph['total_intensity']['rel_residual']['mean']:+.3f} (baseline "
            f"{base['total_intensity']['rel_residual']['mean']:+.3f}), image jet mass "
            f"{ph['jet_mass']['rel_residual']['mean']:+.3f} "
            f"(baseline {base['jet_mass']['rel_residual']['mean']:+.3f})."
        )
    comp = _json(st, "compress.json")
    if comp:
        rows = comp["rows"]
        mae = min((r for r in rows if r["mask_ratio"] is not None), key=lambda r: r["bytes_per_image"])
        sparse = next(r for r in rows if r["method"].startswith("sparse"))
        raw = next(r for r in rows if r["method"].startswith("raw"))
        smaller = "smaller" if mae["bytes_per_image"] < sparse["bytes_per_image"] else "larger"
        out.append(
            f"- As a codec for {comp['shape'][0]}-channel {comp['shape'][1]} x {comp['shape'][2]} images "
            f"({raw['bytes_per_image']:,.0f} bytes raw): the smallest MAE code, {mae['bytes_per_image']:,.0f} "
            f"bytes (mask {mae['mask_ratio']:g}; total intensity mean abs relative residual "
            f"{mae['intensity_rel_residual_mean_abs']:.3f}), is {smaller} than zero-suppressed sparse storage "
            f"({sparse['bytes_per_image']:,.0f} bytes, exact)."
        )
    return out or ["- (no results yet)"]


def LABEL(method: str) -> str:  # noqa: N802 (the tables' name of a method)
    from maekit.commands.cells import LABELS

    # compare's name for scratch says "own recipe"; here it runs the seed's recipe too (the recipe column says which)
    return "ViT from scratch" if method == "scratch" else LABELS.get(method, method)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from the result files; run nothing")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="every step at tiny size into benchmarks/runs/task3d_smoke, the doc into the temporary folder",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of every training command (train.threads; "
        "default: maekit's, all cores) and jet-generation workers",
    )
    args = ap.parse_args()
    st = SMOKE if args.smoke else FULL
    if args.threads is not None:
        st.workers = args.threads
    if not args.doc_only:
        run_study(st, args.threads)
    write_doc(st)


if __name__ == "__main__":
    main()
