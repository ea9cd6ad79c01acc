"""Folders of image files (Pillow): labelled (one subfolder per class) or unlabelled (any tree of images).

Every image is decoded once, converted to grayscale or RGB, resized on its shorter side and center-cropped to
data.image_size, and kept in memory as uint8 (training augmentation then crops and flips on tensors). Files
Pillow cannot read are skipped with a count (or, with data.on_bad_image=error, stop the run with their name).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import DataConfig
from ..environment import available_memory
from ..errors import MaekitError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def decode(path: Path, mode: str, size: int | None) -> np.ndarray | None:
    """uint8 [C, S, S] of one file (mode L or RGB, shorter side resized to `size`, center crop), None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if (
                Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS
            ):  # decoding alone would allocate w*h*channels bytes
                raise _bomb(path, f"{w}x{h} = {w * h:,} pixels, limit {Image.MAX_IMAGE_PIXELS:,}")
            im = im.convert(mode)
            if size is not None:
                w, h = im.size
                s = size / min(w, h)
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            a = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as e:  # Pillow's own refusal at open (over twice its limit)
        raise _bomb(path, str(e)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _bomb(path: Path, detail: str) -> MaekitError:
    return MaekitError(
        f"{path}: image over Pillow's decompression-bomb limit "
        f"({detail}); refusing to decode it (remove or shrink the file)"
    )


def color_mode(files: list[Path], color: str) -> str:
    """L or RGB: `color` itself unless auto, then RGB if any of 64 evenly spread files has colour."""
    if color != "auto":
        return color
    from PIL import Image

    for p in files[:: max(1, len(files) // 64)][:64]:
        try:
            with Image.open(p) as im:
                if im.mode not in ("L", "1", "I", "I;16", "F", "LA"):
                    return "RGB"
        except Exception:
            continue
    return "L"


def scan(root: Path) -> tuple[list[Path], list[str] | None]:
    """The image files of a folder (sorted) and its class names (sorted subfolder names; None when unlabelled)."""
    if not root.exists():
        raise MaekitError(f"data path {root} does not exist")
    if not root.is_dir():
        raise MaekitError(f"data path {root} is not a folder; data.source=folder expects a folder of images")
    files = list_images(root)
    if not files:
        raise MaekitError(
            f"{root}: no image files found (looked for {', '.join(sorted(EXTENSIONS))}, in subfolders too)"
        )
    # labelled: every image sits in a direct subfolder of root (the class), and there are at least two classes
    parents = {p.parent for p in files}
    labelled = all(p.parent == root for p in parents) and len(parents) >= 2
    return files, (sorted(p.name for p in parents) if labelled else None)


def report_bad(root: Path, bad: list[Path], on_bad_image: str) -> None:
    """Unreadable files of `root`: an error naming the first (data.on_bad_image=error), else a line with their count."""
    if bad and on_bad_image == "error":
        raise MaekitError(
            f"{bad[0]}: cannot decode the image ({len(bad)} unreadable "
            f"file(s) in {root}); set data.on_bad_image=skip to skip them"
        )
    if bad:
        print(f"data: skipped {len(bad)} unreadable image(s) in {root} (first: {bad[0]})", flush=True)


def load(root: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """images uint8 [N, C, S, S], labels int64 [N] (None when unlabelled), class names (subfolder names)."""
    files, classes = scan(root)
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # such images are refused with an error instead
        mode = color_mode(files, cfg.color)
    size = cfg.image_size  # None: keep the files' own size (they must all agree)
    avail = available_memory()
    need = len(files) * (3 if mode == "RGB" else 1) * size * size if size else 0
    if avail is not None and need > avail:
        raise MaekitError(
            f"{root}: {len(files):,} images at {size}x{size} need {need / 2**30:.1f} GiB in memory, "
            f"more than the {avail / 2**30:.1f} GiB available; use a smaller data.image_size, or "
            "pack the folder once (`maekit data pack`) and set data.pack to stream it"
        )
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # such images are refused with an error instead
        decoded = list(
            tqdm(
                pool.map(lambda p: decode(p, mode, size), files),
                total=len(files),
                desc=f"decode {root.name}",
                unit="img",
                leave=False,
                disable=None,
            )
        )
    bad = [p for p, a in zip(files, decoded) if a is None]
    report_bad(root, bad, cfg.on_bad_image)
    keep = [(p, a) for p, a in zip(files, decoded) if a is not None]
    if not keep:
        raise MaekitError(f"{root}: none of the {len(files)} image files could be decoded")
    if size is None:
        shapes = {a.shape for _, a in keep}
        if len(shapes) > 1:
            raise MaekitError(
                f"{root}: images have different sizes "
                f"({', '.join(str(s[1:]) for s in list(shapes)[:3])} ...); set data.image_size"
            )
    images = np.stack([a for _, a in keep])
    labels = np.array([classes.index(p.parent.name) for p, _ in keep], dtype=np.int64) if classes else None
    return images, labels, classes
