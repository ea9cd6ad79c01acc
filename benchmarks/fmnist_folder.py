"""Regenerates docs/results/fmnist_folder.md: the "Dog photos" seed workflow (configs/seeds/dog_photos_cpu.yaml) on
real pictures: Fashion-MNIST's 70,000 images written as PNG files in class folders, packed, pretrained on, probed.

    .venv/bin/python benchmarks/fmnist_folder.py              # the study, sized for at most 25 minutes on 2 idle cores
    .venv/bin/python benchmarks/fmnist_folder.py --smoke      # 300 pictures per split, 1 epoch, 1 seed: the pipeline
    .venv/bin/python benchmarks/fmnist_folder.py --doc-only   # only rewrite the doc from the result files

Steps, each skipped when its output is complete (the same command continues an interrupted study):
1. The idx files (Debian package dataset-fashion-mnist, or $MAEKIT_DATA) written with Pillow as
   RUN/png/{train,test}/<class name>/NNNNN.png (NNNNN: the picture's index in its idx file; the '/' of "T-shirt/top"
   becomes '_'), in a process pool; RUN/png/written.json records counts, bytes and times once all are written.
2. `maekit data pack` of each folder at 28 px, in a fresh process that records its own peak RSS and its largest
   decoding worker's (ru_maxrss of self and of children): RUN/pack_{train,test}.json.
3. `maekit compare -c configs/seeds/dog_photos_cpu.yaml` on the folders and their packs: MAE pretraining streamed
   from the pack (reconstructions every 2 epochs), then linear probes of the pretrained and of a random encoder and
   the k-NN rows, 600 labels from the train folder, 3 seeds, the test folder as the test split (once per run).
   maekit skips its finished pretraining and cells itself; the step is skipped once results.csv has every row.
4. The doc, every number and sentence computed from those files, its pictures in docs/results/fmnist_folder/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIG = "configs/seeds/dog_photos_cpu.yaml"
SIZE = 28
SMOKE_PER_SPLIT = 300
SMOKE = [
    "budgets=[100]",
    "seeds=[0]",
    "pretrain.train.epochs=1",
    "pretrain.train.batch_size=64",
    "linprobe.train.epochs=5",
]
BLOCK = 1000  # pictures per task of the PNG writers
WRAPPER = (  # `maekit ARGS`, then its own peak RSS and its largest child's (decoding workers) into $RSS_JSON
    "import json, os, resource, sys; from maekit.cli import main; rc = main(sys.argv[1:]); "
    "json.dump({'self_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
    "'children_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, open(os.environ['RSS_JSON'], 'w')); "
    "sys.exit(rc)"
)


def save(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- 1. PNG files


def class_dir(name: str) -> str:
    return name.replace("/", "_")


def _write_pngs(task: tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]) -> int:
    from PIL import Image

    root, names, index, images, labels = task
    total = 0
    for i, x, y in zip(index.tolist(), images, labels.tolist()):
        p = Path(root) / names[y] / f"{i:05d}.png"
        Image.fromarray(x, mode="L").save(p, format="PNG")
        total += p.stat().st_size
    return total


def write_pngs(png: Path, smoke: bool, workers: int) -> None:
    done = png / "written.json"
    if done.exists():
        print(f"1. PNG files: {rel(png)} complete ({rel(done)}), skipped", flush=True)
        return
    from maekit.data import idx

    if png.exists():  # an interrupted write: start again (files may be cut short)
        shutil.rmtree(png)
    where = idx.locate("fashion_mnist", None, download=False)
    arrays = idx.load("fashion_mnist", str(where), download=False)
    names = [class_dir(c) for c in idx.DATASETS["fashion_mnist"]["classes"]]
    record = {"source": str(where), "classes": names, "workers": workers, "splits": {}}
    for split, (x, y) in arrays.items():
        keep = np.arange(len(x))
        if smoke:  # the first SMOKE_PER_SPLIT / 10 pictures of each class
            keep = np.sort(np.concatenate([np.nonzero(y == c)[0][: SMOKE_PER_SPLIT // 10] for c in range(10)]))
        for name in names:
            (png / split / name).mkdir(parents=True, exist_ok=True)
        blocks = [keep[i : i + BLOCK] for i in range(0, len(keep), BLOCK)]
        tasks = [(str(png / split), names, b, x[b], y[b]) for b in blocks]
        print(
            f"1. PNG files: writing {len(keep):,} {split} pictures to {rel(png / split)} ({workers} processes)",
            flush=True,
        )
        t = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            total = sum(pool.map(_write_pngs, tasks))
        s = time.perf_counter() - t
        record["splits"][split] = {
            "images": int(len(keep)),
            "bytes": int(total),
            "seconds": round(s, 2),
            "images_per_s": round(len(keep) / s, 1),
        }
        print(f"   {len(keep):,} files, {total / 2**20:.1f} MiB, {s:.1f} s ({len(keep) / s:,.0f} images/s)", flush=True)
    save(done, record)


# ---------------------------------------------------------------- 2. packs


def pack_path(png: Path, split: str) -> Path:
    return png / f"{split}_{SIZE}.h5"


def pack(run: Path, png: Path, split: str, workers: int) -> None:
    from maekit.data import pack as packing
    from maekit.errors import MaekitError

    out, result, folder = pack_path(png, split), run / f"pack_{split}.json", png / split
    if result.exists() and out.exists():
        try:
            packing.check(out, folder, SIZE, "L", expected="--size")
            print(f"2. pack {split}: {rel(out)} complete ({rel(result)}), skipped", flush=True)
            return
        except MaekitError as e:
            print(f"2. pack {split}: {e}; packing again", flush=True)
    if out.exists():  # made by hand, or stale: measure a fresh pack
        out.unlink()
    args = [
        "data",
        "pack",
        rel(folder),
        "--out",
        rel(out),
        "--size",
        str(SIZE),
        "--workers",
        str(workers),
        "--color",
        "L",
    ]
    print(f"2. pack {split}: maekit {' '.join(args)}", flush=True)
    rss = run / f"pack_{split}.rss.json"
    t = time.perf_counter()
    # stdout echoed and kept (its summary line); stderr, with the progress bar in images/s, goes to the terminal
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RSS_JSON": str(rss)},
    )
    lines = []
    for line in proc.stdout:
        print("   " + line, end="", flush=True)
        lines.append(line)
    if proc.wait() != 0:
        raise SystemExit(f"maekit {' '.join(args)} failed (exit {proc.returncode})")
    wall = time.perf_counter() - t
    m = re.search(r"([\d,]+) decoded in ([\d.]+) s", "".join(lines))
    decoded, seconds = int(m.group(1).replace(",", "")), float(m.group(2))
    meta = packing.read_meta(out, folder)
    peak = json.loads(rss.read_text())
    rss.unlink()
    st = out.stat()
    save(
        result,
        {
            "command": "maekit " + " ".join(args),
            "images": meta["images"],
            "files": meta["files"],
            "bad": len(meta["bad"]),
            "classes": meta["classes"],
            "color": meta["color"],
            "decoded": decoded,
            "decode_s": seconds,
            "images_per_s": round(decoded / seconds, 1),
            "resumed": decoded < meta["files"],
            "wall_s": round(wall, 2),
            "file_mib": round(st.st_size / 2**20, 2),
            "disk_mib": round(st.st_blocks * 512 / 2**20, 2),
            "peak_rss_mib": round(peak["self_kb"] / 1024, 1),
            "peak_rss_worker_mib": round(peak["children_kb"] / 1024, 1),
            "workers": workers,
        },
    )


# ---------------------------------------------------------------- 3. compare


def compare_args(run: Path, png: Path, smoke: bool, threads: int | None) -> list[str]:
    args = [
        f"out={rel(run / 'compare')}",
        f"pretrain.data.path={rel(png / 'train')}",
        f"pretrain.data.pack={rel(pack_path(png, 'train'))}",
        f"pretrain.data.test_path={rel(png / 'test')}",
        f"pretrain.data.test_pack={rel(pack_path(png, 'test'))}",
    ]
    if smoke:
        args += SMOKE
    if threads:
        args += [f"{s}.train.threads={threads}" for s in ("pretrain", "linprobe", "knn")]
    return args


def compare(run: Path, args: list[str]) -> None:
    from maekit.config import CompareConfig, load_config

    cfg = load_config(CompareConfig, ROOT / CONFIG, args)
    want = len(cfg.budgets) * len(cfg.seeds) * len(cfg.methods)
    table = run / "compare" / "results.csv"
    if table.exists() and len(list(csv.DictReader(table.open()))) == want:
        print(f"3. compare: {rel(table)} has all {want} rows, skipped", flush=True)
        return
    cmd = [sys.executable, "-m", "maekit", "compare", "-c", CONFIG, *args]
    print(f"3. compare: maekit {' '.join(cmd[3:])}", flush=True)
    continued = (run / "compare" / "pretrain" / "metrics.jsonl").exists()
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    save(run / "compare_time.json", {"wall_s": round(time.perf_counter() - t, 1), "continued": continued})


# ---------------------------------------------------------------- 4. the doc


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _results(path: Path) -> list[dict]:
    rows = list(csv.DictReader(path.open()))
    for r in rows:
        r["labels"], r["seed"] = int(r["labels"]), int(r["seed"])
        for k in ("test_accuracy", "val_accuracy", "time_s"):
            r[k] = float(r[k])
        r["test_roc_auc"] = float(r["test_roc_auc"]) if r["test_roc_auc"] else float("nan")
    return rows


def _data_lines(written: dict, packs: dict) -> list[str]:
    w = written["splits"]
    lines = [
        "## The folders and their packs",
        "",
        "| split | PNG files | PNG size (MiB) | written (s) | written (images/s) | pack: pictures "
        "| pack: decode and write (s) | pack: images/s | pack file (MiB) | peak RSS of `maekit data pack` (MiB) "
        "| peak RSS of a decoding worker (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in ("train", "test"):
        p = packs[s]
        lines.append(
            f"| {s} | {w[s]['images']:,} | {w[s]['bytes'] / 2**20:,.1f} | {w[s]['seconds']:,.1f} "
            f"| {w[s]['images_per_s']:,.0f} | {p['images']:,} | {p['decode_s']:,.1f} "
            f"| {p['images_per_s']:,.0f} "
            f"| {p['file_mib']:,.1f} | {p['peak_rss_mib']:,.0f} | {p['peak_rss_worker_mib']:,.0f} |"
        )
    png_mib = sum(s["bytes"] for s in w.values()) / 2**20
    raw = sum(p["images"] for p in packs.values()) * SIZE * SIZE / 2**20
    packed = sum(p["file_mib"] for p in packs.values())
    classes = packs["train"]["classes"]
    text = (
        f"{written['workers']} process(es) wrote the PNG files and {packs['train']['workers']} decoding "
        f"worker(s) packed them. The {png_mib:,.1f} MiB of PNG files became {packed:,.1f} MiB of packs "
        f"({raw:,.1f} MiB of uint8 pixels, {packs['train']['color']} at {SIZE}x{SIZE}, then labels and the "
        f"folders' fingerprints). The {len(classes)} class folders, whose sorted names are the classes of the "
        "labels: " + ", ".join(f"`{c}`" for c in classes) + "."
    )
    if any(p["bad"] for p in packs.values()):
        text += " Unreadable files skipped: " + ", ".join(f"{s} {p['bad']}" for s, p in packs.items()) + "."
    if any(p["resumed"] for p in packs.values()):
        text += " A pack resumed after an interruption: its images/s is that of the resumed part."
    return lines + ["", text, ""]


def _pretrain_lines(pre: Path, figs: Path) -> tuple[list[str], float]:
    import yaml

    pcfg = yaml.safe_load((pre / "config.yaml").read_text())
    epochs = [r for r in _rows(pre / "metrics.jsonl") if "val_recon_loss" in r]
    last, best = epochs[-1], min(epochs, key=lambda r: r["val_recon_loss"])
    splits = np.load(pre / "splits.npz")
    n = {k: len(splits[f"{k}_rows"]) for k in ("train", "val", "test")}
    speeds = [r["img_per_s"] for r in epochs]
    train_s = sum(r["epoch_time_s"] for r in epochs)
    m, d, t = pcfg["model"], pcfg["data"], pcfg["train"]
    grids = sorted(pre.glob("recon_epoch*.png"))
    shutil.copy(grids[-1], figs / "reconstructions.png")
    shutil.copy(pre / "loss.png", figs / "pretrain_loss.png")
    return [
        "## Pretraining, streamed from the pack",
        "",
        f"`mae-small` ({m['depth']} x {m['embed_dim']} encoder, {m['decoder_depth']} x {m['decoder_embed_dim']} "
        f"decoder, patch {m['patch_size']}, mask {m['mask_ratio']}, decoder_keep {m['decoder_keep']}, norm_pix_loss "
        f"{str(m['norm_pix_loss']).lower()}), batch {t['batch_size']}, {len(epochs)} epoch(s) of the {n['train']:,} "
        f"training pictures of the train folder (its seeded {d['val_fraction']:.0%} validation split: {n['val']:,}; "
        f"test: the {n['test']:,} pictures of the test folder), read from "
        f"`{Path(str(splits['train_source'])).name}` with data.stream={str(d['stream']).lower()}.",
        "",
        f"- Training speed: {statistics.median(speeds):,.0f} images/s (median over the epochs; {min(speeds):,.0f} to "
        f"{max(speeds):,.0f}); {train_s / 60:.1f} min of training steps in all (the epochs' times, without "
        "evaluations).",
        f"- Reconstruction loss after the last epoch (normalised-pixel MSE on the masked patches, fixed masks, at most "
        f"{t['eval_samples']:,} pictures per split): train {last['train_recon_loss']:.4f}, "
        f"val {last['val_recon_loss']:.4f}, test {last['test_recon_loss']:.4f}. The downstream runs use the best "
        f"checkpoint by validation loss (epoch {best['epoch'] + 1}, test {best['test_recon_loss']:.4f}).",
        "",
        f"![reconstructions of test pictures]({figs.name}/reconstructions.png)",
        "",
        f"Reconstruction grids, every {t['recon_every']} epochs and after the last: "
        + ", ".join(f"`{p.name}`" for p in grids)
        + f" in `{rel(pre)}`; the last is shown. "
        f"Loss curves: [pretrain_loss.png]({figs.name}/pretrain_loss.png).",
        "",
    ], train_s


def _downstream_lines(cmp_dir: Path, figs: Path, classes: int) -> tuple[list[str], list[dict]]:
    import yaml

    from maekit.commands.cells import LABELS, SUMMARY_HEADER, markdown_table, summarize, summary_row

    ccfg = yaml.safe_load((cmp_dir / "config.yaml").read_text())
    results = _results(cmp_dir / "results.csv")
    shutil.copy(cmp_dir / "results.csv", figs / "results.csv")
    summary = summarize(results)
    lines = []
    for b in sorted({r["labels"] for r in results}):
        rows = [r for r in summary if r["labels"] == b]
        acc = {r["method"]: 100 * r["mean"] for r in rows}
        lines += [
            f"## Downstream: {b:,} labelled pictures of the train folder, {len(ccfg['seeds'])} seed(s)",
            "",
            f"A stratified, seeded subset of the train split ({b // classes} per class), drawn again for every seed; "
            "the linear probe's epoch chosen on the validation split; the test folder used once per run. Mean ± std "
            "over seeds:",
            "",
            *markdown_table(SUMMARY_HEADER, [True, False, True, True, True, True], [summary_row(r) for r in rows]),
            "",
        ]
        said = []
        for a, other in (("linprobe", "linprobe_random"), ("knn", "pixel_knn"), ("linprobe", "pixel_knn")):
            if a in acc and other in acc:
                d = acc[a] - acc[other]
                said.append(f"{LABELS[a]} {abs(d):.2f} points {'above' if d >= 0 else 'below'} {LABELS[other]}")
        if said:
            lines += ["Mean test accuracy: " + "; ".join(said) + ".", ""]
    methods = dict.fromkeys(r["method"] for r in results)
    mean_s = {m: statistics.mean(r["time_s"] for r in results if r["method"] == m) for m in methods}
    lines += [
        "Time per run (mean over the runs of each method; features, training and test): "
        + ", ".join(f"{LABELS[m]} {s:.0f} s" for m, s in mean_s.items())
        + ".",
        "",
    ]
    cm = cmp_dir / "cells" / f"linprobe_labels{results[0]['labels']}_seed{ccfg['seeds'][0]}" / "confusion_matrix.png"
    if cm.exists():
        shutil.copy(cm, figs / "linprobe_confusion.png")
        seed = ccfg["seeds"][0]
        lines += [f"![linear probe, confusion matrix of seed {seed}]({figs.name}/linprobe_confusion.png)", ""]
    lines += [
        "The same pictures through the idx reader, with fine-tuning, the ViT from scratch and the small CNN: "
        "[fashion_mnist.md](fashion_mnist.md).",
        "",
    ]
    return lines, results


def write_doc(run: Path, png: Path, doc: Path, smoke: bool, command: str, cargs: list[str]) -> None:
    cmp_dir, pre = run / "compare", run / "compare" / "pretrain"
    written = json.loads((png / "written.json").read_text())
    packs = {s: json.loads((run / f"pack_{s}.json").read_text()) for s in ("train", "test")}
    info = json.loads((pre / "run.json").read_text())
    env = info["env"]
    t_cmp = json.loads((run / "compare_time.json").read_text()) if (run / "compare_time.json").exists() else None
    figs = doc.parent / doc.stem
    figs.mkdir(parents=True, exist_ok=True)
    w = written["splits"]
    lines = [
        f'# The "Dog photos" workflow on real pictures: Fashion-MNIST as '
        f"{sum(s['images'] for s in w.values()):,} PNG files in class folders",
        "",
    ]
    if smoke:
        lines += [
            f"**SMOKE RUN ({' '.join(SMOKE)}, {SMOKE_PER_SPLIT} pictures per split). These numbers only "
            "show that the pipeline works; do not quote them.**",
            "",
        ]
    lines += [
        f"Generated by `{command}` from its result files in `{rel(run)}`. It writes Fashion-MNIST's idx files "
        f"(`{written['source']}`) as PNG files with Pillow, `train/<class>/NNNNN.png` and `test/<class>/NNNNN.png`, "
        f"and runs the seed project's workflow on them with [{CONFIG}](../../{CONFIG}) (what differs from the seed and "
        "why: the comment at its top, and [seeds.md](../seeds.md)):",
        "",
        "```bash",
        *(packs[s]["command"] for s in ("train", "test")),
        f"maekit compare -c {CONFIG} " + " ".join(cargs),
        "```",
        "",
        f"Machine: {env['cpu']}, CPU flags {' '.join(env['cpu_flags']) or 'none of the speed flags'}, "
        f"{env['cpu_count']} cores; torch {env['torch']} with {env['torch_threads']} thread(s); pretraining precision "
        f"{info.get('precision', 'fp32')}.",
        "",
    ]
    lines += _data_lines(written, packs)
    pre_lines, train_s = _pretrain_lines(pre, figs)
    lines += pre_lines
    down_lines, results = _downstream_lines(cmp_dir, figs, len(written["classes"]))
    lines += down_lines
    parts = [
        ("writing the PNG files", sum(s["seconds"] for s in w.values())),
        ("packing: decoding and writing, both folders", sum(p["decode_s"] for p in packs.values())),
        (
            "both `maekit data pack` commands, with interpreter start and folder scan",
            sum(p["wall_s"] for p in packs.values()),
        ),
        ("pretraining steps", train_s),
        ("downstream runs (the sum of their times)", sum(r["time_s"] for r in results)),
    ]
    if t_cmp:
        parts.append(
            (
                "`maekit compare`: pretraining with its evaluations and pictures, then every downstream run"
                + (" (its last invocation only: it continued an interrupted one)" if t_cmp["continued"] else ""),
                t_cmp["wall_s"],
            )
        )
    lines += ["## Time", "", "| part | minutes |", "|---|---:|", *(f"| {name} | {s / 60:.1f} |" for name, s in parts)]
    if t_cmp and not t_cmp["continued"]:
        total = sum(s["seconds"] for s in w.values()) + sum(p["wall_s"] for p in packs.values()) + t_cmp["wall_s"]
        lines += [
            "",
            f"The study took {total / 60:.1f} min: writing the files, both `maekit data pack` commands and "
            "`maekit compare`.",
        ]
    lines.append("")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
    print(f"4. wrote {doc} (pictures in {figs})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE_PER_SPLIT} pictures per split, 1 epoch, 1 seed, "
        "in its own run directory, the doc in the temporary folder",
    )
    ap.add_argument("--doc-only", action="store_true", help="only write the doc from the result files")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing and decoding PNG files")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the maekit runs (default: all cores)")
    ap.add_argument("--out", default=None, help="run directory (default benchmarks/runs/fmnist_folder[_smoke])")
    ap.add_argument("--doc", default=None, help="default docs/results/fmnist_folder.md (--smoke: in the temp folder)")
    args = ap.parse_args()
    run = ROOT / (args.out or ("benchmarks/runs/fmnist_folder" + ("_smoke" if args.smoke else "")))
    doc = (
        Path(args.doc)
        if args.doc
        else (
            Path(tempfile.gettempdir()) / "fmnist_folder_smoke.md"
            if args.smoke
            else ROOT / "docs/results/fmnist_folder.md"
        )
    )
    png = run / "png"
    run.mkdir(parents=True, exist_ok=True)
    cargs = compare_args(run, png, args.smoke, args.threads)
    if not args.doc_only:
        write_pngs(png, args.smoke, args.workers)
        for split in ("train", "test"):
            pack(run, png, split, args.workers)
        compare(run, cargs)
    flags = [a for a in sys.argv[1:] if a != "--doc-only"]
    write_doc(run, png, doc, args.smoke, " ".join([".venv/bin/python benchmarks/fmnist_folder.py", *flags]), cargs)


if __name__ == "__main__":
    main()
