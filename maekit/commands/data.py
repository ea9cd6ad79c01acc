"""maekit data inspect PATH / maekit data preview PATH --out FILE.png: look at a data source before training on it;
maekit data pack FOLDER --out FILE.h5 --size N: decode an image folder once into a file that streams."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig, apply_overrides, from_dict
from ..data import pack
from ..data.loader import preparer, read_in_memory
from ..data.readers import guess_source, open_readers
from ..errors import MaekitError


def data_config(path: str, overrides: list[str]) -> DataConfig:
    """DataConfig for PATH with the source guessed from it, plus key=value (or data.key=value) overrides."""
    p = Path(path)
    if not p.exists():
        raise MaekitError(f"data path {p} does not exist")
    raw = apply_overrides({}, [o if o.startswith("data.") else "data." + o for o in overrides]).get("data", {})
    raw.setdefault("source", guess_source(p))
    raw.setdefault("path", str(p))
    cfg = from_dict(DataConfig, raw, prefix="data.")
    cfg.validate()
    return cfg


def sample(cfg: DataConfig, limit: int) -> dict:
    """Up to `limit` images of the source's training data (evenly spread read units for big files) with facts."""
    info: dict = {"path": cfg.path, "source": cfg.source}
    if cfg.source == "folder" and cfg.pack:
        cfg = pack.packed_config(cfg)
        info.update(pack=cfg.path)
    if cfg.source in ("idx", "cifar", "folder"):
        parts, names, _ = read_in_memory(cfg, download=False)
        x, y = parts["train"]
        info.update(
            images=len(x),
            splits={k: len(v[0]) for k, v in parts.items()},
            layout="nchw (in memory)",
            dtype=str(x.dtype).replace("torch.", ""),
            class_names=names,
        )
        idx = (
            torch.linspace(0, len(x) - 1, min(limit, len(x))).long().unique()
            if len(x)
            else torch.zeros(0, dtype=torch.long)
        )
        images, labels = x[idx], None if y is None else np.asarray(y)
        info["shape"] = list(x.shape[1:])
    else:
        readers = open_readers(Path(cfg.path), cfg)
        r = readers["train"]
        info.update(
            images=r.n,
            splits={k: v.n for k, v in readers.items()},
            key=r.key,
            labels_key=r.label_key,
            layout=getattr(r, "layout", "nchw"),
            dtype=str(r.dtype),
            shape=list(r.shape),
            file_channels=r.file_channels,
            read_units=len(r.chunk_starts) - 1,
            size_mb=round(Path(cfg.path).stat().st_size / 2**20, 1),
        )
        starts = r.chunk_starts
        per_unit = int(np.diff(starts).max()) if len(starts) > 1 else 0
        k = max(1, min(len(starts) - 1, -(-limit // max(1, per_unit))))
        units = np.unique(np.linspace(0, len(starts) - 2, k).round().astype(int)) if r.n else []
        prepare = preparer(cfg.preprocess, r.where, r.shape[0])
        blocks = [
            prepare(r.read(int(starts[u]), int(starts[u + 1])), int(starts[u]), int(starts[u + 1])) for u in units
        ]
        images = torch.from_numpy(np.concatenate(blocks)[:limit]) if blocks else torch.zeros(0, *r.shape)
        labels = r.labels
        info["class_names"] = cfg.class_names or r.class_names
        info["channel_names"] = r.channel_names
    if len(images) == 0:
        raise MaekitError(f"{cfg.path}: no images to inspect")
    names = info.get("channel_names") or cfg.channel_names
    if names is not None and cfg.channels is not None and len(names) != len(cfg.channels):
        names = [names[i] for i in cfg.channels]
    info["channel_names"] = names
    if labels is not None:
        values, counts = np.unique(labels, return_counts=True)
        info["labels"] = {int(v): int(c) for v, c in zip(values, counts)}
    x = images.double() / (255.0 if images.dtype == torch.uint8 else 1.0)
    info["stats_images"] = len(images)
    info["channels"] = [
        {
            "channel": c if names is None else f"{c} ({names[c]})",
            "mean": float(x[:, c].mean()),
            "std": float(x[:, c].std()),
            "min": float(x[:, c].min()),
            "max": float(x[:, c].max()),
            "nonzero": float((x[:, c] != 0).double().mean()),
        }
        for c in range(x.shape[1])
    ]
    info["sample"] = images
    return info


def inspect(path: str, overrides: list[str], limit: int, as_json: bool) -> dict:
    cfg = data_config(path, overrides)
    info = sample(cfg, limit)
    info.pop("sample")
    if as_json:
        print(json.dumps(info, indent=1))
        return info
    print(f"{info['path']}: {info['source']}")
    for k in (
        "pack",
        "key",
        "labels_key",
        "images",
        "splits",
        "shape",
        "dtype",
        "layout",
        "file_channels",
        "read_units",
        "size_mb",
        "class_names",
    ):
        if info.get(k) is not None:
            print(f"  {k:<13} {info[k]}")
    if "labels" in info:
        total = sum(info["labels"].values())
        print("  labels       " + ", ".join(f"{k}: {v} ({100 * v / total:.1f}%)" for k, v in info["labels"].items()))
    else:
        print("  labels        none")
    scale = " (0-1 scale)" if info["dtype"] == "uint8" else ""
    print(f"  per-channel statistics over {info['stats_images']} images{scale}:")
    print(f"    {'channel':<16}{'mean':>11}{'std':>11}{'min':>11}{'max':>11}{'nonzero':>9}")
    for c in info["channels"]:
        print(
            f"    {str(c['channel']):<16}{c['mean']:>11.4g}{c['std']:>11.4g}{c['min']:>11.4g}{c['max']:>11.4g}"
            f"{100 * c['nonzero']:>8.1f}%"
        )
    return info


def preview(path: str, overrides: list[str], out: str, n: int, log: bool) -> Path:
    from .. import plots

    cfg = data_config(path, overrides)
    info = sample(cfg, n)
    dst = Path(out)
    if dst.suffix.lower() != ".png":
        raise MaekitError(f"--out {dst} must be a .png file")
    plots.sample_grid(
        info["sample"][:n],
        dst,
        f"{Path(cfg.path).name}: {info['images']} images {info['shape']}",
        channel_names=info["channel_names"],
        log=log,
    )
    print(f"preview: {dst}")
    return dst


def pack_folder(
    folder: str, out: str, size: int, workers: int | None, color: str, force: bool, progress: bool = True
) -> dict:
    """Pack an image folder for data.pack (see maekit/data/pack.py)."""
    dst = Path(out)
    if dst.suffix.lower() not in (".h5", ".hdf5"):
        raise MaekitError(f"--out {dst} must be an .h5 or .hdf5 file")
    if workers is not None and workers < 1:
        raise MaekitError(f"--workers must be >= 1, got {workers}")
    meta = pack.pack_folder(Path(folder), dst, size, workers, color, force, progress)
    print(
        f"pack: use it with data.source=folder data.path={folder} data.pack={dst} data.image_size={meta['image_size']}"
    )
    return meta
