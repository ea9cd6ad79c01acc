"""Writers of small files in the public formats maekit reads (written the way the original producers write them,
not through maekit): ML4SCI HDF5 and Parquet jet files, CIFAR python batches, image folders, NumPy arrays."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def jets(n: int, size: int = 125, channels: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sparse float32 detector-like images [n, size, size, channels] (channels-last, as in the ML4SCI files):
    a few hundred deposits around the centre, wider for label 1; plus 0/1 labels."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size, channels), dtype=np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    for i in range(n):
        k = rng.integers(20, 60)
        spread = size / (10 if y[i] == 0 else 6)
        r = np.clip(rng.normal(size / 2, spread, (k, 2)).astype(int), 0, size - 1)
        for c in range(channels):
            x[i, r[:, 0], r[:, 1], c] = rng.exponential(5.0, k).astype(np.float32) * (c + 1)
    return x, y


def write_qg_hdf5(
    path: Path, n: int = 24, size: int = 125, channels: int = 3, seed: int = 0, chunks: bool = True
) -> np.ndarray:
    """ML4SCI quark/gluon HDF5: X_jets (N,H,W,C) float32, y, pt, m0."""
    import h5py

    x, y = jets(n, size, channels, seed)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "X_jets",
            data=x,
            chunks=(4, size, size, channels) if chunks else None,
            compression="gzip" if chunks else None,
        )
        f.create_dataset("y", data=y)
        f.create_dataset("pt", data=np.linspace(500, 550, n).astype(np.float32))
        f.create_dataset("m0", data=np.linspace(10, 90, n).astype(np.float32))
    return x


def write_task3d_hdf5(path: Path, n: int = 8, size: int = 125, labelled: bool = True, seed: int = 1) -> np.ndarray:
    """Task 3d: jet (N,125,125,8); labelled files also Y (N,1) float32."""
    import h5py

    x, y = jets(n, size, 8, seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("jet", data=x)
        if labelled:
            f.create_dataset("Y", data=y.reshape(-1, 1))
    return x


def write_boosted_top_hdf5(path: Path, sizes=(12, 4, 6), size: int = 32) -> dict[str, np.ndarray]:
    """{train,validation,test}_jet with {split}_meta, the label in the last column of meta."""
    import h5py

    out = {}
    with h5py.File(path, "w") as f:
        for (split, n), seed in zip(zip(("train", "validation", "test"), sizes), range(3)):
            x, y = jets(n, size, 3, seed)
            f.create_dataset(f"{split}_jet", data=x)
            f.create_dataset(
                f"{split}_meta", data=np.stack([np.full(n, 500.0), np.full(n, 40.0), y], axis=1).astype(np.float32)
            )
            out[split] = x
    return out


def write_qg_parquet(
    path: Path, n: int = 20, size: int = 125, channels: int = 3, row_group: int = 6, key: str = "X_jets", seed: int = 0
) -> np.ndarray:
    """ML4SCI Parquet: one row per jet, `key` nested lists [C][H][W] (float64, as pandas writes them), pt, m0, y."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = jets(n, size, channels, seed)
    chw = x.transpose(0, 3, 1, 2).astype(np.float64)
    col = pa.array(
        [[[list(row) for row in ch] for ch in img] for img in chw], type=pa.list_(pa.list_(pa.list_(pa.float64())))
    )
    table = pa.table(
        {
            key: col,
            "pt": pa.array(np.linspace(500, 550, n)),
            "m0": pa.array(np.linspace(10, 90, n)),
            "y": pa.array(y.astype(np.float64)),
        }
    )
    pq.write_table(table, path, row_group_size=row_group)
    return chw.astype(np.float32)


def write_cifar(
    folder: Path, images: np.ndarray, labels: np.ndarray, per_batch: int, test: int, hundred: bool = False
) -> None:
    """CIFAR 'python version' layout: pickled dicts with bytes keys (protocol 2, as cPickle wrote them)."""
    folder.mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), -1).astype(np.uint8)
    if hundred:
        for name, sl in (("train", slice(0, len(images) - test)), ("test", slice(len(images) - test, None))):
            d = {
                b"data": flat[sl],
                b"fine_labels": labels[sl].tolist(),
                b"coarse_labels": (labels[sl] // 5).tolist(),
                b"filenames": [b"x.png"] * len(flat[sl]),
            }
            (folder / name).write_bytes(pickle.dumps(d, protocol=2))
        (folder / "meta").write_bytes(
            pickle.dumps({b"fine_label_names": [f"class{i}".encode() for i in range(100)]}, protocol=2)
        )
        return
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        d = {
            b"batch_label": f"training batch {b + 1} of 5".encode(),
            b"labels": labels[sl].tolist(),
            b"data": flat[sl],
            b"filenames": [b"x.png"] * per_batch,
        }
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(d, protocol=2))
    sl = slice(5 * per_batch, 5 * per_batch + test)
    (folder / "test_batch").write_bytes(
        pickle.dumps(
            {b"batch_label": b"testing batch 1 of 1", b"labels": labels[sl].tolist(), b"data": flat[sl]}, protocol=2
        )
    )
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, protocol=2)
    )


def write_image_folder(
    root: Path, images: np.ndarray, labels: np.ndarray | None, names: list[str] | None = None
) -> list[Path]:
    """PNG/JPEG files: root/<class>/<i>.png when labelled, else a nested tree of files."""
    from PIL import Image

    paths = []
    for i, img in enumerate(images):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        if labels is not None:
            d = root / (names[labels[i]] if names else f"class{labels[i]}")
        else:
            d = root / f"part{i % 3}" / ("deeper" if i % 2 else "")
        d.mkdir(parents=True, exist_ok=True)
        p = d / (f"{i:04d}.png" if i % 4 else f"{i:04d}.jpg")
        Image.fromarray(arr).save(p, quality=95) if p.suffix == ".jpg" else Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def write_png_header(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR declaring width x height grey pixels, with a tiny (short) image stream:
    what a decompression bomb looks like to a reader that trusts the header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    )
