"""A one-time pack of an image folder into a chunked uint8 HDF5 file, which the HDF5 reader reads (and streams).

The folder reader decodes every photo on every run and holds them all in memory (300,000 photos at 224 px are
45 GB). `pack_folder` decodes them once, exactly as the folder reader does (same files in the same order,
`folder.decode` with the same colour mode and size), in a process pool, into

  images       uint8 [N, C, S, S], HDF5 chunks of about 1 MB, uncompressed (photos barely compress, and
               decompressing would cost every epoch CPU time)
  labels       int64 [N] (labelled folders only), with the class names in the attribute class_names
  files, file_sizes, file_mtimes   every image file scanned (relative path, bytes, mtime in ns): the fingerprint
  maekit_pack  attribute, JSON: image size, colour mode, counts, fingerprint digest, unreadable files

It writes `<out>.partial` one block of images at a time and records its progress in `<out>.partial.json`
(atomically) after each block, so an interrupted pack resumes at the last recorded block; the finished file is
fsynced and renamed to `<out>`, so a file at `<out>` is always complete. A run with data.pack checks the pack
against its folder (fingerprint) and data.image_size / data.color before reading it like any HDF5 file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import time
import warnings
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import DataConfig
from ..errors import MaekitError
from ..files import commit_file, save_json
from . import folder

FORMAT = 1
BLOCK = 512  # images decoded and written between two progress records (what an interruption can lose)
CHUNK_BYTES = 1 << 20  # HDF5 chunk (whole images); the reader reads several chunks, about 8 MB, at a time
AHEAD = 2  # blocks decoding while one is written: bounds memory to a few blocks whatever the speed of the disk
SHOW_BAD = 20  # unreadable files printed (all are listed in the metadata)


@dataclass
class Fingerprint:
    """What a folder looked like: its image files (relative paths, in list_images order), sizes and mtimes."""

    files: list[str]
    sizes: np.ndarray  # int64 [F], bytes
    mtimes: np.ndarray  # int64 [F], ns

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for f, s, m in zip(self.files, self.sizes.tolist(), self.mtimes.tolist()):
            h.update(f"{f}\0{s}\0{m}\n".encode())
        return h.hexdigest()


def fingerprint(root: Path, files: list[Path]) -> Fingerprint:
    stats = [p.stat() for p in files]
    return Fingerprint(
        [p.relative_to(root).as_posix() for p in files],
        np.array([s.st_size for s in stats], dtype=np.int64),
        np.array([s.st_mtime_ns for s in stats], dtype=np.int64),
    )


def first_change(then: Fingerprint, now: Fingerprint) -> str:
    """The first file (in path order) that differs between two fingerprints, and how many differ."""
    a = dict(zip(then.files, zip(then.sizes.tolist(), then.mtimes.tolist())))
    b = dict(zip(now.files, zip(now.sizes.tolist(), now.mtimes.tolist())))
    changed = sorted(f for f in a.keys() | b.keys() if a.get(f) != b.get(f))
    if not changed:
        return "the same files"
    f = changed[0]
    if f not in b:
        what = f"{f} was removed"
    elif f not in a:
        what = f"{f} is new"
    elif a[f][0] != b[f][0]:
        what = f"{f} changed ({a[f][0]:,} -> {b[f][0]:,} bytes)"
    else:
        what = f"{f} was modified (mtime)"
    return what + (f", and {len(changed) - 1} more file(s) differ" if len(changed) > 1 else "")


def _repack(root: Path, out: Path, size: int) -> str:
    return f"re-pack with `maekit data pack {root} --out {out} --size {size} --force`"


def read_meta(pack: Path, root: Path) -> dict:
    """The metadata of a finished pack (MaekitError if `pack` is missing or is not one)."""
    import h5py

    if not pack.exists():
        raise MaekitError(
            f"data.pack {pack} does not exist; make it once with `maekit data pack {root} --out {pack} --size N`"
        )
    try:
        with h5py.File(pack, "r") as f:
            raw = f.attrs.get("maekit_pack")
    except OSError as e:
        raise MaekitError(f"{pack}: not a readable HDF5 file ({e})") from None
    if raw is None:
        raise MaekitError(
            f"{pack}: not a finished maekit pack (no maekit_pack metadata); "
            f"make it with `maekit data pack {root} --out {pack} --size N`"
        )
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise MaekitError(
            f"{pack}: pack format {meta.get('format')}, this maekit reads "
            f"format {FORMAT}; {_repack(root, pack, meta.get('image_size', 0))}"
        )
    return meta


def _stored_fingerprint(pack: Path) -> Fingerprint:
    import h5py

    with h5py.File(pack, "r") as f:
        return Fingerprint([s.decode() for s in f["files"][...]], f["file_sizes"][...], f["file_mtimes"][...])


def check(pack: Path, root: Path, size: int | None, color: str, expected: str = "data.image_size") -> dict:
    """The pack's metadata once it is known to hold `root` as it is now, at `size` (None: any) and `color` (auto:
    any); else a one-line MaekitError naming the pack and what was expected."""
    meta = read_meta(pack, root)
    s = meta["image_size"]
    if size is not None and size != s:
        raise MaekitError(
            f"{pack}: packed at {s}x{s} pixels, expected {size}x{size} ({expected}); {_repack(root, pack, size)}"
        )
    if color != "auto" and color != meta["color"]:
        raise MaekitError(
            f"{pack}: packed in colour mode {meta['color']}, expected "
            f"{color} (data.color); {_repack(root, pack, s)} --color {color}"
        )
    files, _ = folder.scan(root)
    now = fingerprint(root, files)
    if now.digest != meta["fingerprint"]:
        raise MaekitError(
            f"{pack}: {root} changed since it was packed ({first_change(_stored_fingerprint(pack), now)}); "
            f"expected the {meta['files']:,} image files as packed; {_repack(root, pack, s)}"
        )
    return meta


def packed_config(cfg: DataConfig) -> DataConfig:
    """The hdf5 DataConfig that reads cfg.pack (and cfg.test_pack) in place of the folders cfg.path (and
    cfg.test_path), after checking each pack against its folder; unreadable files are reported as the folder
    reader reports them."""
    metas = {}
    for split, pack, path in (("train", cfg.pack, cfg.path), ("test", cfg.test_pack, cfg.test_path)):
        if pack is None:
            continue
        root = Path(path)
        metas[split] = meta = check(Path(pack), root, cfg.image_size, cfg.color)
        folder.report_bad(root, [root / f for f in meta["bad"]], cfg.on_bad_image)
        if meta["images"] == 0:
            raise MaekitError(f"{root}: none of the {meta['files']} image files could be decoded")
    if (
        "test" in metas
        and None not in (metas["test"]["classes"], metas["train"]["classes"])
        and metas["test"]["classes"] != metas["train"]["classes"]
    ):
        raise MaekitError(
            f"{cfg.test_path}: test classes {metas['test']['classes']} "
            f"differ from the training classes {metas['train']['classes']}"
        )
    return dataclasses.replace(
        cfg,
        source="hdf5",
        path=cfg.pack,
        test_path=cfg.test_pack,
        pack=None,
        test_pack=None,
        images_key="images",
        labels_key="labels" if metas["train"]["classes"] else "none",
        layout="nchw",
        image_size=None,
        color="auto",
    )


def _decode(path: Path, mode: str, size: int) -> np.ndarray | None:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # such images are refused with an error instead
        return folder.decode(path, mode, size)


class _Decoder:
    """Decodes blocks of files in order, in a process pool (workers > 1) or here, with AHEAD blocks in flight."""

    def __init__(self, workers: int, mode: str, size: int):
        self.fn = partial(_decode, mode=mode, size=size)
        self.workers, self.pool = workers, None
        if workers > 1:
            # fork: workers start at once and import nothing; they only run Pillow, never torch
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
            self.pool = ctx.Pool(workers)

    def blocks(self, blocks: list[list[Path]]):
        """Yield the decoded arrays (None for an unreadable file) of each block, in order."""
        if self.pool is None:
            for b in blocks:
                yield [self.fn(p) for p in b]
            return
        pending: deque = deque()
        for b in blocks:
            pending.append(self.pool.map_async(self.fn, b, chunksize=max(1, len(b) // (4 * self.workers))))
            if len(pending) > AHEAD:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _write_block(f, arrays: list, paths: list[Path], state: dict, label_of: dict | None, root: Path) -> None:
    """Append a block's decoded images (and labels) to the open partial file; note its unreadable files in state."""
    good = [a for a in arrays if a is not None]
    state["bad"] += [p.relative_to(root).as_posix() for p, a in zip(paths, arrays) if a is None]
    lo, hi = state["rows"], state["rows"] + len(good)
    if good:
        f["images"].resize(hi, axis=0)
        f["images"][lo:hi] = np.stack(good)
        if label_of is not None:
            f["labels"].resize(hi, axis=0)
            f["labels"][lo:hi] = [label_of[p.parent.name] for p, a in zip(paths, arrays) if a is not None]
    state["rows"] = hi
    state["files_done"] += len(paths)


