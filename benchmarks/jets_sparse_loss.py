"""Regenerates docs/results/jets_sparse_loss.md (3-channel quark/gluon jets) and docs/results/task3d_sparse_loss.md
(8-channel Task 3d jets): reconstructions with the MAE's plain MSE against the sparse-aware objective
(model.loss=hit_intensity, its hits decoded three ways: --hit-decoding top, sample, and calibrated after
`maekit calibrate` fits it on the validation split; and with model.hit_variance=true, whose sampled pictures draw each
hit's intensity too), next to the mean-image baseline, on the test split (masked patches, fixed masks), 3 seeds each.
Every step resumes or is skipped when done:

    .venv/bin/python benchmarks/jets_sparse_loss.py [--study qg|task3d] [--doc-only]

qg: the 20,000 jets of benchmarks/jets_qg.py (`maekit jets generate`, generated here if missing), model,
preprocessing and length (6 epochs) of configs/pretrain_jets_qg.yaml as that study pretrains it. task3d: the
unlabelled file of benchmarks/task3d_8ch.py (run that first) and its pretraining, configs/seeds/task3d_8ch_cpu.yaml.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUNS = ROOT / "benchmarks/runs"
PY = [sys.executable, "-m", "maekit"]
# each objective: its run directories' prefix -> the pretraining overrides that select it
OBJECTIVES = {
    "mse": ["model.loss=mse"],
    "hit_intensity": ["model.loss=hit_intensity"],
    "hit_variance": ["model.loss=hit_intensity", "model.hit_variance=true"],
}
HIT_OBJECTIVES = ("hit_intensity", "hit_variance")
DECODINGS = {name: ("top", "sample", "calibrated") if name in HIT_OBJECTIVES else ("top",) for name in OBJECTIVES}
CALIBRATION = "hit_calibration.json"  # what `maekit calibrate` writes into a run
SEEDS = (0, 1, 2)
# the targets for the new objective (test split, masked patches)
INTENSITY_TARGET, MASS_TARGET, OCCUPANCY_FACTOR = 0.10, 0.15, 1.5


@dataclass
class Study:
    """One data set: its pretraining config and data, run folder, doc, objectives, and the runs reused for seed 0."""

    name: str
    title: str
    config: str
    data: Path
    out: Path
    doc: Path
    objectives: tuple[str, ...]
    reuse: dict[str, Path]  # objective -> a run of another study made by the same command with seed 0
    reused_from: str  # that study, in words
    downstream: str  # where the encoders' downstream accuracy is
    epochs: int | None = None  # None: the config's
    generate: list[str] | None = None  # the command that makes the data (None: another benchmark makes it)
    # downstream of each sparse-aware objective's seed-0 encoder, here: `maekit compare -c CONFIG OVERRIDES`, next to
    # the plain-MSE encoder's results files (made by another benchmark with the same config and recipe)
    compare: list[str] | None = None
    mse_results: dict[str, Path] | None = None  # method -> the plain-MSE encoder's results.csv for it

    @property
    def keep(self) -> Path:  # the reconstruct.jsonl lines the doc is built from
        return self.doc.parent / self.doc.stem

    def run_dir(self, loss: str, seed: int) -> Path:
        return self.out / f"{loss}_seed{seed}"


QG_DATA = RUNS / "jets/qg_3ch_20k.h5"
QG = Study(
    "qg",
    "Jet-image reconstructions: plain MSE against a sparse-aware objective",
    "configs/pretrain_jets_qg.yaml",
    QG_DATA,
    RUNS / "jets_sparse20k",
    ROOT / "docs/results/jets_sparse_loss.md",
    tuple(OBJECTIVES),
    {"mse": RUNS / "jets_pretrain_m075", "hit_intensity": RUNS / "jets_pretrain_m075_hit"},
    "the pretraining runs of benchmarks/jets_qg.py",
    "docs/results/jets_qg.md has it (fine-tune, linear probe and k-NN at 1,000 labels).",
    epochs=6,
    generate=PY
    + ["jets", "generate", "--out", str(QG_DATA.relative_to(ROOT)), "--n", "20000", "--channels", "3"]
    + ["--seed", "0", "--workers", "2"],
)
TASK3D = Study(
    "task3d",
    "8-channel jet-image (Task 3d) reconstructions: plain MSE against a sparse-aware objective",
    "configs/seeds/task3d_8ch_cpu.yaml",
    RUNS / "task3d/unlabelled.h5",
    RUNS / "task3d_sparse",
    ROOT / "docs/results/task3d_sparse_loss.md",
    ("mse", "hit_intensity", "hit_variance"),
    {"mse": RUNS / "task3d/pretrain"},
    "the pretraining of benchmarks/task3d_8ch.py",
    "docs/results/task3d_8ch.md has the plain-MSE encoder's.",
    # benchmarks/task3d_8ch.py's recipe: the fine-tune with its validated lr grid (compare_tuned), the linear probe
    # of the seed's protocol (compare_seed)
    compare=[
        "-c",
        "configs/seeds/task3d_8ch_cpu_downstream.yaml",
        "pretrain.data.path=benchmarks/runs/task3d/labelled.h5",
        "methods=[finetune,linprobe]",
        "finetune_lrs=[3.0e-4,1.0e-3,3.0e-3]",
    ],
    mse_results={
        "finetune": RUNS / "task3d/compare_tuned/results.csv",
        "linprobe": RUNS / "task3d/compare_seed/results.csv",
    },
)
STUDIES = {st.name: st for st in (QG, TASK3D)}


def reuse_runs(st: Study) -> None:
    """Copy another study's seed-0 runs in (without their reconstruct.jsonl) when this study has not made them."""
    import shutil

    for loss, src in st.reuse.items():
        dst = st.run_dir(loss, 0)
        if not dst.exists() and (src / "checkpoints" / "best.safetensors").exists():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("reconstruct.jsonl", "reconstruct_*"))


