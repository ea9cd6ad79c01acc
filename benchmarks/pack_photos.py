"""Pack a folder of photos once, then stream it: pack speed, peak memory, disk used, and pretraining streamed vs in
memory.

    .venv/bin/python benchmarks/pack_photos.py [--n 300000] [--sizes 224,64] [--workers W] [--pretrain-images 3000]
                                               [--out benchmarks/runs/pack_photos]

1. Writes N synthetic JPEG photos (500x375 landscape and 375x500 portrait, quality 90: smooth shapes and noise,
   tens of KB each) into 10 class folders, in parallel; reused when they are there.
2. For each size: `maekit data pack` in a fresh process: images/s, peak RSS of the main process and of the largest
   decoding worker (ru_maxrss of self and children), the pack's size on disk, and the time a run takes to check the
   pack against the folder (one stat per file).
3. For each size, on the first M photos (a folder of symlinks to them, packed too): `maekit pretrain`, 1 epoch of a
   tiny ViT (2 x 64, patch size/8: 64 tokens), in fresh processes: streamed from the pack (data.memory_mb=64),
   loaded from the pack (data.stream=false), and from the folder itself (decoded into memory, as without a pack).
   Epoch images/s from metrics.jsonl, peak RSS and wall time.
4. Whether the folder reader could hold all N photos in memory here (what its memory check says).

Writes OUT/result.json and docs/results/pack_photos.md from it (headed SMOKE RUN when N < 300,000). Resumable:
each finished stage is saved in OUT/partial.json and skipped when the command is run again with the same N.
The 1-minute load average before and after each stage is recorded: other work on the cores slows every figure.
At the default N that is 600,000 decodes plus writing the photos: hours of CPU on a few cores. `--n 2000
--pretrain-images 500` checks that it works in about 15 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FULL_N = 300_000
CLASSES = [f"class{i}" for i in range(10)]
WRAPPER = (
    "import resource, sys; from maekit.cli import main; rc = main(sys.argv[1:]); "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def photo_path(root: Path, i: int) -> Path:
    return root / CLASSES[i % len(CLASSES)] / f"{i:07d}.jpg"


def write_photo(args: tuple[str, int]) -> int:
    """A 500x375 (or 375x500) RGB picture: a colour gradient, a few filled ellipses and boxes, sensor-like noise."""
    from PIL import Image, ImageDraw

    root, i = Path(args[0]), args[1]
    rng = np.random.default_rng(i)
    w, h = (500, 375) if i % 3 else (375, 500)
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    base = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).astype(np.uint8)
    im = Image.fromarray(base)
    d = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 9)):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        box = [x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
    x = np.asarray(im, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    p = photo_path(root, i)
    Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(p, quality=90)
    return p.stat().st_size


def write_photos(root: Path, n: int, workers: int) -> int:
    """N photos under root (those already there are kept); their total size in bytes."""
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
    todo = [(str(root), i) for i in range(n) if not photo_path(root, i).exists()]
    if todo:
        print(f"writing {len(todo):,} photos to {root} ...", flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(write_photo, todo, chunksize=64))
    return sum(photo_path(root, i).stat().st_size for i in range(n))


def subset(root: Path, dst: Path, m: int) -> Path:
    """A folder of symlinks to the first m photos (the folder reader and the pack follow them)."""
    if dst.exists():
        shutil.rmtree(dst)
    for i in range(m):
        p = photo_path(dst, i)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(photo_path(root, i))
    return dst


def maekit(args: list[str]) -> dict:
    """`maekit ARGS` in a fresh process: wall time, peak RSS of itself and of its largest child process."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"maekit {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")).split()
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(int(line[1]) / 1024, 1),
        "peak_rss_children_mb": round(int(line[2]) / 1024, 1),
        "stdout": proc.stdout,
    }


def disk_mb(path: Path) -> float:
    return round(path.stat().st_blocks * 512 / 2**20, 1)


def pack(folder: Path, out: Path, size: int, workers: int) -> dict:
    from maekit.data import pack as packing

    if out.exists():
        out.unlink()
    r = maekit(["data", "pack", str(folder), "--out", str(out), "--size", str(size), "--workers", str(workers)])
    meta = packing.read_meta(out, folder)
    t = time.perf_counter()
    packing.check(out, folder, size, "auto")
    check_s = time.perf_counter() - t
    # the pack itself, without starting python
    decode_s = float(re.search(r"decoded in ([\d.]+) s", r["stdout"]).group(1))
    return {
        "images": meta["images"],
        "bad": len(meta["bad"]),
        "seconds": r["wall_s"],
        "decode_s": decode_s,
        "images_per_s": round(meta["files"] / decode_s, 1),
        "peak_rss_mb": r["peak_rss_mb"],
        "peak_rss_worker_mb": r["peak_rss_children_mb"],
        "disk_mb": disk_mb(out),
        "check_s": round(check_s, 2),
        "summary": [ln for ln in r["stdout"].splitlines() if ln.startswith("pack: ")],
    }


