"""Regenerates docs/results/jets_sparse_loss.md: reconstructions of quark/gluon jet images with the MAE's plain MSE
against the sparse-aware objective (model.loss=hit_intensity, its hits decoded both ways: --hit-decoding top and
sample; and with model.hit_variance=true, whose sampled pictures draw each hit's intensity too), next to the
mean-image baseline, on the test split (masked patches, fixed masks), 3 seeds each. Every step
resumes or is skipped when done:

    .venv/bin/python benchmarks/jets_sparse_loss.py [--doc-only]

Data: the 20,000 jets of benchmarks/jets_qg.py (`maekit jets generate`, generated here if missing); model,
preprocessing and length (6 epochs): configs/pretrain_jets_qg.yaml as that study pretrains it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUNS = ROOT / "benchmarks/runs"
DATA = RUNS / "jets/qg_3ch_20k.h5"
OUT = RUNS / "jets_sparse20k"
DOC = ROOT / "docs/results/jets_sparse_loss.md"
KEEP = DOC.parent / "jets_sparse_loss"  # the reconstruct.jsonl lines the doc is built from
PY = [sys.executable, "-m", "maekit"]
# each objective: its run directories' prefix -> the pretraining overrides that select it
OBJECTIVES = {
    "mse": ["model.loss=mse"],
    "hit_intensity": ["model.loss=hit_intensity"],
    "hit_variance": ["model.loss=hit_intensity", "model.hit_variance=true"],
}
HIT_OBJECTIVES = ("hit_intensity", "hit_variance")
DECODINGS = {name: ("top", "sample") if name in HIT_OBJECTIVES else ("top",) for name in OBJECTIVES}
SEEDS = (0, 1, 2)
EPOCHS = 6
# the targets for the new objective (test split, masked patches)
INTENSITY_TARGET, MASS_TARGET, OCCUPANCY_FACTOR = 0.10, 0.15, 1.5


# seed 0 of each objective is the jets study's own pretraining (benchmarks/jets_qg.py: the same command and seed),
# copied here rather than trained twice
JETS_STUDY = {"mse": RUNS / "jets_pretrain_m075", "hit_intensity": RUNS / "jets_pretrain_m075_hit"}


def reuse_jets_study() -> None:
    """Copy the jets study's seed-0 runs in (without their reconstruct.jsonl) when this study has not made them."""
    import shutil

    for loss, src in JETS_STUDY.items():
        dst = run_dir(loss, 0)
        if not dst.exists() and (src / "checkpoints" / "best.safetensors").exists():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("reconstruct.jsonl", "reconstruct_*"))


def run_dir(loss: str, seed: int) -> Path:
    return OUT / f"{loss}_seed{seed}"


GENERATE = PY + ["jets", "generate", "--out", str(DATA.relative_to(ROOT)), "--n", "20000", "--channels", "3"]
GENERATE += ["--seed", "0", "--workers", "2"]


def steps(every: bool = False) -> list[list[str]]:
    """The commands of the study; the data generation only when the file is missing (every=True: always)."""
    out = [GENERATE + ["--no-progress"]] if every or not DATA.exists() else []
    for loss, overrides in OBJECTIVES.items():
        for seed in SEEDS:
            d = run_dir(loss, seed).relative_to(ROOT)
            out.append(
                PY
                + [
                    "pretrain",
                    "-c",
                    "configs/pretrain_jets_qg.yaml",
                    f"out={d}",
                    f"data.path={DATA.relative_to(ROOT)}",
                    *overrides,
                    f"train.seed={seed}",
                    f"train.epochs={EPOCHS}",
                    "train.progress=false",
                    "resume=true",
                ]
            )
            for decoding in DECODINGS[loss]:
                out.append(
                    PY
                    + ["reconstruct", str(d), "--split", "test", "--n", "4", "--seed", str(seed)]
                    + ["--hit-decoding", decoding] * (decoding != "top")
                )
    return out


