"""config -> dataset splits (in memory, or streamed from disk when large) -> per-step batches (sharded under DDP).

Every source ends up as the same `Splits`: train / val / test `ImageSet`s whose images are a uint8 tensor (photos,
0-255) or a float32 tensor (detector images, after data.preprocess), or a `StreamedImages` that reads such
tensors from disk on demand. Splits the source does not have are cut from its training data with seeded
permutations; the rows of every split are saved in the run directory (splits.npz).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import DataConfig, PreprocessConfig
from ..environment import available_memory
from ..errors import MaekitError
from . import cifar, folder, idx, pack
from .readers import ArrayReader, open_readers
from .stream import StreamedImages, chunk_order
from .transforms import channel_stats

TEST_SEED_OFFSET = 7919  # the test split's permutation is independent of the validation split's


@dataclass
class ImageSet:
    """A split: images [N, C, H, W] (uint8 or float32 tensor, or StreamedImages), labels int64 [N] or None."""

    images: torch.Tensor | StreamedImages
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> "ImageSet":
        """The images at `index`, in memory."""
        return ImageSet(self.images[index], None if self.labels is None else self.labels[index])

    @property
    def streamed(self) -> bool:
        return isinstance(self.images, StreamedImages)


@dataclass
class Splits:
    """train / val / test, with per-channel stats of train."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    class_names: list[str] | None
    mean: torch.Tensor  # [C], on the scale the model sees before normalisation (0-1 for uint8 images)
    std: torch.Tensor  # [C]
    channel_names: list[str] | None = None
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # rows of each split in its source file
    sources: dict[str, str] = field(default_factory=dict)  # the data each split's rows index (file and key, or folder)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[-2:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def dtype(self) -> str:
        return "uint8" if self.train.images.dtype == torch.uint8 else "float32"

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        labels = [s.labels for s in (self.train, self.val, self.test) if s.labels is not None and len(s.labels)]
        return int(max(int(y.max()) for y in labels)) + 1 if labels else 0

    def save_rows(self, path: Path) -> None:
        """Which rows of which file went into each split (np.load(path) to read)."""
        import io

        from ..files import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(
            buf,
            **{f"{k}_rows": v for k, v in self.rows.items()},
            **{f"{k}_source": np.array(v) for k, v in self.sources.items()},
        )
        atomic_write_bytes(path, buf.getvalue())


def _as_nchw(images: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(images, copy=True))
    return t.unsqueeze(1) if t.ndim == 3 else t


def undo_preprocess(x: torch.Tensor, pre: PreprocessConfig) -> torch.Tensor:
    """Undo data.preprocess's log1p and scale (zero suppression and clipping cannot be undone), so the metrics
    are in the file's units (GeV for the energy channels of maekit's and ML4SCI's jet images)."""
    if pre.log1p:
        x = torch.sign(x) * torch.expm1(x.abs())
    if pre.scale is not None:
        x = x / torch.tensor(pre.scale, dtype=x.dtype).view(1, -1, 1, 1)
    return x


def preparer(pre: PreprocessConfig, where: str, channels: int):
    """f(x, lo, hi) applied to every block of rows read: finite check, then zero-suppression, scale, log1p, clip."""
    if pre.scale is not None and len(pre.scale) != channels:
        raise MaekitError(f"data.preprocess.scale lists {len(pre.scale)} factors, the images have {channels} channels")

    def prepare(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
        if x.dtype != np.uint8:
            finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if not finite.all():
                raise MaekitError(
                    f"{where}: image {lo + int(np.argmin(finite))} holds NaN or Inf values; expected finite numbers"
                )
        if not pre.active:
            return x
        x = x.astype(np.float32)  # a copy: blocks may be views of memory-mapped or cached data
        if pre.zero_suppress is not None:
            x[np.abs(x) < pre.zero_suppress] = 0.0
        if pre.scale is not None:
            x *= np.asarray(pre.scale, dtype=np.float32).reshape(1, -1, 1, 1)
        if pre.log1p:  # sign(x) * log1p(|x|), in place
            sign = np.sign(x)
            np.abs(x, out=x)
            np.log1p(x, out=x)
            x *= sign
        if pre.clip is not None:
            np.clip(x, pre.clip[0], pre.clip[1], out=x)
        return x

    prepare.to_float = pre.active
    return prepare


def _read_all(reader: ArrayReader, prepare) -> torch.Tensor:
    """The whole file in memory, read unit by unit (with a progress bar for big files)."""
    dtype = torch.uint8 if reader.dtype == np.uint8 and not prepare.to_float else torch.float32
    out = torch.empty((reader.n, *reader.shape), dtype=dtype)
    starts = reader.chunk_starts
    bar = tqdm(
        total=reader.n,
        desc=f"read {reader.path.name}",
        unit="img",
        leave=False,
        disable=None if reader.nbytes > 256 << 20 else True,
    )
    for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist()):
        out[lo:hi] = torch.from_numpy(prepare(reader.read(lo, hi), lo, hi))
        bar.update(hi - lo)
    bar.close()
    return out


