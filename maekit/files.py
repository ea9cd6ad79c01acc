"""Files that are never half-written: write to a temporary file, fsync, then rename over the target (keeping the
previous version as `<name>.prev<suffix>` when asked). Every file maekit writes goes through here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import MaekitError


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: some filesystems cannot fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def previous_path(path: Path) -> Path:
    """Where the version before the last write is kept: last.safetensors -> last.prev.safetensors."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_write_bytes(path: Path, data: bytes, keep_previous: bool = False) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file, never a partial one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MaekitError(f"could not write {path} ({e.strerror or e}); the previous file is intact") from None


def commit_file(tmp: Path, path: Path) -> None:
    """Finish a large file written in place at `tmp` (too big for atomic_write_bytes): fsync it, then rename it
    over `path`, so that `path` is either absent (or the old file) or complete."""
    tmp, path = Path(tmp), Path(path)
    try:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        raise MaekitError(f"could not write {path} ({e.strerror or e}); the previous file is intact") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), text.encode())


def save_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))
