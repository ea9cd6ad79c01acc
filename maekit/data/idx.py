"""The idx format of MNIST, Fashion-MNIST, KMNIST and EMNIST (LeCun et al.), gzipped or not.

Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one big-endian uint32
per dimension; then the data, row-major.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from ..environment import available_memory
from ..errors import MaekitError

_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DATASETS = {
    "fashion_mnist": dict(
        debian="/usr/share/datasets/fashion-mnist",
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        classes=[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        hflip=True,
    ),
    "mnist": dict(
        debian="/usr/share/datasets/mnist",
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        classes=[str(i) for i in range(10)],
        hflip=False,
    ),
    "kmnist": dict(
        debian="/usr/share/datasets/kmnist",
        url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        classes=["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
        hflip=False,
    ),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (.gz or raw) into a numpy array; corrupt or truncated files raise MaekitError."""
    p = Path(path)
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rb") as f:
            # the header first: never read (or decompress) more than it declares, nor more than memory holds
            raw = f.read(4)
            if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES or raw[3] == 0:
                raise MaekitError(f"idx file {p} is corrupt: bad header (expected 0x00 0x00 <type> <ndim>)")
            ndim = raw[3]
            header = 4 + 4 * ndim
            raw += f.read(4 * ndim)
            if len(raw) < header:
                raise MaekitError(f"idx file {p} is truncated: header needs {header} bytes, file has {len(raw)}")
            shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
            dtype = np.dtype(_TYPES[raw[2]])
            expected = header + int(np.prod(shape, dtype=object)) * dtype.itemsize
            avail = available_memory()
            if avail is not None and expected > avail:
                raise MaekitError(
                    f"idx file {p} declares shape {shape} ({expected:,} bytes), more than the {avail:,} "
                    "bytes of memory available; its header is corrupt or it is not an idx file"
                )
            raw += f.read(expected - header + 1)
    except FileNotFoundError:
        raise MaekitError(f"idx file {p} not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise MaekitError(f"idx file {p} is unreadable or corrupt ({e})") from None
    if len(raw) != expected:
        has = f"{len(raw)}" if len(raw) < expected else "more"
        raise MaekitError(f"idx file {p} is truncated or corrupt: shape {shape} needs {expected} bytes, file has {has}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _complete(folder: Path) -> bool:
    return all(_find(folder, stem) for pair in FILES.values() for stem in pair)


def locate(name: str, path: str | None, download: bool = True) -> Path:
    """The folder holding the four idx files: config path, else $MAEKIT_DATA[/name], else the Debian package's
    folder, else ~/.cache/maekit/<name> (downloaded from the official source if allowed), else an error."""
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise MaekitError(f"data.path {folder} does not exist")
        if not _complete(folder):
            raise MaekitError(
                f"data.path {folder} does not hold the four idx files "
                f"({', '.join(s for p in FILES.values() for s in p)}, .gz or not)"
            )
        return folder
    if name not in DATASETS:
        raise MaekitError(
            f"data.name {name!r} is not a known idx dataset (known: {', '.join(DATASETS)}); set data.path"
        )
    candidates = []
    env = os.environ.get("MAEKIT_DATA")
    if env:
        candidates += [Path(env) / name, Path(env)]
    candidates += [Path(DATASETS[name]["debian"]), Path.home() / ".cache" / "maekit" / name]
    for folder in candidates:
        if folder.is_dir() and _complete(folder):
            return folder
    hint = "apt-get install dataset-fashion-mnist, " if name == "fashion_mnist" else ""
    if download and os.environ.get("MAEKIT_NO_DOWNLOAD", "") in ("", "0"):
        target = Path.home() / ".cache" / "maekit" / name
        try:
            _download(DATASETS[name]["url"], target)
            return target
        except OSError as e:
            hint += f"(download from {DATASETS[name]['url']} failed: {e}) "
    raise MaekitError(
        f"{name} idx files not found in {', '.join(str(c) for c in candidates)}; "
        f"{hint}or put the four idx files in a folder and set data.path=FOLDER or MAEKIT_DATA"
    )


def _download(base_url: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for stem in (s for pair in FILES.values() for s in pair):
        dest = target / (stem + ".gz")
        if dest.exists():
            continue
        with (
            urllib.request.urlopen(base_url + stem + ".gz", timeout=20) as r,
            tempfile.NamedTemporaryFile(dir=target, delete=False) as tmp,
        ):
            shutil.copyfileobj(r, tmp)
        os.replace(tmp.name, dest)


def load(name: str, path: str | None, download: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images uint8 [N, 28, 28], labels [N]), 'test': (...)}."""
    folder = locate(name, path, download)
    out = {}
    for split, (img_stem, lab_stem) in FILES.items():
        img_path, lab_path = _find(folder, img_stem), _find(folder, lab_stem)
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3:
            raise MaekitError(f"idx file {img_path} should hold images [N, H, W], has shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise MaekitError(
                f"idx file {lab_path} holds {labels.shape} labels; expected one per image of {img_path} ({len(images)})"
            )
        out[split] = (images, labels)
    return out
