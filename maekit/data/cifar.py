"""CIFAR-10 / CIFAR-100 "python version" folders (pickled batches), unpickled safely.

Only the files of the official layout are opened (cifar-10-batches-py: data_batch_1..5, test_batch,
batches.meta; cifar-100-python: train, test, meta), and the unpickler accepts nothing but plain containers
and numpy arrays: any other object in a file is refused with an error.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import MaekitError

CIFAR10 = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
    "meta": "batches.meta",
    "labels": b"labels",
    "names": b"label_names",
}
CIFAR100 = {
    "train": ["train"],
    "test": ["test"],
    "meta": "meta",
    "labels": b"fine_labels",
    "names": b"fine_label_names",
}

# what numpy arrays need to be rebuilt from a pickle (numpy 1 and 2 module names)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise MaekitError(f"{path}: not a CIFAR batch ({e}); only pickled dicts of arrays are accepted") from None
    except (EOFError, ValueError, OSError, IndexError, KeyError, TypeError) as e:
        raise MaekitError(
            f"{path}: cannot read the CIFAR batch ({type(e).__name__}: {e}); the file may be truncated or corrupt"
        ) from None
    if not isinstance(obj, dict):
        raise MaekitError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def layout_of(folder: Path) -> dict:
    if (folder / "data_batch_1").exists():
        return CIFAR10
    if (folder / "train").exists() and (folder / "test").exists():
        return CIFAR100
    raise MaekitError(
        f"{folder}: not a CIFAR python folder (expected data_batch_1..5 and test_batch, or train and test)"
    )


def load(folder: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str] | None]:
    """{'train': (images uint8 [N,3,32,32], labels int64), 'test': ...} and the class names."""
    if not folder.is_dir():
        raise MaekitError(
            f"data path {folder} is not a folder; data.source=cifar expects "
            "the extracted cifar-10-batches-py or cifar-100-python folder"
        )
    lay = layout_of(folder)
    key = lay["labels"].decode()
    out = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for name in lay[split]:
            path = folder / name
            if not path.exists():
                raise MaekitError(
                    f"{path} is missing; expected the full CIFAR python "
                    f"layout ({', '.join(lay['train'] + lay['test'])})"
                )
            d = _load(path)
            if "data" not in d or key not in d:
                raise MaekitError(f"{path}: expected keys 'data' and '{key}', found {', '.join(map(str, d))}")
            x = np.asarray(d["data"])
            if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
                raise MaekitError(f"{path}: 'data' must be uint8 [N, 3072], got {x.dtype} {list(x.shape)}")
            y = np.asarray(d[key], dtype=np.int64)
            if len(y) != len(x):
                raise MaekitError(f"{path}: {len(y)} labels for {len(x)} images; expected one label per image")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    names = None
    meta = folder / lay["meta"]
    if meta.exists():
        m = _load(meta)
        raw = m.get(lay["names"].decode())
        if raw is not None:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    return out, names
