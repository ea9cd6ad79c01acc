"""A run directory: resolved config.yaml, metrics.jsonl, TensorBoard events, checkpoints/, pictures.
Only rank 0 writes (the other ranks get a RunDir whose writes do nothing)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import MaekitError
from ..files import atomic_write_text


def default_out(config_path: str | None, command: str) -> Path:
    stem = Path(config_path).stem if config_path else command
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


# What a run writes before its first checkpoint (RunDir makes checkpoints/ before anything else, and every
# atomic write goes through `<name>.tmp`): a directory holding only these is a run killed in its first seconds.
_BEFORE_FIRST_CHECKPOINT = {"checkpoints", "config.yaml", "splits.npz", "run.json", "metrics.jsonl", "tensorboard"}


def _never_checkpointed(out: Path) -> bool:
    ckpts = out / "checkpoints"
    if not ckpts.is_dir() or any(not p.name.endswith(".tmp") for p in ckpts.iterdir()):
        return False
    return all(p.name in _BEFORE_FIRST_CHECKPOINT or p.name.endswith(".tmp") for p in out.iterdir())


def prepare(out: Path, resume: bool, kind: str) -> None:
    """Check that `out` may be used: new or empty, or (resume=true) a run of the same kind. The leftovers of
    a run that stopped before its first checkpoint are removed (nothing there to resume), so it starts afresh."""
    if out.exists() and not out.is_dir():
        raise MaekitError(f"output path {out} exists and is not a directory")
    if out.is_dir() and _never_checkpointed(out):
        for p in out.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    has_files = out.is_dir() and any(out.iterdir())
    if has_files and not resume:
        raise MaekitError(
            f"run directory {out} already holds files; pass resume=true to continue it or choose another out=DIR"
        )
    if has_files and resume:
        info = out / "run.json"
        if not info.exists():
            raise MaekitError(f"{out} is not a maekit run directory (no run.json); cannot resume it")
        found = json.loads(info.read_text()).get("kind")
        if found != kind:
            raise MaekitError(f"{out} holds a {found!r} run, not a {kind!r} run; cannot resume it as {kind}")


class RunDir:
    def __init__(self, path: Path, active: bool = True, tensorboard: bool = True):
        self.path = Path(path)
        self.active = active
        self._tb = None
        self._tb_wanted = tensorboard
        if active:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "checkpoints").mkdir(exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_info(self, kind: str, extra: dict[str, Any] | None = None) -> None:
        if self.active:
            from ..environment import environment

            atomic_write_text(
                self.path / "run.json", json.dumps({"kind": kind, **(extra or {}), "env": environment()}, indent=1)
            )

    def truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after `step` (written by a run that died after its last checkpoint)."""
        f = self.path / "metrics.jsonl"
        if not self.active or not f.exists():
            return
        keep = [line for line in f.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(f, "".join(line + "\n" for line in keep))

    def tb(self, purge_step: int | None = None):
        if self._tb is None and self.active and self._tb_wanted:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tensorboard"), purge_step=purge_step)
        return self._tb

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl and the numeric fields to TensorBoard."""
        if not self.active:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        tb = self.tb()
        if tb is not None and "step" in record:
            for k, v in record.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    f = Path(path) / "metrics.jsonl" if Path(path).is_dir() else Path(path)
    if not f.exists():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