def steps(st: Study, every: bool = False) -> list[list[str]]:
    """The commands of the study; the data generation only when the file is missing (every=True: always)."""
    out = [st.generate + ["--no-progress"]] if st.generate and (every or not st.data.exists()) else []
    for loss in st.objectives:
        for seed in SEEDS:
            d = st.run_dir(loss, seed).relative_to(ROOT)
            out.append(
                PY
                + ["pretrain", "-c", st.config, f"out={d}", f"data.path={st.data.relative_to(ROOT)}"]
                + OBJECTIVES[loss]
                + [f"train.seed={seed}"]
                + ([f"train.epochs={st.epochs}"] if st.epochs else [])
                + ["train.progress=false", "resume=true"]
            )
            for decoding in DECODINGS[loss]:
                if decoding == "calibrated":  # fitted on the validation split before the test split is decoded
                    out.append(PY + ["calibrate", str(d), "--seed", str(seed)])
                out.append(
                    PY
                    + ["reconstruct", str(d), "--split", "test", "--n", "4", "--seed", str(seed)]
                    + ["--hit-decoding", decoding] * (decoding != "top")
                )
        if st.compare and loss in HIT_OBJECTIVES:
            pre = st.run_dir(loss, 0).relative_to(ROOT)
            out.append(
                PY + ["compare", *st.compare, f"pretrained={pre}", f"out={compare_dir(st, loss).relative_to(ROOT)}"]
            )
    if st.compare:  # the encoders of the other pretraining seeds, at the rate seed 0's encoder chose on validation
        for loss in st.objectives:
            lr = seed0_finetune_lr(st, loss)
            for seed in SEEDS[1:]:
                pre = st.run_dir(loss, seed).relative_to(ROOT)
                grid = [a for a in st.compare if not a.startswith("finetune_lrs=")]
                out.append(
                    PY
                    + ["compare", *grid, f"finetune_lrs=[{lr or 'LR'}]", f"seeds=[{seed}]", f"pretrained={pre}"]
                    + [f"out={seed_compare_dir(st, loss, seed).relative_to(ROOT)}"]
                )
    return out


