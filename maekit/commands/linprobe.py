"""maekit linprobe: frozen encoder, features computed once, a BatchNorm (no affine) + linear head (or an MLP)
trained on the cached features with the shared engine. pretrained=none probes a random encoder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LinprobeConfig
from ..engine.dist import DistInfo
from ..engine.optim import build_optimizer
from ..engine.train import MicroBatch
from ..engine.trainer import Task, Trainer, process
from ..metrics import accuracy
from ..runs import extract_features_sharded
from .downstream import build_encoder, finish_trained, open_run, prepare_setup, redraw_curves, stopped_early


def make_head(dim: int, num_classes: int, kind: str, hidden: int) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(
            nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes)
        )
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, num_classes))


def run(cfg: LinprobeConfig, out: Path, kind: str = "linprobe") -> dict:
    with process(cfg.train) as dist:
        return _run(cfg, out, kind, dist)


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
    n = len(setup.labelled)
    train_cfg = dataclasses.replace(cfg.train, batch_size=min(cfg.train.batch_size, n))
    trainer = Trainer(
        head,
        build_optimizer(head, cfg.optim),
        kind=kind,
        run=run,
        train=train_cfg,
        optim=cfg.optim,
        dist=DistInfo(rank=0, world=1, device=dist.device),  # the head trains in one process
        n_train=n,
        resume=cfg.resume,
    )
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

    print(
        f"{kind}: features of {n} labelled / {len(setup.val)} val / {len(setup.splits.test)} "
        f"test images in {t_feat:.1f}s; {cfg.head} head on {cfg.pool} features, encoder "
        f"{'from ' + str(cfg.pretrained) if cfg.pretrained else 'random'}",
        flush=True,
    )
    meta = {"kind": kind, "head": cfg.head, "pool": cfg.pool}
    curves = redraw_curves(out, f"{kind}, {n} labels")
    state = trainer.fit(Task(step_loss, evaluate, select=("val_accuracy", "max"), meta=meta, on_epoch_end=curves))
    if not trainer.finished:  # train.stop_after: checkpointed; the test waits for the finished run
        return stopped_early(run, kind, state.step, trainer.total_steps)
    trainer.load_best()
    head.eval()
    with torch.no_grad():
        logits = head(feats["test"].to(dist.device)).cpu()
    return finish_trained(run, kind, logits, setup, cfg, state, t_start, feature_time_s=t_feat)
