"""Checkpoints as one safetensors file: model weights (`model.<name>`), optimiser state (`optim.<i>.<key>`)
and JSON metadata in the header (format, kind, step, model config, data normalisation, optimiser groups, a
SHA-256 of the tensor bytes). Nothing is ever unpickled.

Writes are atomic: temporary file, fsync, then the current file becomes `<name>.prev.safetensors` and the
temporary one takes its place. A file whose checksum fails falls back to the `.prev` one with a warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load, save as st_save

from ..errors import MaekitError
from ..files import atomic_write_bytes, previous_path  # noqa: F401 (previous_path: the checkpoint's .prev copy)

FORMAT = "maekit-checkpoint-1"


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous().reshape(-1)
        h.update(k.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def pack(
    model_state: dict[str, torch.Tensor], meta: dict[str, Any], optimizer: torch.optim.Optimizer | None = None
) -> bytes:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    meta = dict(meta)
    if optimizer is not None:
        sd = optimizer.state_dict()
        for pid, st in sd["state"].items():
            for key, val in st.items():
                if not torch.is_tensor(val):
                    val = torch.tensor(val)
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
        meta["optim_param_groups"] = sd["param_groups"]
    meta["format"] = FORMAT
    meta["sha256"] = _digest(tensors)
    return st_save(tensors, metadata={"maekit": json.dumps(meta)})


def save(
    path: Path,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Atomically write a checkpoint (the previous file is kept as `.prev` until the next save)."""
    atomic_write_bytes(Path(path), pack(model_state, meta, optimizer), keep_previous=True)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MaekitError(f"checkpoint {path} is unreadable ({e.strerror or e})") from None
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("maekit", "null"))
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        # only now look for a pickle's signature: a valid file's header length can also start with 0x80
        if raw[:1] == b"\x80" or raw[:2] == b"PK":
            raise MaekitError(
                f"checkpoint {path} is a pickle/torch.save file; maekit "
                "only loads safetensors checkpoints and never unpickles"
            ) from None
        raise MaekitError(f"checkpoint {path} is not a valid safetensors file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MaekitError(f"checkpoint {path} has no maekit metadata (expected a checkpoint written by maekit)")
    if _digest(tensors) != meta.get("sha256"):
        raise MaekitError(f"checkpoint {path} is corrupt (checksum mismatch)")
    return tensors, meta


def load(path: Path, fallback: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint; a missing or corrupt file falls back to its `.prev` copy."""
    path = Path(path)
    try:
        if not path.exists():
            raise MaekitError(f"checkpoint {path} not found")
        return _read(path)
    except MaekitError as e:
        prev = previous_path(path)
        if fallback and prev.exists():
            warnings.warn(f"{e}; falling back to the previous checkpoint {prev}", stacklevel=2)
            return _read(prev)
        raise


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    groups = meta.get("optim_param_groups")
    if groups is None:
        raise MaekitError("checkpoint holds no optimiser state; it cannot be resumed")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise MaekitError(f"checkpoint optimiser state does not fit this model ({e})") from None


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """load_state_dict with a one-line error naming the checkpoint and the first mismatching tensors."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        detail = "; ".join(
            x
            for x in (
                f"shape mismatch: {', '.join(shapes[:3])}" if shapes else "",
                f"missing: {', '.join(missing[:3])}" if strict and missing else "",
                f"unexpected: {', '.join(unexpected[:3])}" if strict and unexpected else "",
            )
            if x
        )
        raise MaekitError(f"checkpoint {source} does not fit this architecture ({detail})")
    module.load_state_dict(state, strict=strict)
