"""What a run ran on: Python, torch and maekit versions, the git commit of the maekit source, CPU / GPU,
threads. Recorded in run.json (and sweep.json) when a run starts; shown by `maekit report`."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=None)
def git_commit(path: Path | None = None) -> str | None:
    """The commit checked out where maekit's source lives ('+dirty' with uncommitted changes), or None.
    Asked once per process (the source a process runs is the one it imported, whatever is checked out later)."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def available_memory() -> int | None:
    """Bytes of memory this process can still allocate without swapping (Linux MemAvailable; else physical
    memory; None when unknown). Checked before allocations a file's header asks for."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU features that decide how fast training can run: fp32 SIMD width, and native bf16 arithmetic.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16_cpu(flags: frozenset[str] | set[str]) -> bool:
    """True where bf16 matmuls run natively (AVX-512 BF16 or AMX); elsewhere oneDNN emulates bf16, which on an
    AVX2-only CPU was measured ~100x slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def environment() -> dict[str, Any]:
    import torch

    from .version import __version__

    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "maekit": __version__,
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in cpu_flags()],
        "gpu": ", ".join(gpus) if gpus else None,
    }