def seed_compare_dir(st: Study, loss: str, seed: int) -> Path:
    return st.out / f"downstream_{loss}_seed{seed}"


def seed0_results(st: Study, loss: str) -> dict[str, dict]:
    """method -> the seed-0 row of the seed-0 encoder's downstream results (kept copies when the runs are gone)."""
    import csv

    files = (
        [(m, _kept(st, f, f"mse_{f.parent.name}_results.csv")) for m, f in (st.mse_results or {}).items()]
        if loss == "mse"
        else [
            (m, _kept(st, compare_dir(st, loss) / "results.csv", f"{loss}_compare_results.csv"))
            for m in ("finetune", "linprobe")
        ]
    )
    out = {}
    for method, f in files:
        for r in csv.DictReader(f.open()) if f else []:
            if r["method"] == method and r["seed"] == "0":
                out[method] = r
    return out


def seed0_finetune_lr(st: Study, loss: str) -> str | None:
    row = seed0_results(st, loss).get("finetune")
    return row["base_lr"] if row else None


def compare_dir(st: Study, loss: str) -> Path:
    return st.out / f"compare_{loss}"


def downstream_lines(st: Study) -> list[str]:
    """The table of each encoder's downstream accuracy (mean ± std over the compare's seeds), from results.csv files
    kept next to the doc; nothing when there are none."""
    import csv

    def read(path: Path | None, method: str) -> list[dict]:
        return [r for r in csv.DictReader(path.open()) if r["method"] == method] if path else []

    rows = {
        "MAE, model.loss=mse": [
            r
            for method, f in (st.mse_results or {}).items()
            for r in read(_kept(st, f, f"mse_{f.parent.name}_results.csv"), method)
        ]
    }
    for loss in st.objectives:
        if loss in HIT_OBJECTIVES and st.compare:
            f = _kept(st, compare_dir(st, loss) / "results.csv", f"{loss}_compare_results.csv")
            rows["MAE, " + " ".join(OBJECTIVES[loss])] = read(f, "finetune") + read(f, "linprobe")
    if not any(rows.values()) or len([r for r in rows.values() if r]) < 2:
        return []
    out = [
        "## Downstream (seed-0 encoder of each objective)",
        "",
        "| encoder | method | seeds | test accuracy (%) | test ROC-AUC | base_lr |",
        "|---|---|---|---|---|---|",
    ]
    accs: dict[tuple[str, str], list[float]] = {}
    for name, rs in rows.items():
        for method in ("finetune", "linprobe"):
            sel = [r for r in rs if r["method"] == method]
            if sel:
                accs[name, method], cells = result_cells(sel)
                out.append(f"| {name} | {method} | {len(sel)} | {cells} |")
    out.append("")
    out += gap_lines(accs, "MAE, model.loss=mse", lambda name: name, "", "seed spread")
    return out + [
        "",
        "Each trained method's recipe and learning-rate grid is benchmarks/task3d_8ch.py's (chosen on validation with "
        "the first seed); the plain-MSE rows are that study's own runs.",
        "",
    ]


