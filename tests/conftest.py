"""Shared fixtures: a small subset of the real Fashion-MNIST (from Debian's dataset-fashion-mnist) written
as idx files, and tiny model overrides so every test runs in seconds on 2 CPU cores."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from maekit.data import idx

FMNIST = Path(os.environ.get("MAEKIT_TEST_FMNIST", "/usr/share/datasets/fashion-mnist"))

TINY = [
    "model.patch_size=7",
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "model.decoder_embed_dim=32",
    "model.decoder_depth=1",
    "model.decoder_num_heads=2",
]

torch.set_num_threads(int(os.environ.get("MAEKIT_TEST_THREADS", "2")))


def assert_picture(path: Path, min_size: int = 100) -> None:
    """A figure maekit wrote: a PNG Pillow decodes, at least min_size pixels on each side, not one flat colour."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= min_size, (path, im.format, im.size)
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 1.0, f"{path} is blank"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the idx format (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="session")
def fmnist_full() -> dict:
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real Fashion-MNIST not found in {FMNIST}: run `make test` (installs dataset-fashion-mnist)")
    return idx.load("fashion_mnist", str(FMNIST), download=False)


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory, fmnist_full) -> Path:
    """600 training and 300 test images of the real Fashion-MNIST, as .gz idx files."""
    folder = tmp_path_factory.mktemp("fmnist_small")
    for split, n in (("train", 600), ("test", 300)):
        images, labels = fmnist_full[split]
        img_stem, lab_stem = idx.FILES[split]
        write_idx(folder / f"{img_stem}.gz", images[:n])
        write_idx(folder / f"{lab_stem}.gz", labels[:n])
    return folder


@pytest.fixture
def tiny_pretrain_args(fmnist_small) -> list[str]:
    return [
        f"data.path={fmnist_small}",
        *TINY,
        "train.batch_size=64",
        "train.eval_samples=64",
        "train.progress=false",
        "train.log_every=2",
    ]