def _write_fingerprint(f, fp: Fingerprint) -> None:
    import h5py

    for k in ("files", "file_sizes", "file_mtimes"):
        if k in f:
            del f[k]
    f.create_dataset("files", data=np.array(fp.files, dtype=object), dtype=h5py.string_dtype(), track_times=False)
    f.create_dataset("file_sizes", data=fp.sizes, track_times=False)
    f.create_dataset("file_mtimes", data=fp.mtimes, track_times=False)


def _start(partial_path: Path, fp: Fingerprint, mode: str, size: int, labelled: bool) -> None:
    """A new, empty partial file: datasets at zero rows (grown block by block) and the folder's fingerprint."""
    import h5py

    c = 3 if mode == "RGB" else 1
    rows = max(1, CHUNK_BYTES // (c * size * size))
    with h5py.File(partial_path, "w") as f:
        f.create_dataset(
            "images",
            (0, c, size, size),
            np.uint8,
            maxshape=(None, c, size, size),
            chunks=(rows, c, size, size),
            track_times=False,
        )
        if labelled:
            f.create_dataset("labels", (0,), np.int64, maxshape=(None,), chunks=(1 << 15,), track_times=False)
        _write_fingerprint(f, fp)


def _resumable(partial_path: Path, state_path: Path, key: dict, fp: Fingerprint) -> dict | None:
    """The recorded progress of an earlier, interrupted pack at the same settings whose files done so far are
    unchanged (files after them may have changed: say an image that stopped it was replaced), if any."""
    import h5py

    if not (partial_path.exists() and state_path.exists()):
        return None
    try:
        state = json.loads(state_path.read_text())
        if any(state.get(k) != v for k, v in key.items()):
            return None
        done = state["files_done"]
        with h5py.File(partial_path, "r+") as f:
            then = Fingerprint([s.decode() for s in f["files"][:done]], f["file_sizes"][:done], f["file_mtimes"][:done])
            if (
                done > len(fp.files)
                or then.digest != Fingerprint(fp.files[:done], fp.sizes[:done], fp.mtimes[:done]).digest
            ):
                return None
            _write_fingerprint(f, fp)
            # the rows past the last record may hold a half-written block
            for k in ("images", "labels"):
                if k in f:
                    f[k].resize(state["rows"], axis=0)
    except (OSError, ValueError, KeyError):  # a partial file cut short by a crash: start again
        return None
    return state


def pack_folder(
    root: Path,
    out: Path,
    size: int,
    workers: int | None = None,
    color: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Pack `root` into `out` (resuming an interrupted pack of it); returns the pack's metadata. An existing `out`
    that holds `root` as it is at this size is kept; one that does not is an error unless force=True."""
    from PIL import Image

    root, out = Path(root), Path(out)
    if size < 1:
        raise MaekitError(f"--size must be >= 1, got {size}")
    if out.exists() and not force:
        meta = check(out, root, size, color, expected="--size")
        print(
            f"pack: {out} is up to date ({meta['images']:,} images of {size}x{size} {meta['color']} from {root})",
            flush=True,
        )
        return meta
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    files, classes = folder.scan(root)
    fp = fingerprint(root, files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        mode = folder.color_mode(files, color)
    partial_path, state_path = out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")
    key = {"format": FORMAT, "image_size": size, "color": mode, "classes": classes}
    state = _resumable(partial_path, state_path, key, fp)
    if state is None:
        if partial_path.exists():
            print(
                f"pack: {partial_path} was made at other settings or from "
                "files that changed since (or is damaged); starting again",
                flush=True,
            )
        _start(partial_path, fp, mode, size, classes is not None)
        state = {**key, "files_done": 0, "rows": 0, "bad": []}
        save_json(state_path, state)
    elif state["files_done"]:
        print(f"pack: resuming {partial_path} at image file {state['files_done']:,} of {len(files):,}", flush=True)
    label_of = {c: i for i, c in enumerate(classes)} if classes else None
    todo = files[state["files_done"] :]
    blocks = [todo[i : i + BLOCK] for i in range(0, len(todo), BLOCK)]
    import h5py

    t0 = time.time()
    decoder = _Decoder(min(workers, max(1, len(todo))), mode, size)
    bar = tqdm(
        total=len(files),
        initial=state["files_done"],
        desc=f"pack {root.name}",
        unit="img",
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    try:
        with h5py.File(partial_path, "r+") as f:
            for paths, arrays in zip(blocks, decoder.blocks(blocks)):
                _write_block(f, arrays, paths, state, label_of, root)
                f.flush()
                save_json(state_path, state)  # after the block's data: a record never points past what was written
                bar.update(len(paths))
            f.attrs["maekit_pack"] = json.dumps(
                {
                    "format": FORMAT,
                    "folder": str(root.resolve()),
                    "image_size": size,
                    "color": mode,
                    "channels": 3 if mode == "RGB" else 1,
                    "images": state["rows"],
                    "files": len(files),
                    "fingerprint": fp.digest,
                    "classes": classes,
                    "bad": state["bad"],
                }
            )
            if classes:
                f.attrs["class_names"] = json.dumps(classes)
    except BaseException:
        print(
            f"pack: stopped after {state['files_done']:,} of {len(files):,} "
            f"image files; the same command resumes from {partial_path}",
            flush=True,
        )
        raise
    finally:
        bar.close()
        decoder.close()
    commit_file(partial_path, out)
    state_path.unlink(missing_ok=True)
    seconds = time.time() - t0
    meta = read_meta(out, root)
    rate = len(todo) / seconds if seconds > 0 else 0.0
    print(
        f"pack: {out}: {meta['images']:,} images of {size}x{size} {mode} ({out.stat().st_size / 2**20:,.1f} MiB), "
        f"{len(todo):,} decoded in {seconds:.1f} s ({rate:,.0f} images/s, {workers} worker(s))",
        flush=True,
    )
    bad = meta["bad"]
    if bad:
        more = (
            f" ... and {len(bad) - SHOW_BAD} more (all listed in the pack's maekit_pack metadata)"
            if len(bad) > SHOW_BAD
            else ""
        )
        print(f"pack: {len(bad)} unreadable image file(s) skipped: {', '.join(bad[:SHOW_BAD])}{more}", flush=True)
    return {**meta, "seconds": seconds, "decoded": len(todo), "images_per_s": rate}
