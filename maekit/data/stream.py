"""Images read from disk on demand, for files larger than memory.

`StreamedImages` looks like an [N, C, H, W] tensor to the training code (indexing with a tensor of positions or
a slice returns a tensor) but keeps only a bounded number of the file's read units (HDF5 chunk ranges, Parquet
row groups) in an LRU cache. The epoch order that goes with it (`chunk_order`) shuffles the order of the read
units and, within a buffer of several units, the images: every image once per epoch, each unit read about once
per epoch, and memory bounded by the cache. Like every order in maekit it depends on (seed, epoch) only, so
resumption and DDP sharding work unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from .readers import ArrayReader

_MALLOC_SET = False


def _return_freed_memory() -> None:
    """Make glibc serve large allocations with mmap so that freed read buffers go back to the OS.

    glibc raises its mmap threshold (up to 32 MB) after the first large free, and later blocks of that size come
    from the heap, where a stream of equally sized, short-lived read buffers fragments it: measured here, peak RSS
    of a streamed pretraining went from 1.3 GB to well under 1 GB with the threshold fixed at 1 MB. No-op
    elsewhere (macOS, musl) and if already set by MALLOC_MMAP_THRESHOLD_.
    """
    global _MALLOC_SET
    if _MALLOC_SET:
        return
    _MALLOC_SET = True
    import ctypes
    import os

    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class StreamedImages:
    def __init__(
        self,
        reader: ArrayReader,
        rows: np.ndarray,
        prepare: Callable[[np.ndarray, int, int], np.ndarray],
        cache_bytes: float,
    ):
        self.reader = reader
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) > 1 and (np.diff(self.rows) <= 0).any():
            raise ValueError("rows must be strictly increasing")
        self.prepare = prepare
        starts = reader.chunk_starts
        self.chunk_of = np.searchsorted(starts, self.rows, side="right") - 1  # read unit of each position
        self.shape = (len(self.rows), *reader.shape)
        self.dtype = (
            torch.uint8 if reader.dtype == np.uint8 and not getattr(prepare, "to_float", False) else torch.float32
        )
        itemsize = 1 if self.dtype == torch.uint8 else 4
        unit = int(np.diff(starts).max()) * int(np.prod(reader.shape)) * itemsize
        # read units held at once: at least 2 for a split read in epoch order, 1 for evaluation splits (cache_bytes=0)
        self.capacity = max(2, int(cache_bytes // max(1, unit))) if cache_bytes else 1
        _return_freed_memory()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.reads = 0  # read units fetched from disk so far (for tests and benchmarks)

    @property
    def buffer_units(self) -> int:
        """Read units shuffled together: half the cache, so the current and the next buffer both fit."""
        return max(1, self.capacity // 2)

    def __len__(self) -> int:
        return len(self.rows)

    def _unit(self, k: int) -> np.ndarray:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        lo, hi = int(self.reader.chunk_starts[k]), int(self.reader.chunk_starts[k + 1])
        data = self.prepare(self.reader.read(lo, hi), lo, hi)
        if self.dtype == torch.float32 and data.dtype != np.float32:
            data = data.astype(np.float32)
        self.reads += 1
        self._cache[k] = data
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return data

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            pos = np.arange(len(self))[index]
        elif isinstance(index, int):
            return self[np.array([index])][0]
        else:
            pos = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        # gathered with numpy: small row copies, where torch's parallel indexing costs more than it saves
        out = np.empty((len(pos), *self.shape[1:]), dtype=np.uint8 if self.dtype == torch.uint8 else np.float32)
        units = self.chunk_of[pos]
        rows = self.rows[pos]
        for k in dict.fromkeys(units.tolist()):  # units in order of first use
            sel = np.nonzero(units == k)[0]
            out[sel] = self._unit(k)[rows[sel] - int(self.reader.chunk_starts[k])]
        return torch.from_numpy(out)


def chunk_order(chunk_of: np.ndarray, buffer_units: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of positions 0..n-1 (positions of one read unit contiguous, units non-decreasing): read
    units in shuffled order, grouped `buffer_units` at a time, images shuffled within each group."""
    n = len(chunk_of)
    edges = np.concatenate([[0], np.nonzero(np.diff(chunk_of))[0] + 1, [n]])
    units = torch.randperm(len(edges) - 1, generator=generator).tolist()
    parts = []
    for i in range(0, len(units), buffer_units):
        group = torch.cat([torch.arange(int(edges[u]), int(edges[u + 1])) for u in units[i : i + buffer_units]])
        parts.append(group[torch.randperm(len(group), generator=generator)])
    return torch.cat(parts)
