"""Pretrain from an HDF5 file larger than the memory budget: peak RSS streamed vs loaded, and reader speed.

    .venv/bin/python benchmarks/streaming.py [--images 3200] [--memory-mb 256] [--out benchmarks/runs/streaming]

Writes an ML4SCI-layout HDF5 file (X_jets [N,125,125,3] float32 channels-last, chunked, uncompressed; sparse
detector-like images) of about 2x the budget, then runs `maekit pretrain` on it in a fresh process three ways:
streamed with data.memory_mb=BUDGET, loaded into memory (data.stream=false), and a baseline with a tiny file
(the interpreter, torch and the model alone). Peak RSS is the child's ru_maxrss. Results -> docs/streaming.md.
The file is reused if it exists.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = [
    "model.patch_size=25",
    "model.embed_dim=64",
    "model.depth=2",
    "model.num_heads=2",
    "model.decoder_embed_dim=64",
    "model.decoder_depth=1",
    "model.decoder_num_heads=2",
]


def write_file(path: Path, n: int, seed: int = 0, block: int = 200) -> None:
    """Sparse jet-like images in blocks (never the whole array in memory)."""
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        ds = f.create_dataset("X_jets", shape=(n, 125, 125, 3), dtype=np.float32, chunks=(32, 125, 125, 3))
        f["y"] = (np.arange(n) % 2).astype(np.float32)
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            x = np.zeros((hi - lo, 125, 125, 3), dtype=np.float32)
            for i in range(hi - lo):
                k = rng.integers(50, 200)
                r = np.clip(rng.normal(62, 6 + 6 * ((lo + i) % 2), (k, 2)).astype(int), 0, 124)
                x[i, r[:, 0], r[:, 1], rng.integers(0, 3, k)] = rng.exponential(5.0, k)
            ds[lo:hi] = x
    tmp.rename(path)


WRAPPER = (
    "import json, resource, sys; from maekit.cli import main; rc = main(sys.argv[1:]); "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def run_pretrain(out: Path, data: Path, extra: list[str], threads: int) -> dict:
    """`maekit pretrain` in a fresh process; its own peak RSS (ru_maxrss) and wall time."""
    if out.exists():
        shutil.rmtree(out)
    args = [
        "pretrain",
        f"out={out}",
        "data.source=hdf5",
        f"data.path={data}",
        *MODEL,
        "train.epochs=1",
        "train.batch_size=64",
        "train.eval_samples=256",
        "train.progress=false",
        f"train.threads={threads}",
        "data.preprocess.log1p=true",
        *extra,
    ]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"maekit {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    return {
        "peak_rss_mb": round(peak / 1024, 1),
        "wall_s": round(wall, 1),
        "summary": proc.stdout.strip().splitlines()[0],
    }


def reader_speed(data: Path, memory_mb: float) -> float:
    """Images/s of one streamed pass over the training split in the epoch's shuffled order (no training)."""
    from maekit.config import DataConfig, from_dict
    from maekit.data.loader import load_splits, step_batches

    cfg = from_dict(
        DataConfig,
        {"source": "hdf5", "path": str(data), "stream": True, "memory_mb": memory_mb, "preprocess": {"log1p": True}},
        "data.",
    )
    s = load_splits(cfg)
    imgs = s.train.images
    t = time.perf_counter()
    n = 0
    for b in step_batches(len(imgs), 64, 0, 0, units=(imgs.chunk_of, imgs.buffer_units)):
        n += len(imgs[b])
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3200)
    ap.add_argument("--memory-mb", type=float, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/runs/streaming")
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    data, tiny = out / f"jets_{args.images}.h5", out / "jets_tiny.h5"
    if not data.exists():
        print(f"writing {data} ...", flush=True)
        write_file(data, args.images)
    if not tiny.exists():
        write_file(tiny, 200, seed=1)
    size_mb = args.images * 125 * 125 * 3 * 4 / 2**20
    res = {
        "images": args.images,
        "data_mb": round(size_mb, 1),
        "memory_mb": args.memory_mb,
        "machine": platform.processor() or platform.machine(),
    }
    res["baseline_tiny_file"] = run_pretrain(out / "run_baseline", tiny, ["data.stream=false"], args.threads)
    print("baseline_tiny_file", json.dumps(res["baseline_tiny_file"]), flush=True)
    for name, extra in (
        ("streamed", ["data.stream=true", f"data.memory_mb={args.memory_mb}"]),
        ("in_memory", ["data.stream=false"]),
    ):
        res[name] = run_pretrain(out / f"run_{name}", data, extra, args.threads)
        print(name, json.dumps(res[name]), flush=True)
    res["reader_img_s"] = round(reader_speed(data, args.memory_mb), 1)
    (out / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
