"""config -> in-memory dataset splits -> per-step batches (sharded across processes under DDP)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import DataConfig
from ..errors import MaekitError
from . import idx
from .transforms import channel_stats


@dataclass
class ImageSet:
    """A split held in memory: images uint8 [N, C, H, W], labels int64 [N] or None."""

    images: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], None if self.labels is None else self.labels[index])


@dataclass
class Splits:
    """train / val (seeded hold-out of the training file) / test, with per-channel stats of train."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    class_names: list[str] | None
    mean: torch.Tensor  # [C], 0-1 scale, computed on `train`
    std: torch.Tensor  # [C]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[-2:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        return int(self.train.labels.max()) + 1 if self.train.labels is not None else 0


def _as_nchw(images: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(images, copy=True))
    return t.unsqueeze(1) if t.ndim == 3 else t


def load_splits(cfg: DataConfig, download: bool = True) -> Splits:
    """Read the configured source and split off the seeded validation set."""
    if cfg.source != "idx":
        raise MaekitError(f"data.source {cfg.source!r} is not supported (expected one of: idx)")
    arrays = idx.load(cfg.name, cfg.path, download)
    train_x, train_y = arrays["train"]
    test_x, test_y = arrays["test"]
    full = ImageSet(_as_nchw(train_x), torch.from_numpy(train_y.astype(np.int64)))
    test = ImageSet(_as_nchw(test_x), torch.from_numpy(test_y.astype(np.int64)))
    if len(full) < 2:
        raise MaekitError(f"training data of {cfg.name} holds {len(full)} images; at least 2 are needed")
    n_val = max(1, int(round(len(full) * cfg.val_fraction)))
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(cfg.split_seed))
    val, train = full.subset(perm[:n_val].sort().values), full.subset(perm[n_val:].sort().values)
    names = cfg.class_names or idx.DATASETS.get(cfg.name, {}).get("classes")
    mean, std = channel_stats(train.images)
    return Splits(train, val, test, names, mean, std)


def step_batches(n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This process's sample indices for every step of an epoch, [steps, batch_size].

    The epoch's permutation depends on (seed, epoch) only; global batches of batch_size*world consecutive
    entries are cut from it (the incomplete last one dropped) and process `rank` takes its slice of each,
    so the union over processes equals what one process with the global batch would see.
    """
    global_batch = batch_size * world
    steps = n // global_batch
    if steps == 0:
        raise MaekitError(
            f"{n} training images are fewer than one global batch ({batch_size} x {world} processes); "
            "lower train.batch_size"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    grid = perm[: steps * global_batch].view(steps, world, batch_size)
    return grid[:, rank]
