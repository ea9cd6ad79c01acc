"""Image arrays on disk (HDF5, Parquet, NumPy) read by row ranges, in channels-first order.

A reader knows its file, the image key, the (selected) shape [C, H, W], the dtype, the natural read unit
(HDF5 chunk rows, Parquet row groups) and the labels. `read(start, stop)` returns numpy [n, C, H, W]; nothing
is held in memory between calls, so the same reader serves whole-file loading and streaming.

Layouts follow the public ML4SCI end-to-end files:
  quark/gluon HDF5     X_jets (N,125,125,3) channels-last, y, pt, m0
  quark/gluon Parquet  one row per jet: X_jets (or X_jets_LR) nested lists [C][H][W], pt, m0, y
  Task 3d HDF5         jet (N,125,125,8), labelled files also Y (N,1)
  boosted top HDF5     {train,validation,test}_jet with {split}_meta (label = last column)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import MaekitError

IMAGE_KEYS = ("X_jets", "jet", "X_jets_LR", "images", "image", "x", "X", "data", "arr_0")
LABEL_KEYS = ("y", "Y", "labels", "label", "targets", "arr_1")
SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}
MAX_CHANNELS = 16  # an axis this short next to a long one is the channel axis
CHUNK_BYTES = 8 << 20  # about this much per read unit (whole HDF5 chunks; Parquet row groups are the file's own)


def _layout(shape: tuple[int, ...], layout: str, where: str) -> str:
    """'nhw', 'nhwc' or 'nchw' for an image array of this shape (layout: auto | nhwc | nchw)."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise MaekitError(
            f"{where}: expected images of rank 3 [N,H,W] or 4 [N,H,W,C]/[N,C,H,W], got shape {list(shape)}"
        )
    if layout != "auto":
        return layout
    # the channel axis is the short one next to the two image axes
    last = shape[3] <= MAX_CHANNELS and shape[3] < min(shape[1], shape[2])
    first = shape[1] <= MAX_CHANNELS and shape[1] < min(shape[2], shape[3])
    if last != first:
        return "nhwc" if last else "nchw"
    raise MaekitError(
        f"{where}: cannot tell the channel axis of shape {list(shape)}; set data.layout=nhwc or data.layout=nchw"
    )


