"""torchrun environment, rank-0 printing and all-reduce helpers. No home-made distributed machinery."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from ..errors import MaekitError

            raise MaekitError("train.device=cuda but no CUDA device is available (use train.device=auto or cpu)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device_pref: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), or run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if world > 1 and not td.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def init_process(device: str, threads: int | None) -> DistInfo:
    """`setup`, and on CPU `threads` (default: this machine's cores shared among its processes) for torch."""
    dist = setup(device)
    if dist.device.type == "cpu":
        n = threads or max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        torch.set_num_threads(n)
    return dist


_HELD = False


@contextlib.contextmanager
def held(device_pref: str = "auto"):
    """Join the process group for a command made of several runs (compare): the runs inside share the group,
    and their cleanup() leaves it alone until the outer command ends."""
    global _HELD
    info = setup(device_pref)
    _HELD = True
    try:
        yield info
    finally:
        _HELD = False
        cleanup()


def cleanup() -> None:
    if not _HELD and td.is_available() and td.is_initialized():
        td.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over the processes (a new tensor on `t`'s device); `t` itself outside torchrun."""
    if td.is_available() and td.is_initialized():
        # NCCL reduces CUDA tensors only: the small host-side totals (losses, counts) travel through the GPU
        dev = torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else t.device
        out = t.to(dev, copy=True)
        td.all_reduce(out, op=td.ReduceOp.SUM)
        return out.to(t.device)
    return t


def barrier() -> None:
    if td.is_available() and td.is_initialized():
        td.barrier()