def seed_downstream_lines(st: Study) -> list[str]:
    """Each objective's encoders of all pretraining seeds fine-tuned and probed (fine-tune seed = pretraining seed;
    seed 0's from the tables above, the others at the rate seed 0's encoder chose): the spread that includes the
    pretraining's own randomness, which one encoder per objective cannot show."""
    import csv

    per: dict[tuple[str, str], list[dict]] = {}
    for loss in st.objectives:
        rows = {0: seed0_results(st, loss)}
        for seed in SEEDS[1:]:
            f = _kept(st, seed_compare_dir(st, loss, seed) / "results.csv", f"{loss}_downstream_seed{seed}_results.csv")
            rows[seed] = {r["method"]: r for r in csv.DictReader(f.open())} if f else {}
        for method in ("finetune", "linprobe"):
            got = [rows[seed][method] for seed in SEEDS if method in rows[seed]]
            if len(got) == len(SEEDS):
                per[loss, method] = got
    if not any(loss != "mse" for loss, _ in per) or not any(loss == "mse" for loss, _ in per):
        return []
    out = [
        "## Downstream across pretraining seeds",
        "",
        "The table above fine-tunes one encoder per objective (pretraining seed 0) with three fine-tuning seeds. "
        "Here every pretraining seed's encoder is fine-tuned and probed once, with the fine-tuning seed equal to the "
        "pretraining seed (seed 0: the seed-0 rows above; seeds 1 and 2 at the base_lr that seed 0's encoder chose "
        "on validation), so the spread includes the pretraining's own randomness.",
        "",
        "| encoder | method | test accuracy per pretraining seed (%) | mean ± std (%) | test ROC-AUC | base_lr |",
        "|---|---|---|---|---|---|",
    ]
    acc: dict[tuple[str, str], list[float]] = {}
    for (loss, method), rs in per.items():
        a, cells = result_cells(rs)
        acc[loss, method] = a
        out.append(f"| MAE, {' '.join(OBJECTIVES[loss])} | {method} | {', '.join(f'{v:.2f}' for v in a)} | {cells} |")
    out.append("")
    out += gap_lines(acc, "mse", lambda loss: "MAE, " + " ".join(OBJECTIVES[loss]), " over pretraining seeds", "spread")
    return out + [""]


def result_cells(rows: list[dict]) -> tuple[list[float], str]:
    """results.csv rows -> (test accuracies in %, the table cells "accuracy mean ± std | ROC-AUC mean ± std |
    base_lr")."""
    acc = [100 * float(r["test_accuracy"]) for r in rows]
    auc = [float(r["test_roc_auc"]) for r in rows]
    lrs = sorted({r["base_lr"] for r in rows if r["base_lr"]})
    return acc, (
        f"{statistics.mean(acc):.2f} ± {_sd(acc):.2f} | {statistics.mean(auc):.4f} ± {_sd(auc):.4f} | "
        f"{', '.join(lrs) or '-'}"
    )


def gap_lines(acc: dict[tuple[str, str], list[float]], base: str, title, over: str, spread: str) -> list[str]:
    """One line per (encoder, method) other than `base`: its mean accuracy against base's, and whether the gap is
    within the larger of the two standard deviations."""
    out = []
    for (name, method), values in acc.items():
        ref = acc.get((base, method))
        if ref and name != base:
            gap = statistics.mean(values) - statistics.mean(ref)
            within = abs(gap) <= max(_sd(values), _sd(ref))
            out.append(
                f"- {method}: {title(name)} {gap:+.2f} points against plain MSE{over}, "
                f"{'within' if within else 'outside'} the larger {spread}."
            )
    return out


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _kept(st: Study, path: Path, name: str) -> Path | None:
    """A results file, copied next to the doc when its run exists (so --doc-only works from the repository)."""
    import shutil

    copy = st.keep / name
    if path.exists():
        st.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    return copy if copy.exists() else None


def done(cmd: list[str]) -> bool:
    """A reconstruct step whose line (same seed and decoding) is in the run's reconstruct.jsonl is not rerun."""
    if cmd[3] == "calibrate":
        return (ROOT / cmd[4] / CALIBRATION).exists()
    if cmd[3] != "reconstruct":
        return False  # pretraining and compare resume, or return at once when complete
    line = _last_line(Path(ROOT / cmd[4]), int(cmd[cmd.index("--seed") + 1]), _decoding_of(cmd))
    return line is not None


def _decoding_of(cmd: list[str]) -> str:
    return cmd[cmd.index("--hit-decoding") + 1] if "--hit-decoding" in cmd else "top"