def pretrain(out: Path, data: list[str], size: int, threads: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    model = [
        f"model.patch_size={size // 8}",
        "model.embed_dim=64",
        "model.depth=2",
        "model.num_heads=2",
        "model.decoder_embed_dim=64",
        "model.decoder_depth=1",
        "model.decoder_num_heads=2",
    ]
    r = maekit(
        [
            "pretrain",
            f"out={out}",
            *data,
            f"data.image_size={size}",
            *model,
            "train.epochs=1",
            "train.batch_size=64",
            "train.eval_samples=256",
            "train.progress=false",
            f"train.threads={threads}",
        ]
    )
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    epoch = next(x for x in rows if "img_per_s" in x)
    return {
        "epoch_images_per_s": round(epoch["img_per_s"], 1),
        "epoch_s": round(epoch["epoch_time_s"], 1),
        "wall_s": r["wall_s"],
        "peak_rss_mb": r["peak_rss_mb"],
    }


def write_doc(res: dict, path: Path) -> None:
    n = res["n"]
    smoke = n < FULL_N
    lines = ["# Packing a folder of photos", ""]
    if smoke:
        lines += [
            f"**SMOKE RUN: {n:,} photos, not the {FULL_N:,} of the issue. These "
            "numbers only show that the benchmark works; do not quote them.**",
            "",
        ]
    lines += [
        "`benchmarks/pack_photos.py` writes synthetic JPEG photos (500x375 and 375x500, quality 90), packs them with "
        "`maekit data pack` and pretrains from the packs; every number below is from its result JSON "
        f"(`{res['command'].strip()}`; this page is rewritten from the JSON kept next to it with "
        "`--from-json docs/results/pack_photos/result.json`).",
        "",
        f"Machine: {res['machine']}, {res['cores']} cores "
        f"(CPU flags {res.get('cpu_flags') or 'none of the speed flags'}), "
        f"{res['memory_gb']} GB of memory available at the start; "
        f"{res['workers']} decoding worker(s). Photos: {n:,} files, {res['photos_mb']:,.0f} MB of JPEG.",
        "",
        "Load on the cores (1-minute load average before / after each stage; about "
        f"{res['cores']} means the stage had the cores to itself, more means it shared them): "
        + "; ".join(f"{k} {v[0]:.1f} / {v[1]:.1f}" for k, v in res.get("load", {}).items())
        + ".",
        "",
        "| size | images | bad | command wall (s) | decode and write (s) | images/s | peak RSS "
        "main (MB) | peak RSS worker (MB) | pack on disk (MB) | folder check per run (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, p in res["pack"].items():
        lines.append(
            f"| {s} | {p['images']:,} | {p['bad']} | {p['seconds']:,.1f} | "
            f"{p['decode_s']:,.1f} | {p['images_per_s']:,.1f} | {p['peak_rss_mb']:,.0f} | "
            f"{p['peak_rss_worker_mb']:,.0f} | {p['disk_mb']:,.1f} | {p['check_s']:.2f} |"
        )
    lines += ["", "In memory without a pack, the folder reader would need (its own check, uint8 N x C x S x S):", ""]
    for s, m in res["in_memory_all"].items():
        lines.append(
            f"- {s} px: {m['need_gb']:,.1f} GB for all {n:,} photos, {m['available_gb']:,.1f} GB available: "
            f"{'accepted' if m['fits'] else 'refused'}"
        )
    lines += [
        "",
        f"Pretraining, 1 epoch over the first {res['pretrain_images']:,} photos (a "
        "folder of symlinks, packed too), tiny ViT (2 x 64, patch size/8 = 64 "
        f"tokens, batch 64, {res['threads']} threads), each run in a fresh process:",
        "",
        "| size | data | epoch images/s | epoch (s) | wall incl. start and reading (s) | peak RSS (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for s, runs in res["pretrain"].items():
        for name, r in runs.items():
            lines.append(
                f"| {s} | {name} | {r['epoch_images_per_s']:,.1f} | "
                f"{r['epoch_s']:,.1f} | {r['wall_s']:,.1f} | {r['peak_rss_mb']:,.0f} |"
            )
    lines += ["", "What the tables show (computed from them):", ""]
    for s, p in res["pack"].items():
        m = res["in_memory_all"][s]
        lines.append(
            f"- {s} px: the pack of {p['images']:,} photos took {p['seconds'] / 60:.1f} min with a peak RSS of "
            f"{max(p['peak_rss_mb'], p['peak_rss_worker_mb']):,.0f} MB per process, "
            f"{p['disk_mb'] / 1024:,.1f} GB on disk; decoded into memory the folder would need {m['need_gb']:,.1f} GB "
            f"({'more than' if not m['fits'] else 'within'} the {m['available_gb']:,.1f} GB available)."
        )
    for s, runs in res["pretrain"].items():
        st, mem = runs["streamed from the pack"], runs["pack loaded into memory"]
        lines.append(
            f"- {s} px pretraining: streamed at {st['epoch_images_per_s'] / mem['epoch_images_per_s']:.2f}x the "
            f"images/s of the same pack held in memory, peak RSS {st['peak_rss_mb']:,.0f} against "
            f"{mem['peak_rss_mb']:,.0f} MB."
        )
    lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=FULL_N, help="photos to write and pack")
    ap.add_argument("--sizes", default="224,64", help="pack sizes, comma-separated")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the pretraining runs")
    ap.add_argument("--pretrain-images", type=int, default=3000, help="photos of the pretraining comparison")
    ap.add_argument("--out", default="benchmarks/runs/pack_photos")
    ap.add_argument("--doc", default="docs/results/pack_photos.md")
    ap.add_argument(
        "--from-json", default=None, metavar="RESULT_JSON", help="only write the doc from an earlier result"
    )
    args = ap.parse_args()
    if args.from_json:
        write_doc(json.loads(Path(args.from_json).read_text()), ROOT / args.doc)
        return
    from maekit.environment import SPEED_FLAGS, available_memory, cpu_flags, cpu_name

    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    photos = out / f"photos_{args.n}"
    sizes = [int(s) for s in args.sizes.split(",")]
    avail = available_memory() or 0
    res = {
        "n": args.n,
        "command": "python benchmarks/pack_photos.py " + " ".join(sys.argv[1:]),
        "workers": args.workers,
        "threads": args.threads,
        "machine": cpu_name() or f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_flags": " ".join(f for f in SPEED_FLAGS if f in cpu_flags()),
        "cores": os.cpu_count(),
        "memory_gb": round(avail / 1e9, 1),
        "pretrain_images": min(args.pretrain_images, args.n),
    }
    partial = out / "partial.json"
    done = json.loads(partial.read_text()) if partial.exists() else {}
    if done.get("n") != args.n:
        done = {"n": args.n}
    res["load"] = done.setdefault("load", {})

    def stage(name: str, fn):
        """fn() once; its result kept in partial.json, so a rerun skips it (with the load it ran under)."""
        if name not in done:
            before = os.getloadavg()[0]
            done[name] = fn()
            done["load"][name] = [round(before, 2), round(os.getloadavg()[0], 2)]
            partial.write_text(json.dumps(done, indent=1))
        return done[name]

    res["photos_mb"] = stage("photos", lambda: round(write_photos(photos, args.n, args.workers) / 2**20, 1))
    res["pack"], res["in_memory_all"], res["pretrain"] = {}, {}, {}
    small = subset(photos, out / "photos_subset", res["pretrain_images"])
    for s in sizes:
        res["pack"][s] = stage(f"pack {s}", lambda s=s: pack(photos, out / f"photos_{args.n}_{s}.h5", s, args.workers))
        print(f"pack {s}", json.dumps(res["pack"][s]), flush=True)
        need = args.n * 3 * s * s
        res["in_memory_all"][s] = {
            "need_gb": round(need / 1e9, 1),
            "available_gb": round(avail / 1e9, 1),
            "fits": bool(avail and need <= avail),
        }
        sub = out / f"subset_{s}.h5"
        folder = ["data.source=folder", f"data.path={small}"]

        def compare_reading(s=s, sub=sub, folder=folder) -> dict:
            pack(small, sub, s, args.workers)
            return {
                "streamed from the pack": pretrain(
                    out / f"run_{s}_streamed",
                    [*folder, f"data.pack={sub}", "data.stream=true", "data.memory_mb=64"],
                    s,
                    args.threads,
                ),
                "pack loaded into memory": pretrain(
                    out / f"run_{s}_pack_memory", [*folder, f"data.pack={sub}", "data.stream=false"], s, args.threads
                ),
                "folder decoded into memory": pretrain(out / f"run_{s}_folder", folder, s, args.threads),
            }

        res["pretrain"][s] = stage(f"pretrain {s}", compare_reading)
        print(f"pretrain {s}", json.dumps(res["pretrain"][s]), flush=True)
    (out / "result.json").write_text(json.dumps(res, indent=1))
    kept = (ROOT / args.doc).with_suffix("") / "result.json"  # next to the doc, committed with it
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(res, indent=1))
    write_doc(res, ROOT / args.doc)
    print(f"{out / 'result.json'}, {ROOT / args.doc}")


if __name__ == "__main__":
    main()
