"""Parameter groups (no weight decay on norms, biases, position embeddings, cls and mask tokens;
optional layer-wise LR decay), AdamW, and the per-step learning-rate schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from ..config import OptimConfig

_NO_DECAY = ("cls_token", "mask_token", "pos_embed")
_BLOCK = re.compile(r"(?:^|encoder\.)blocks\.(\d+)\.")


def layer_id(name: str, num_layers: int) -> int:
    """0 for the embeddings, i+1 for encoder block i, num_layers+1 for everything after (norm, head, decoder)."""
    base = name.removeprefix("encoder.")
    if base.startswith(("patch_embed", "cls_token", "pos_embed")):
        return 0
    m = _BLOCK.match(name)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0, num_layers: int = 0) -> list[dict]:
    """AdamW groups with `lr_scale` = layer_decay ** (num_layers + 1 - layer_id)."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or any(k in name for k in _NO_DECAY)
        lid = layer_id(name, num_layers) if layer_decay < 1.0 else 0
        key = (lid, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - lid) if layer_decay < 1.0 else 1.0
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": scale,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, cfg: OptimConfig, num_layers: int = 0) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay, num_layers)
    for g in groups:
        del g["names"]
    return torch.optim.AdamW(groups, lr=0.0, betas=(cfg.betas[0], cfg.betas[1]))


def peak_lr(cfg: OptimConfig, effective_batch: int) -> float:
    """`optim.lr` if set, else base_lr * effective_batch / 256 (the MAE paper's linear scaling rule)."""
    return cfg.lr if cfg.lr is not None else cfg.base_lr * effective_batch / 256


def lr_at(step: int, steps_per_epoch: int, epochs: int, cfg: OptimConfig, peak: float) -> float:
    """Learning rate for optimiser step `step` (0-based): linear warmup, then cosine to min_lr, or cosine
    with warm restarts (cycle lengths restart_epochs * restart_mult**k), or constant."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.schedule == "constant":
        return peak
    t = (step - warmup) / steps_per_epoch  # epochs since warmup
    if cfg.schedule == "cosine":
        total = max(epochs - cfg.warmup_epochs, 1e-8)
        frac = min(t / total, 1.0)
    else:
        length = cfg.restart_epochs
        while t >= length:
            t -= length
            length *= cfg.restart_mult
        frac = t / length
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