def _to_nchw(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhw":
        return x[:, None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "nhwc" else x


def _select(x: np.ndarray, channels: list[int] | None) -> np.ndarray:
    return x if channels is None else np.ascontiguousarray(x[:, channels])


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Integer class labels [n] from y of shape [n] or [n, 1] (0./1. floats accepted when integral)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise MaekitError(f"{where}: expected labels of shape [N] or [N, 1], got {list(y.shape)}")
    if len(y) != n:
        raise MaekitError(f"{where}: {len(y)} labels for {n} images; expected one label per image")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise MaekitError(
                f"{where}: labels must be whole class numbers, found values "
                f"like {y[(y != np.round(y)) | ~np.isfinite(y)][:3].tolist()}"
            )
    elif y.dtype.kind not in "iub":
        raise MaekitError(f"{where}: labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise MaekitError(f"{where}: labels must be >= 0, found {int(y.min())}")
    return y


class ArrayReader:
    """Base: subclasses set path, key, n, shape (after channel selection), dtype, chunk_starts and implement _read."""

    path: Path
    key: str
    n: int
    shape: tuple[int, int, int]
    dtype: np.dtype
    chunk_starts: np.ndarray  # [K + 1], row where each read unit starts, then n
    file_channels: int
    channels: list[int] | None = None
    channel_names: list[str] | None = None  # of the selected channels: data.channel_names, else the file's own
    labels: np.ndarray | None = None
    label_key: str | None = None
    class_names: list[str] | None = None  # the file's own names of the label values (HDF5 attribute class_names)

    @property
    def where(self) -> str:
        return f"{self.path}: {self.key}"

    @property
    def nbytes(self) -> int:
        itemsize = 1 if self.dtype == np.uint8 else 4
        return self.n * int(np.prod(self.shape)) * itemsize

    crop_box: tuple[int, int, int] | None = None  # (top, left, size) of data.crop

    def _crop(self, cfg: DataConfig) -> None:
        if cfg.crop is None:
            return
        c, h, w = self.shape
        if cfg.crop > min(h, w):
            raise MaekitError(f"{self.where}: data.crop={cfg.crop} is larger than the images ({h}x{w})")
        self.crop_box = ((h - cfg.crop) // 2, (w - cfg.crop) // 2, cfg.crop)
        self.shape = (c, cfg.crop, cfg.crop)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as [n, C, H, W], uint8 or float32, selected channels, center-cropped (data.crop)."""
        x = _select(self._read(start, stop), self.channels)
        if self.crop_box is not None:
            top, left, k = self.crop_box
            x = np.ascontiguousarray(x[:, :, top : top + k, left : left + k])
        if x.dtype != np.uint8:
            x = x.astype(np.float32, copy=False)
        return x

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def _set_channels(self, c: int, cfg: DataConfig, file_names: list[str] | None = None) -> None:
        self.file_channels = c
        if cfg.channels is not None:
            bad = [i for i in cfg.channels if i >= c]
            if bad:
                raise MaekitError(
                    f"{self.where}: data.channels {cfg.channels} asks for channel "
                    f"{bad[0]} but the images have {c} channels (0..{c - 1})"
                )
            self.channels = list(cfg.channels)
        if cfg.channel_names is not None and len(cfg.channel_names) != c:
            raise MaekitError(
                f"{self.where}: data.channel_names lists {len(cfg.channel_names)} names, the images have {c} channels"
            )
        names = cfg.channel_names or (file_names if file_names and len(file_names) == c else None)
        if names is not None:
            self.channel_names = [names[i] for i in self.channels] if self.channels else list(names)

    def _array_layout(
        self, shape: tuple[int, ...], dtype: np.dtype, cfg: DataConfig, file_names: list[str] | None = None
    ) -> None:
        """layout, n, shape, dtype of an image array [N,H,W] / [N,H,W,C] / [N,C,H,W] (HDF5 dataset, NumPy array)."""
        if dtype.kind not in "uif":
            raise MaekitError(f"{self.where}: expected numeric images, got dtype {dtype}")
        self.layout = _layout(shape, cfg.layout, self.where)
        self.n = shape[0]
        _check_row_count(self.n, shape, self.where)
        c = 1 if self.layout == "nhw" else (shape[3] if self.layout == "nhwc" else shape[1])
        hw = shape[1:3] if self.layout in ("nhw", "nhwc") else shape[2:4]
        self._set_channels(c, cfg, file_names)
        self.shape = (len(self.channels) if self.channels else c, int(hw[0]), int(hw[1]))
        self._crop(cfg)
        self.dtype = np.dtype(np.uint8) if dtype == np.uint8 else np.dtype(np.float32)

    def _even_chunks(self, rows: int | None = None) -> np.ndarray:
        if rows is None:
            rows = max(1, CHUNK_BYTES // max(1, int(np.prod(self.shape)) * 4))
        return np.append(np.arange(0, self.n, rows), self.n).astype(np.int64)

    def close(self) -> None:
        pass


ROW_BYTES = 48  # memory per image for split rows, orders, labels and read units, even when the images stream


def _check_row_count(n: int, shape: tuple[int, ...], where: str) -> None:
    """Refuse, before any allocation, a dataset that declares more images than this machine could index."""
    from ..environment import available_memory

    avail = available_memory()
    if avail is not None and n * ROW_BYTES > avail:
        raise MaekitError(
            f"{where}: the dataset declares shape {list(shape)}; indexing its {n:,} images "
            f"needs {n * ROW_BYTES / 2**30:.1f} GiB, more than the {avail / 2**30:.1f} GiB "
            "of memory available; the file is corrupt or too large for this machine"
        )


def _attr_names(obj, keys: tuple[str, ...] = ("channel_names", "channels")) -> list[str] | None:
    """Names stored as an HDF5 attribute (a JSON list, a comma-separated string or an array), if any: channel
    names by default, class names with keys=("class_names",)."""
    for key in keys:
        if key in obj.attrs:
            v = obj.attrs[key]
            v = json.loads(v) if isinstance(v, str) and v.startswith("[") else v
            if isinstance(v, str):
                v = v.split(",")
            try:
                return [x.decode() if isinstance(x, bytes) else str(x) for x in v]
            except TypeError:
                return None
    return None


class HDF5Reader(ArrayReader):
    def __init__(self, path: Path, key: str, cfg: DataConfig, label_key: str | None, meta_label_key: str | None = None):
        import h5py

        self.path, self.key = path, key
        self._file = h5py.File(path, "r")
        ds = self._file[key]
        if not isinstance(ds, h5py.Dataset):
            raise MaekitError(f"{self.where} is a group, not an image dataset")
        self._ds = ds
        self._array_layout(ds.shape, ds.dtype, cfg, _attr_names(ds) or _attr_names(self._file))
        rows = None
        if ds.chunks:  # whole HDF5 chunks per read, about CHUNK_BYTES at a time
            rows = ds.chunks[0] * max(1, CHUNK_BYTES // (ds.chunks[0] * int(np.prod(ds.shape[1:])) * ds.dtype.itemsize))
        self.chunk_starts = self._even_chunks(rows)
        if meta_label_key is not None:
            meta = self._file[meta_label_key][...]
            self.labels, self.label_key = (
                _labels(meta[:, -1] if meta.ndim == 2 else meta, self.n, f"{path}: {meta_label_key}"),
                meta_label_key,
            )
        elif label_key is not None:
            self.labels, self.label_key = _labels(self._file[label_key][...], self.n, f"{path}: {label_key}"), label_key
        if self.labels is not None:
            self.class_names = _attr_names(ds, ("class_names",)) or _attr_names(self._file, ("class_names",))

    def _read(self, start: int, stop: int) -> np.ndarray:
        try:
            x = self._ds[start:stop]
        except OSError as e:  # truncated or corrupt file
            raise MaekitError(
                f"{self.where}: cannot read rows {start}-{stop} ({e}); the file may be truncated or corrupt"
            ) from None
        return _to_nchw(x, self.layout)

    def close(self) -> None:
        self._file.close()


def open_hdf5(path: Path, cfg: DataConfig) -> dict[str, ArrayReader]:
    """{split: reader}: one 'train' reader, or train/val/test for the boosted-top {split}_jet layout."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise MaekitError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        keys = list(f.keys())
        datasets = {k for k in keys if isinstance(f[k], h5py.Dataset)}
    split_keys = {
        SPLIT_NAMES[k[: -len("_jet")]]: k for k in datasets if k.endswith("_jet") and k[: -len("_jet")] in SPLIT_NAMES
    }
    if cfg.images_key is None and split_keys:
        out = {}
        for split, key in split_keys.items():
            meta = key[: -len("_jet")] + "_meta"
            use_meta = cfg.labels_key != "none" and meta in datasets
            out[split] = HDF5Reader(path, key, cfg, None, meta if use_meta else None)
        return out
    key = cfg.images_key or next((k for k in IMAGE_KEYS if k in datasets), None)
    if key is None or key not in datasets:
        want = f"key {cfg.images_key!r}" if cfg.images_key else f"one of {', '.join(IMAGE_KEYS)}"
        raise MaekitError(
            f"{path}: no image dataset {want} (the file has: {', '.join(keys) or 'nothing'}); set data.images_key"
        )
    label_key = _label_key(cfg, datasets, path)
    return {"train": HDF5Reader(path, key, cfg, label_key)}


def _label_key(cfg: DataConfig, available, path: Path) -> str | None:
    if cfg.labels_key == "none":
        return None
    if cfg.labels_key is not None:
        if cfg.labels_key not in available:
            raise MaekitError(
                f"{path}: no labels key {cfg.labels_key!r} (the file has: {', '.join(sorted(available))})"
            )
        return cfg.labels_key
    return next((k for k in LABEL_KEYS if k in available), None)


class ParquetReader(ArrayReader):
    """One row per image, the image a nested list column [C][H][W] (or [H][W]); read by row groups."""

    def __init__(self, path: Path, cfg: DataConfig):
        import pyarrow.parquet as pq

        self.path = path
        try:
            self._pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-parquet or truncated files
            raise MaekitError(f"{path}: not a readable Parquet file ({e})") from None
        names = self._pf.schema_arrow.names
        self.key = cfg.images_key or next((k for k in IMAGE_KEYS if k in names), None)
        if self.key is None or self.key not in names:
            want = f"column {cfg.images_key!r}" if cfg.images_key else f"one of {', '.join(IMAGE_KEYS)}"
            raise MaekitError(f"{path}: no image {want} (columns: {', '.join(names)}); set data.images_key")
        md = self._pf.metadata
        self.n = md.num_rows
        if self.n == 0:
            raise MaekitError(f"{path}: the file holds no rows; expected at least one image")
        first = self._pf.read_row_group(0, columns=[self.key]).column(0).slice(0, 1)
        dims = self._nested_dims(first)
        if len(dims) == 2:
            dims = [1, *dims]
        if len(dims) != 3:
            raise MaekitError(f"{self.where}: expected nested lists [C][H][W] or [H][W], got depth {len(dims)}")
        # ML4SCI Parquet files nest [C][H][W]; data.layout=nhwc reads [H][W][C] lists
        self.layout = "nhwc" if cfg.layout == "nhwc" else "nchw"
        self._image_dims = tuple(dims)
        c, h, w = (dims[2], dims[0], dims[1]) if self.layout == "nhwc" else dims
        self._set_channels(c, cfg)
        self.shape = (len(self.channels) if self.channels else c, h, w)
        self._crop(cfg)
        self.dtype = np.dtype(np.float32)
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        self.chunk_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        label_key = _label_key(cfg, set(names), path)
        if label_key is not None:
            y = self._pf.read(columns=[label_key]).column(0).to_numpy()
            self.labels, self.label_key = _labels(y, self.n, f"{path}: {label_key}"), label_key

    @staticmethod
    def _nested_dims(first) -> list[int]:
        """Nested list lengths of one row's image, e.g. [3, 125, 125]."""
        v, dims = first[0].as_py(), []
        while isinstance(v, list):
            dims.append(len(v))
            v = v[0] if v else None
        return dims

    def _read(self, start: int, stop: int) -> np.ndarray:
        import pyarrow as pa

        out = []
        g = int(np.searchsorted(self.chunk_starts, start, side="right") - 1)
        while g < len(self.chunk_starts) - 1 and self.chunk_starts[g] < stop:
            lo, hi = self.chunk_starts[g], self.chunk_starts[g + 1]
            try:
                col = self._pf.read_row_group(g, columns=[self.key]).column(0).combine_chunks()
            except Exception as e:
                raise MaekitError(
                    f"{self.where}: cannot read row group {g} ({e}); the file may be truncated or corrupt"
                ) from None
            col = col.slice(max(start, lo) - lo, min(stop, hi) - max(start, lo))
            values = col
            while (
                pa.types.is_list(values.type)
                or pa.types.is_large_list(values.type)
                or pa.types.is_fixed_size_list(values.type)
            ):
                values = values.flatten()
            flat = values.to_numpy(zero_copy_only=False)
            rows = len(col)
            size = int(np.prod(self._image_dims))
            if flat.size != rows * size:
                raise MaekitError(
                    f"{self.where}: row group {g} holds images of different "
                    f"sizes; expected {list(self._image_dims)} each"
                )
            out.append(flat.reshape(rows, *self._image_dims))
            g += 1
        x = np.concatenate(out) if len(out) > 1 else out[0]
        return _to_nchw(x, self.layout)


class NpyReader(ArrayReader):
    """A .npy array (memory-mapped) or an array of a .npz archive; labels from the archive or data.labels_path."""

    def __init__(self, path: Path, cfg: DataConfig):
        self.path = path
        try:
            if path.suffix == ".npz":
                z = np.load(path, allow_pickle=False)
                keys = list(z.files)
                self.key = cfg.images_key or next((k for k in IMAGE_KEYS if k in keys), None)
                if self.key is None or self.key not in keys:
                    want = f"array {cfg.images_key!r}" if cfg.images_key else f"one of {', '.join(IMAGE_KEYS)}"
                    raise MaekitError(f"{path}: no image {want} (arrays: {', '.join(keys)}); set data.images_key")
                arr = z[self.key]
                label_key = _label_key(cfg, set(keys), path)
                y = z[label_key] if label_key else None
            else:
                self.key = "array"
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                label_key, y = None, None
        except MaekitError:
            raise
        except ValueError as e:
            raise MaekitError(f"{path}: not a plain NumPy array file ({e}); object arrays are refused") from None
        except (OSError, EOFError) as e:
            raise MaekitError(f"{path}: cannot read the NumPy file ({e}); it may be truncated or corrupt") from None
        self._arr = arr
        self._array_layout(arr.shape, arr.dtype, cfg)
        self.chunk_starts = self._even_chunks()
        if cfg.labels_path:
            lp = Path(cfg.labels_path)
            if not lp.exists():
                raise MaekitError(f"data.labels_path {lp} does not exist")
            try:
                y = np.load(lp, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise MaekitError(f"{lp}: not a readable .npy labels file ({e})") from None
            label_key = str(lp)
        if y is not None:
            self.labels, self.label_key = _labels(y, self.n, f"{path}: {label_key}"), label_key

    def _read(self, start: int, stop: int) -> np.ndarray:
        return _to_nchw(np.array(self._arr[start:stop]), self.layout)


def open_readers(path: Path, cfg: DataConfig) -> dict[str, ArrayReader]:
    """{split: reader} for an hdf5 / parquet / npy source file."""
    if not path.exists():
        raise MaekitError(f"data path {path} does not exist")
    if path.is_dir():
        raise MaekitError(f"data path {path} is a folder; data.source={cfg.source} expects a file")
    if cfg.source == "hdf5":
        return open_hdf5(path, cfg)
    if cfg.source == "parquet":
        return {"train": ParquetReader(path, cfg)}
    if cfg.source == "npy":
        if path.suffix not in (".npy", ".npz"):
            raise MaekitError(f"{path}: data.source=npy expects a .npy or .npz file")
        return {"train": NpyReader(path, cfg)}
    raise MaekitError(f"data.source {cfg.source!r} has no file reader")


SUFFIX_SOURCES = {
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".npz": "npy",
}


def guess_source(path: Path) -> str:
    """Source type of a path from its name or contents (for `maekit data inspect`)."""
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if "data_batch_1" in names or {"train", "meta"} <= names:
            return "cifar"
        if any(n.endswith("idx3-ubyte") or n.endswith("idx3-ubyte.gz") for n in names):
            return "idx"
        return "folder"
    if path.suffix.lower() in SUFFIX_SOURCES:
        return SUFFIX_SOURCES[path.suffix.lower()]
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    raise MaekitError(
        f"{path}: unsupported file type (expected .h5/.hdf5, .parquet, "
        ".npy/.npz, an idx/CIFAR folder or an image folder)"
    )