def _last_line(run: Path, seed: int, decoding: str) -> dict | None:
    """The last reconstruct.jsonl line of the test split with this mask seed and hit decoding."""
    src = run / "reconstruct.jsonl"
    if not src.exists():
        return None
    lines = [json.loads(x) for x in src.read_text().splitlines()]
    match = [
        x for x in lines if x["split"] == "test" and x["seed"] == seed and x.get("hit_decoding", "top") == decoding
    ]
    return match[-1] if match else None


def row_name(loss: str, decoding: str) -> str:
    return "MAE, " + " ".join(OBJECTIVES[loss]) + (f", --hit-decoding {decoding}" if loss in HIT_OBJECTIVES else "")


def _last_physics(st: Study, loss: str, seed: int, decoding: str) -> dict | None:
    keep = st.keep / f"{loss}_{decoding}_seed{seed}.json"
    run = st.run_dir(loss, seed)
    line = _last_line(run, seed, decoding)
    if line is not None:
        st.keep.mkdir(parents=True, exist_ok=True)
        # the code that trained it
        line["git_commit"] = json.loads((run / "run.json").read_text())["env"]["git_commit"]
        if decoding == "calibrated":  # what was fitted on the validation split, and how it did there
            fitted = json.loads((run / CALIBRATION).read_text())
            line["fitted"] = {k: fitted[k] for k in ("temperature", "intensity_scale", "fitted_on", "on_the_fit_split")}
        keep.write_text(json.dumps(line) + "\n")
    if not keep.exists():
        return None
    line = json.loads(keep.read_text())
    return line["physics"] | {"git_commit": line.get("git_commit", "unknown"), "fitted": line.get("fitted")}


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):+.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def write_doc(st: Study) -> None:
    rows: dict[str, list[dict]] = {"mean image pasted into the masked patches": []}
    for loss in st.objectives:
        for decoding in DECODINGS[loss]:
            rows[row_name(loss, decoding)] = []
    for loss in st.objectives:
        for decoding in DECODINGS[loss]:
            for seed in SEEDS:
                ph = _last_physics(st, loss, seed, decoding)
                if ph is not None:
                    rows[row_name(loss, decoding)].append(ph)
        for seed in SEEDS:
            ph = _last_physics(st, loss, seed, "top")
            if ph is not None and loss == "mse":  # the baseline does not depend on the model; the same masks per seed
                rows["mean image pasted into the masked patches"].append(
                    {**ph["mean_image"], "channels": ph["channels"]}
                )
    first = next((r[0] for name, r in rows.items() if r and name.startswith("MAE")), None)
    if first is None:
        print("no results yet")
        return
    channels = first["channels"]
    lines = [
        f"# {st.title}",
        "",
        f"Generated by `.venv/bin/python benchmarks/jets_sparse_loss.py --study {st.name}` (commands "
        f"below). Test split of {first['images']:,} jets, masked patches only, the "
        "fixed seeded masks of `maekit reconstruct`; units: the file's (GeV).",
        f"{len(SEEDS)} seeds per objective (pretraining seed and mask seed), mean "
        f"± std over seeds. Each model: {st.config}, {epochs_of(st)} "
        f"epochs on the training split (seed 0 of {', '.join(st.reuse)}: {st.reused_from}, the same command, "
        "copied in). docs/physics.md explains the objective. `--hit-decoding top` puts each image's "
        "expected number of hits at its most probable pixels; `sample` draws every pixel's hit from its predicted "
        "probability (seeded by the mask seed); with `model.hit_variance=true` it draws each hit's intensity from its "
        "predicted normal too (log-normal in GeV). `calibrated` keeps `top`'s number of hits but places them by "
        "Gumbel-top-k at a temperature T and scales each channel's hit intensities, T and the scales fitted on the "
        "validation split by `maekit calibrate` (its mean total-intensity and jet-mass residuals are near zero there "
        "by construction; the test split shows whether that holds on unseen jets). The per-jet std columns are the "
        "resolution: the spread of one jet's residual, averaged over seeds.",
        "",
        "| reconstruction | seeds | total intensity rel. residual | image jet mass rel. residual | jet mass, median | "
        "total intensity, per-jet std | jet mass, per-jet std | "
        + " | ".join(f"occupancy {c}: recon / original" for c in channels)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(channels),
    ]
    summary = {}
    for name, phs in rows.items():
        if not phs:
            continue
        ti = [p["total_intensity"]["rel_residual"]["mean"] for p in phs]
        jm = [p["jet_mass"]["rel_residual"]["mean"] for p in phs]
        jm_median = [p["jet_mass"]["rel_residual"]["median"] for p in phs]
        ti_sd = [p["total_intensity"]["rel_residual"]["std"] for p in phs]
        jm_sd = [p["jet_mass"]["rel_residual"]["std"] for p in phs]
        occ = {c: [p["occupancy"]["recon"][c] / p["occupancy"]["original"][c] for p in phs] for c in channels}
        summary[name] = {
            "ti": statistics.mean(ti),
            "jm": statistics.mean(jm),
            "jm_sd": statistics.mean(jm_sd),
            "occ": {c: statistics.mean(v) for c, v in occ.items()},
        }
        lines.append(
            f"| {name} | {len(phs)} | {_ms(ti)} | {_ms(jm)} | {_ms(jm_median)} | "
            f"{statistics.mean(ti_sd):.3f} | {statistics.mean(jm_sd):.3f} | "
            + " | ".join(
                f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.2f}" for v in occ.values()
            )
            + " |"
        )
    hit_rows = [row_name(h, d) for h in HIT_OBJECTIVES for d in DECODINGS[h] if row_name(h, d) in summary]
    if hit_rows:
        lines += [
            "",
            "## Targets (docs: issue 'Reconstructions a physicist can use')",
            "",
            "| reconstruction | target | met | value |",
            "|---|---|---|---|",
        ]
    missed: dict[str, list[str]] = {}
    for name in hit_rows:
        new = summary[name]
        within = lambda r: 1 / OCCUPANCY_FACTOR <= r <= OCCUPANCY_FACTOR  # noqa: E731
        checks = [
            (
                f"total intensity within ±{INTENSITY_TARGET:.0%}",
                abs(new["ti"]) <= INTENSITY_TARGET,
                f"{new['ti']:+.3f}",
            ),
            (f"image jet mass within ±{MASS_TARGET:.0%}", abs(new["jm"]) <= MASS_TARGET, f"{new['jm']:+.3f}"),
            *[
                (f"occupancy {c} within a factor {OCCUPANCY_FACTOR:g}", within(r), f"x{r:.2f}")
                for c, r in new["occ"].items()
            ],
        ]
        for other in (k for k in summary if k not in hit_rows):
            o = summary[other]
            better = (
                abs(new["ti"]) < abs(o["ti"])
                and abs(new["jm"]) < abs(o["jm"])
                and all(abs(math.log(new["occ"][c])) < abs(math.log(o["occ"][c])) for c in channels)
            )
            checks.append((f"better than '{other}' on every metric", better, ""))
        lines += [f"| {name} | {t} | {'yes' if ok else '**no**'} | {v} |" for t, ok, v in checks]
        missed[name] = [f"{t} ({v})" if v else t for t, ok, v in checks if not ok]
    if missed:
        lines += ["", "## Summary", ""]
        for name, miss in missed.items():
            lines.append(f"- {name}: " + ("every target met." if not miss else "misses " + "; ".join(miss) + "."))
        met_all = [n for n, miss in missed.items() if not miss]
        lines.append(
            "- " + (f"Rows that meet every target: {'; '.join(met_all)}." if met_all else "No row meets every target.")
        )
        base = "mean image pasted into the masked patches"
        for name in (n for n in missed if n.endswith("calibrated") and base in summary):
            top = summary.get(name.replace("calibrated", "top"))
            lines.append(
                f"- {name}: the calibration fixes the mean (the response), not the spread of one jet's residual (the "
                f"resolution): jet mass per-jet std {summary[name]['jm_sd']:.3f}, against "
                + (f"{top['jm_sd']:.3f} for `top` and " if top else "")
                + f"{summary[base]['jm_sd']:.3f} for the mean image."
            )
    lines += calibration_lines(rows, channels)
    commits = {
        name: sorted({p.get("git_commit", "unknown")[:10] for p in phs})
        for name, phs in rows.items()
        if phs and name.startswith("MAE")
    }
    lines += [
        "",
        "Git commit in each run's run.json (the code of the last `pretrain` command on "
        "that run directory; a finished run that is resumed records the code that resumed "
        "it; the hit_intensity objective changed during the project, docs/physics.md): "
        + "; ".join(f"{name}: {', '.join(c)}" for name, c in commits.items())
        + ".",
    ]
    lines += [
        "",
        *(
            downstream_lines(st)
            or [f"Downstream accuracy of the new objective's encoder is not measured here; {st.downstream}"]
        ),
        *seed_downstream_lines(st),
        "",
        "## Commands",
        "",
        "```bash",
        *[" ".join(["maekit", *c[3:]]) for c in steps(st, every=True)],
        "```",
        "",
    ]
    st.doc.write_text("\n".join(lines))
    print(f"wrote {st.doc}")


