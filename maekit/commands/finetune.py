"""maekit finetune: the whole encoder plus a head, trained on labelled images (pretrained=none: from scratch
with identical architecture, schedule, data and budget)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from .. import plots
from ..config import FinetuneConfig
from ..data.transforms import eval_batch_size, mixup_cutmix, normalize, random_resized_crop_flip
from ..engine import checkpoint
from ..engine.dist import cleanup
from ..engine.optim import build_optimizer, lr_at, peak_lr
from ..engine.train import MicroBatch, TrainState, autocast, fit, resume_state, steps_per_epoch
from ..metrics import accuracy
from ..models.cnn import SmallCNN
from .downstream import build_encoder, dist_for, finish, open_run, prepare_setup, stopped_early


@torch.no_grad()
def predict(model, images: torch.Tensor, mean, std, batch_size: int | None = None) -> torch.Tensor:
    """uint8 images [N, C, H, W] -> logits [N, K]."""
    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or eval_batch_size(images)
    return torch.cat(
        [
            model(normalize(images[i : i + batch_size].to(device), mean, std)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def run(cfg: FinetuneConfig, out: Path, kind: str = "finetune") -> dict:
    dist = dist_for(cfg)
    try:
        return _run(cfg, out, kind, dist)
    finally:
        cleanup()


def _run(cfg: FinetuneConfig, out: Path, kind: str, dist) -> dict:
    t_start = time.perf_counter()
    setup = prepare_setup(cfg)
    run = open_run(cfg, out, kind, dist, setup.splits)
    if cfg.arch == "cnn":
        torch.manual_seed(cfg.train.seed)
        model = SmallCNN(setup.splits.channels, setup.num_classes, cfg.cnn_width).to(dist.device)
    else:
        model = build_encoder(
            setup, setup.num_classes, cfg.pool, cfg.model.drop_path, cfg.train.seed, cfg.patch_dropout
        ).to(dist.device)
    optimizer = build_optimizer(model, cfg.optim, setup.model_cfg.depth)
    eff_batch = cfg.train.batch_size * cfg.train.accum_steps * dist.world
    peak = peak_lr(cfg.optim, eff_batch)
    state = resume_state(out, model, optimizer, run, cfg.resume, eff_batch)
    wrapped = DDP(model) if dist.enabled else model
    mean, std = setup.mean.to(dist.device), setup.std.to(dist.device)
    images, labels = setup.labelled.images, setup.labelled.labels
    aug = cfg.data.augment
    n = len(images)
    spe = steps_per_epoch(n, cfg.train, dist.world)

    def step_loss(mb: MicroBatch) -> torch.Tensor:
        x = normalize(images[mb.indices].to(dist.device), mean, std)
        x = random_resized_crop_flip(
            x, mb.generator, tuple(aug.crop_scale), tuple(aug.crop_ratio), aug.hflip, mb.global_batch, mb.offset
        )
        x, lam = mixup_cutmix(x, mb.generator, cfg.mixup, cfg.cutmix)
        with autocast(dist.device, cfg.train.precision):
            logits = wrapped(x).float()
        y = labels[mb.indices].to(dist.device)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if lam < 1.0:  # each image is part its partner's (the reversed batch's) class
            loss = lam * loss + (1.0 - lam) * F.cross_entropy(logits, y.flip(0), label_smoothing=cfg.label_smoothing)
        return loss

    def evaluate(epoch: int) -> dict:
        logits = predict(model, setup.val.images, mean, std)
        return {
            "val_loss": float(F.cross_entropy(logits, setup.val.labels)),
            "val_accuracy": accuracy(logits, setup.val.labels),
        }

    meta = {
        "kind": kind,
        "model_config": asdict(setup.model_cfg),
        "arch": cfg.arch,
        "num_classes": setup.num_classes,
        "pool": cfg.pool,
        "effective_batch": eff_batch,
        "data": {
            "mean": setup.mean.tolist(),
            "std": setup.std.tolist(),
            "class_names": setup.splits.class_names,
            "dtype": setup.splits.dtype,
            "channel_names": setup.splits.channel_names,
        },
    }

    def save(name: str, st: TrainState, epoch: int) -> None:
        if dist.is_main:
            checkpoint.save(
                out / "checkpoints" / f"{name}.safetensors",
                model.state_dict(),
                meta | {"train_state": st.to_dict(), "epoch": epoch},
                optimizer,
            )

    if dist.is_main:
        encoder = "encoder from " + str(cfg.pretrained) if cfg.pretrained else "encoder randomly initialised"
        print(
            f"{kind}: {n} labelled images ({cfg.labels:g}), {len(setup.val)} val, "
            f"{'small CNN' if cfg.arch == 'cnn' else encoder}, peak lr {peak:.2e}, layer "
            f"decay {cfg.optim.layer_decay}, {spe} steps/epoch x {cfg.train.epochs} epochs",
            flush=True,
        )
    state = fit(
        wrapped,
        optimizer,
        n_train=n,
        step_loss=step_loss,
        evaluate=evaluate,
        select=("val_accuracy", "max"),
        save=save,
        lr_fn=lambda step: lr_at(step, spe, cfg.train.epochs, cfg.optim, peak),
        cfg=cfg.train,
        clip_grad=cfg.optim.clip_grad,
        run=run,
        dist=dist,
        state=state,
        # curves redrawn after each evaluation (the last epoch has one), not every epoch: a drawing costs ~0.5 s
        on_epoch_end=lambda e, m: (
            dist.is_main and bool(m) and plots.training_curves(out, out / "curves.png", f"{kind}, {n} labels")
        ),
        desc=kind,
    )
    if state.step < spe * cfg.train.epochs:  # train.stop_after: checkpointed; the test waits for the finished run
        return stopped_early(run, kind, state.step, spe * cfg.train.epochs)
    tensors, _ = checkpoint.load(out / "checkpoints" / "best.safetensors")
    model.load_state_dict(checkpoint.model_state(tensors))
    logits = predict(model, setup.splits.test.images, mean, std)
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
            "time_s": time.perf_counter() - t_start,
        },
    )
