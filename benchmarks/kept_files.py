"""Copies of a study's result files next to its doc, so that `--doc-only` rewrites the doc from the repository alone
(run directories under benchmarks/runs/ are not committed)."""

from __future__ import annotations

import shutil
from pathlib import Path


def kept(path: Path, copy: Path) -> Path | None:
    """Copy PATH to COPY when the run that wrote it exists; return the copy, or None when neither exists."""
    if path.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    return copy if copy.exists() else None
