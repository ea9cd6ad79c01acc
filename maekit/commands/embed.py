"""maekit embed RUN_DIR: encoder features [N, D] (float32 .npy) of a data split, every patch visible, pooled
(mean of the patch tokens, or the cls token), plus the labels next to them. RUN_DIR may be a maekit run or a
Hugging Face ViTMAE directory; the data come from the run's saved data config with `data.*` overrides on top."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..config import DataConfig, apply_overrides, from_dict
from ..data.loader import load_splits
from ..engine.dist import cleanup, init_process
from ..errors import MaekitError
from ..files import atomic_write_bytes
from ..runs import extract_features, load_run
from .common import split_by_name
from .downstream import Setup, build_encoder


def _npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def run(
    run_dir: str,
    split: str = "test",
    pool: str = "mean",
    out: str | None = None,
    overrides: list[str] = (),
    batch_size: int = 256,
    device: str = "auto",
    threads: int | None = None,
) -> dict:
    if pool not in ("cls", "mean"):
        raise MaekitError(f"--pool must be cls or mean, got {pool!r}")
    if batch_size < 1:
        raise MaekitError(f"--batch-size must be >= 1, got {batch_size}")
    bad = [o for o in overrides if not o.split("=", 1)[0].startswith("data.")]
    if bad:
        raise MaekitError(f"embed takes only data.* overrides (e.g. data.path=FOLDER), got {bad[0]!r}")
    loaded = load_run(run_dir, "best")
    saved = loaded.meta["data"].get("config")
    if saved is None and not overrides:
        raise MaekitError(
            f"{loaded.path} records no data config (a Hugging Face directory): pass data.* overrides, "
            f"e.g. data.name=fashion_mnist data.path=FOLDER"
        )
    data_cfg = from_dict(DataConfig, apply_overrides({"data": saved or {}}, list(overrides))["data"], "data.")
    data_cfg.validate()
    dist = init_process(device, threads)
    try:
        splits = load_splits(data_cfg)
        images = split_by_name(splits, split)
        c = loaded.model_cfg
        if splits.channels != c.in_chans or tuple(splits.image_size) != tuple(c.img_size):
            raise MaekitError(
                f"encoder {run_dir} expects {c.in_chans} channels of {c.img_size[0]}x{c.img_size[1]}, "
                f"but data {splits.sources.get('train', data_cfg.path)} have {splits.channels} of "
                f"{splits.image_size[0]}x{splits.image_size[1]}"
            )
        state = {k[len("encoder.") :]: v for k, v in loaded.state.items() if k.startswith("encoder.")}
        setup = Setup(splits, images, splits.val, c, state, loaded.mean, loaded.std, splits.num_classes)
        encoder = build_encoder(setup, 0, pool).to(dist.device)
        feats = (
            extract_features(encoder, images.images, loaded.mean, loaded.std, pool, batch_size)
            .numpy()
            .astype(np.float32)
        )
    finally:
        cleanup()
    if out is None:
        # inside a maekit run directory; never inside a Hugging Face directory (that stays a clean export)
        base = loaded.path if loaded.meta.get("kind") != "hf_vitmae" else Path(".")
        out_path = base / f"features_{split}_{pool}.npy"
    else:
        out_path = Path(out)
        if out_path.suffix != ".npy":
            out_path = out_path.with_name(out_path.name + ".npy")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _npy(out_path, feats)
    result = {"features": str(out_path), "shape": list(feats.shape), "split": split, "pool": pool}
    if images.labels is not None:
        labels_path = out_path.with_name(out_path.stem + "_labels.npy")
        _npy(labels_path, images.labels.numpy().astype(np.int64))
        result["labels"] = str(labels_path)
    print(f"{split} features {feats.shape[0]} x {feats.shape[1]} ({pool} pooling) -> {out_path}")
    if "labels" in result:
        print(f"labels -> {result['labels']}")
    return result