def calibration_lines(rows: dict[str, list[dict]], channels: list[str]) -> list[str]:
    """What `maekit calibrate` fitted for each calibrated row and seed, and the residuals it left on the validation
    split (the test split's are in the table above)."""
    out = []
    for name, phs in rows.items():
        for seed, ph in zip(SEEDS, phs, strict=False):
            f = ph.get("fitted")
            if not f:
                continue
            if not out:
                out = [
                    "",
                    "## What the calibration fitted (validation split)",
                    "",
                    "| reconstruction | seed | temperature | intensity scale ("
                    + ", ".join(channels)
                    + ") | val total intensity | val jet mass | val images |",
                    "|---|---|---|---|---|---|---|",
                ]
            fit = f["on_the_fit_split"]["calibrated"]
            out.append(
                f"| {name} | {seed} | {f['temperature']:g} | "
                + ", ".join(f"{v:.3f}" for v in f["intensity_scale"])
                + f" | {fit['total_intensity']['mean']:+.3f} | {fit['jet_mass']['mean']:+.3f} | "
                f"{f['fitted_on']['images']:,} |"
            )
    return out


def epochs_of(st: Study) -> int:
    import yaml

    return st.epochs or yaml.safe_load((ROOT / st.config).read_text())["train"]["epochs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", choices=list(STUDIES), action="append", help="default: every study")
    ap.add_argument("--doc-only", action="store_true")
    a = ap.parse_args()
    for st in [STUDIES[n] for n in a.study or STUDIES]:
        if not a.doc_only:
            if not st.data.exists() and not st.generate:
                raise SystemExit(f"{st.data} is missing: it is made by {st.reused_from.split(' of ')[-1]}")
            reuse_runs(st)
            for cmd in steps(st):
                if done(cmd) or "finetune_lrs=[LR]" in cmd:
                    continue
                print("+", " ".join(cmd[2:]), flush=True)
                subprocess.run(cmd, cwd=ROOT, check=True)
            # the other pretraining seeds' downstream needs the rate seed 0's compare chose (run just above)
            for cmd in steps(st):
                if "seeds=[" in " ".join(cmd) and "finetune_lrs=[LR]" not in cmd and not done(cmd):
                    print("+", " ".join(cmd[2:]), flush=True)
                    subprocess.run(cmd, cwd=ROOT, check=True)
        write_doc(st)


if __name__ == "__main__":
    main()