def _split_off(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, remaining rows), both sorted: a seeded `fraction` of 0..n-1 (at least one row)."""
    k = max(1, int(round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values.numpy(), perm[k:].sort().values.numpy()


def _labels_tensor(y: np.ndarray | None) -> torch.Tensor | None:
    return None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))


def read_in_memory(cfg: DataConfig, download: bool) -> tuple[dict, list[str] | None, dict[str, str]]:
    """{split: (images uint8 tensor, labels or None)} for idx / cifar / folder sources."""
    if cfg.source == "idx":
        where = cfg.path or str(idx.locate(cfg.name, None, download))
        arrays = idx.load(cfg.name, where, download)
        names = idx.DATASETS.get(cfg.name, {}).get("classes")
        return {k: (_as_nchw(x), y) for k, (x, y) in arrays.items()}, names, {"train": where, "test": where}
    if cfg.source == "cifar":
        if cfg.path is None:
            raise MaekitError(
                "data.path is required for data.source=cifar (the cifar-10-batches-py or cifar-100-python folder)"
            )
        arrays, names = cifar.load(Path(cfg.path))
        return (
            {k: (torch.from_numpy(x), y) for k, (x, y) in arrays.items()},
            names,
            {"train": cfg.path, "test": cfg.path},
        )
    parts, names, where = {}, None, {}
    for split, path in (("train", cfg.path), ("test", cfg.test_path)):
        if path is None:
            continue
        x, y, classes = folder.load(Path(path), cfg)
        if split == "train":
            names = classes
        elif classes is not None and names is not None and classes != names:
            raise MaekitError(f"{path}: test classes {classes} differ from the training classes {names}")
        parts[split], where[split] = (torch.from_numpy(x), y), path
    return parts, names, where


def _check_shapes(shapes: dict[str, tuple], where: dict[str, str]) -> None:
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{k} {list(s)} ({where.get(k, '?')})" for k, s in shapes.items())
        raise MaekitError(f"splits have different image shapes: {detail}; expected the same [C, H, W] everywhere")


def _cut_splits(n: int, own_test: bool, own_val: bool, cfg: DataConfig, where: str) -> dict[str, np.ndarray]:
    """Rows of the training source for train, and for val / test when the source has none of its own (seeded)."""
    rows, base = {}, np.arange(n)
    if not own_test:
        rows["test"], base = _split_off(n, cfg.test_fraction, cfg.split_seed + TEST_SEED_OFFSET)
    if own_val:
        rows["train"] = base
        return rows
    if len(base) < 2:
        raise MaekitError(f"{where}: the training data hold {len(base)} images; at least 2 are needed")
    val_pos, train_pos = _split_off(len(base), cfg.val_fraction, cfg.split_seed)
    rows["val"], rows["train"] = base[val_pos], base[train_pos]
    return rows


def load_splits(cfg: DataConfig, download: bool = True) -> Splits:
    """Read the configured source; cut the missing test / val splits from its training data (seeded)."""
    if cfg.source == "folder" and cfg.pack:
        cfg = pack.packed_config(cfg)  # the folder's pack, read like any HDF5 file (streamed when large)
    if cfg.source in ("idx", "cifar", "folder"):
        parts, names, where = read_in_memory(cfg, download)
        channel_names = cfg.channel_names
        x, y = parts["train"]
        if len(x) == 0:
            raise MaekitError(f"{where['train']}: the training data hold no images")
        _check_shapes({k: tuple(v[0].shape[1:]) for k, v in parts.items()}, where)
        rows = _cut_splits(len(x), "test" in parts, False, cfg, where["train"])
        sets = {
            k: ImageSet(x[torch.from_numpy(r)], _labels_tensor(None if y is None else y[r])) for k, r in rows.items()
        }
        if "test" in parts:
            sets["test"] = ImageSet(parts["test"][0], _labels_tensor(parts["test"][1]))
            rows["test"] = np.arange(len(parts["test"][0]))
        where = {k: str(Path(v).resolve()) for k, v in where.items()}
        own_test = where.get("test")
        where = {k: where.get(k, where["train"]) for k in ("train", "val", "test")}
        if (
            own_test is not None and own_test == where["train"]
        ):  # idx / cifar: the test files sit next to the training files
            where["test"] = f"{own_test} (its test files)"
    else:
        readers = open_readers(Path(cfg.path), cfg)
        if cfg.test_path is not None:
            if "test" in readers:
                raise MaekitError(f"{cfg.path} has its own test split; remove data.test_path")
            readers["test"] = open_readers(Path(cfg.test_path), cfg)["train"]
        _check_shapes({k: r.shape for k, r in readers.items()}, {k: str(r.path) for k, r in readers.items()})
        tr = readers["train"]
        if tr.n == 0:
            raise MaekitError(f"{tr.where}: the training data hold no images")
        names, channel_names = tr.class_names, tr.channel_names
        # (reader, rows) per split: the file's own splits whole, the missing ones cut from its training data
        split_rows = {
            k: (tr, r) for k, r in _cut_splits(tr.n, "test" in readers, "val" in readers, cfg, tr.where).items()
        }
        split_rows.update({k: (readers[k], np.arange(readers[k].n)) for k in ("val", "test") if k in readers})
        total = sum(r.nbytes for r in readers.values())
        stream = cfg.stream if cfg.stream is not None else total > cfg.memory_mb * 2**20
        avail = available_memory()
        if not stream and avail is not None and total > avail:
            raise MaekitError(
                f"{tr.where}: the images need {total / 2**30:.1f} GiB in memory (data.stream=false), more than the "
                f"{avail / 2**30:.1f} GiB available; set data.stream=true to read them in blocks"
            )
        budget = cfg.memory_mb * 2**20
        loaded: dict[int, torch.Tensor] = {}
        sets = {}
        for split, (reader, r) in split_rows.items():
            prepare = preparer(cfg.preprocess, reader.where, reader.shape[0])
            labels = None if reader.labels is None else torch.from_numpy(reader.labels[r])
            if stream:
                images = StreamedImages(reader, r, prepare, budget if split == "train" else 0)
            else:
                if id(reader) not in loaded:
                    loaded[id(reader)] = _read_all(reader, prepare)
                images = loaded[id(reader)][torch.from_numpy(r)]
            sets[split] = ImageSet(images, labels)
        loaded.clear()
        rows = {k: v[1] for k, v in split_rows.items()}
        # absolute file and dataset key: a file's own test split is not its training data, and a run elsewhere
        # compares equal
        where = {k: f"{Path(v[0].path).resolve()}: {v[0].key}" for k, v in split_rows.items()}
    if len(sets["train"]) == 0:
        raise MaekitError(f"{where['train']}: no training images are left after the test and validation splits")
    mean, std = channel_stats(sets["train"].images)
    names = cfg.class_names or names
    return Splits(sets["train"], sets["val"], sets["test"], names, mean, std, channel_names, rows, where)


def step_batches(
    n: int,
    batch_size: int,
    epoch: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
    units: tuple[np.ndarray, int] | None = None,
) -> torch.Tensor:
    """This process's sample indices for every step of an epoch, [steps, batch_size].

    The epoch's permutation depends on (seed, epoch) only; global batches of batch_size*world consecutive
    entries are cut from it (the incomplete last one dropped) and process `rank` takes its slice of each,
    so the union over processes equals what one process with the global batch would see. With `units`
    (read unit of each position, units per buffer) of streamed data the permutation is `chunk_order`'s.
    """
    global_batch = batch_size * world
    steps = n // global_batch
    if steps == 0:
        raise MaekitError(
            f"{n} training images are fewer than one global batch ({batch_size} x {world} processes); "
            "lower train.batch_size"
        )
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g) if units is None else chunk_order(units[0], units[1], g)
    grid = perm[: steps * global_batch].view(steps, world, batch_size)
    return grid[:, rank]
