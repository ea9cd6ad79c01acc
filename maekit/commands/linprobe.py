"""maekit linprobe: frozen encoder, features computed once, a BatchNorm (no affine) + linear head (or an MLP)
trained on the cached features with the shared engine. pretrained=none probes a random encoder."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import plots
from ..config import LinprobeConfig
from ..engine import checkpoint
from ..engine.dist import DistInfo, cleanup
from ..engine.optim import build_optimizer, lr_at, peak_lr
from ..engine.train import MicroBatch, TrainState, fit, resume_state, steps_per_epoch
from ..metrics import accuracy
from .downstream import (
    build_encoder,
    dist_for,
    extract_features_sharded,
    finish,
    open_run,
    prepare_setup,
    stopped_early,
)


def make_head(dim: int, num_classes: int, kind: str, hidden: int) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(
            nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes)
        )
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, num_classes))


def run(cfg: LinprobeConfig, out: Path, kind: str = "linprobe") -> dict:
    dist = dist_for(cfg)
    try:
        return _run(cfg, out, kind, dist)
    finally:
        cleanup()


def _run(cfg: LinprobeConfig, out: Path, kind: str, dist: DistInfo) -> dict:
    t_start = time.perf_counter()
    setup = prepare_setup(cfg)
    run = open_run(cfg, out, kind, dist, setup.splits)
    encoder = build_encoder(setup, 0, cfg.pool, 0.0, cfg.train.seed).to(dist.device)
    for p in encoder.parameters():
        p.requires_grad_(False)
    t0 = time.perf_counter()
    feats = {
        name: extract_features_sharded(encoder, s.images, setup.mean, setup.std, cfg.pool, dist)
        for name, s in (("train", setup.labelled), ("val", setup.val), ("test", setup.splits.test))
    }
    t_feat = time.perf_counter() - t0
    if not dist.is_main:
        return {}  # under DDP the processes share the feature extraction; the head trains in seconds on rank 0
    torch.manual_seed(cfg.train.seed)
    head = make_head(encoder.embed_dim, setup.num_classes, cfg.head, cfg.mlp_hidden).to(dist.device)
    optimizer = build_optimizer(head, cfg.optim)
    n = len(setup.labelled)
    batch = min(cfg.train.batch_size, n)
    train_cfg = (
        cfg.train if batch == cfg.train.batch_size else type(cfg.train)(**{**cfg.train.__dict__, "batch_size": batch})
    )
    spe = steps_per_epoch(n, train_cfg)  # the head trains in one process
    peak = peak_lr(cfg.optim, batch * train_cfg.accum_steps)
    x_train, y_train = feats["train"].to(dist.device), setup.labelled.labels.to(dist.device)

    def step_loss(mb: MicroBatch) -> torch.Tensor:
        return F.cross_entropy(head(x_train[mb.indices]), y_train[mb.indices], label_smoothing=cfg.label_smoothing)

    def evaluate(epoch: int) -> dict:
        logits = head(feats["val"].to(dist.device)).cpu()
        return {
            "val_loss": float(F.cross_entropy(logits, setup.val.labels)),
            "val_accuracy": accuracy(logits, setup.val.labels),
            "train_accuracy": accuracy(head(x_train).cpu(), setup.labelled.labels),
        }

    def save(name: str, st: TrainState, epoch: int) -> None:
        if dist.is_main:
            checkpoint.save(
                out / "checkpoints" / f"{name}.safetensors",
                head.state_dict(),
                {"kind": kind, "head": cfg.head, "pool": cfg.pool, "train_state": st.to_dict(), "epoch": epoch},
                optimizer,
            )

    print(
        f"{kind}: features of {n} labelled / {len(setup.val)} val / {len(setup.splits.test)} "
        f"test images in {t_feat:.1f}s; {cfg.head} head on {cfg.pool} features, encoder "
        f"{'from ' + str(cfg.pretrained) if cfg.pretrained else 'random'}",
        flush=True,
    )
    state = fit(
        head,
        optimizer,
        n_train=n,
        step_loss=step_loss,
        evaluate=evaluate,
        select=("val_accuracy", "max"),
        save=save,
        lr_fn=lambda step: lr_at(step, spe, train_cfg.epochs, cfg.optim, peak),
        cfg=train_cfg,
        clip_grad=cfg.optim.clip_grad,
        run=run,
        dist=DistInfo(rank=0, world=1, device=dist.device),
        state=resume_state(out, head, optimizer, run, cfg.resume),
        # curves redrawn after each evaluation (the last epoch has one), not every epoch: a drawing costs ~0.5 s
        on_epoch_end=lambda e, m: (
            dist.is_main and bool(m) and plots.training_curves(out, out / "curves.png", f"{kind}, {n} labels")
        ),
        desc=kind,
    )
    if state.step < spe * train_cfg.epochs:  # train.stop_after: checkpointed; the test waits for the finished run
        return stopped_early(run, kind, state.step, spe * train_cfg.epochs)
    tensors, _ = checkpoint.load(out / "checkpoints" / "best.safetensors")
    head.load_state_dict(checkpoint.model_state(tensors))
    head.eval()
    with torch.no_grad():
        logits = head(feats["test"].to(dist.device)).cpu()
    return finish(
        run,
        kind,
        logits,
        setup.splits.test.labels,
        setup.splits.class_names,
        {
            "labels": n,
            "seed": cfg.train.seed,
            "label_seed": cfg.label_seed,
            "val_accuracy": state.best,
            "best_epoch": state.best_epoch + 1,
            "pretrained": cfg.pretrained,
            "feature_time_s": t_feat,
            "time_s": time.perf_counter() - t_start,
        },
    )