def done(cmd: list[str]) -> bool:
    """A reconstruct step whose line (same seed and decoding) is in the run's reconstruct.jsonl is not rerun."""
    if cmd[3] != "reconstruct":
        return False
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


def _last_physics(loss: str, seed: int, decoding: str) -> dict | None:
    keep = KEEP / f"{loss}_{decoding}_seed{seed}.json"
    line = _last_line(run_dir(loss, seed), seed, decoding)
    if line is not None:
        KEEP.mkdir(parents=True, exist_ok=True)
        # the code that trained it
        line["git_commit"] = json.loads((run_dir(loss, seed) / "run.json").read_text())["env"]["git_commit"]
        keep.write_text(json.dumps(line) + "\n")
    if not keep.exists():
        return None
    line = json.loads(keep.read_text())
    return line["physics"] | {"git_commit": line.get("git_commit", "unknown")}


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):+.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def write_doc() -> None:
    rows: dict[str, list[dict]] = {"mean image pasted into the masked patches": []}
    for loss in OBJECTIVES:
        for decoding in DECODINGS[loss]:
            rows[row_name(loss, decoding)] = []
    for loss in OBJECTIVES:
        for decoding in DECODINGS[loss]:
            for seed in SEEDS:
                ph = _last_physics(loss, seed, decoding)
                if ph is not None:
                    rows[row_name(loss, decoding)].append(ph)
        for seed in SEEDS:
            ph = _last_physics(loss, seed, "top")
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
        "# Jet-image reconstructions: plain MSE against a sparse-aware objective",
        "",
        "Generated by `.venv/bin/python benchmarks/jets_sparse_loss.py` (commands "
        f"below). Test split of {first['images']:,} jets, masked patches only, the "
        "fixed seeded masks of `maekit reconstruct`; units: the file's (GeV).",
        f"{len(SEEDS)} seeds per objective (pretraining seed and mask seed), mean "
        f"± std over seeds. Each model: configs/pretrain_jets_qg.yaml, {EPOCHS} "
        "epochs on the training split (seed 0: the pretraining runs of benchmarks/jets_qg.py, the same command, "
        "copied in). docs/physics.md explains the objective. `--hit-decoding top` puts each image's "
        "expected number of hits at its most probable pixels; `sample` draws every pixel's hit from its predicted "
        "probability (seeded by the mask seed); with `model.hit_variance=true` it draws each hit's intensity from its "
        "predicted normal too (log-normal in GeV).",
        "",
        "| reconstruction | seeds | total intensity rel. residual | image jet mass rel. residual | "
        + " | ".join(f"occupancy {c}: recon / original" for c in channels)
        + " |",
        "|---|---|---|---|" + "---|" * len(channels),
    ]
    summary = {}
    for name, phs in rows.items():
        if not phs:
            continue
        ti = [p["total_intensity"]["rel_residual"]["mean"] for p in phs]
        jm = [p["jet_mass"]["rel_residual"]["mean"] for p in phs]
        occ = {c: [p["occupancy"]["recon"][c] / p["occupancy"]["original"][c] for p in phs] for c in channels}
        summary[name] = {
            "ti": statistics.mean(ti),
            "jm": statistics.mean(jm),
            "occ": {c: statistics.mean(v) for c, v in occ.items()},
        }
        lines.append(
            f"| {name} | {len(phs)} | {_ms(ti)} | {_ms(jm)} | "
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
        "Downstream accuracy of the new objective's encoder (fine-tune, linear probe at 1,000 labels) is not measured "
        "here; docs/results/jets_qg.md is the place for it.",
        "",
        "## Commands",
        "",
        "```bash",
        *[" ".join(["maekit", *c[3:]]) for c in steps(every=True)],
        "```",
        "",
    ]
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc-only", action="store_true")
    a = ap.parse_args()
    if not a.doc_only:
        reuse_jets_study()
        for cmd in steps():
            if done(cmd):
                continue
            print("+", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
    write_doc()


if __name__ == "__main__":
    main()
