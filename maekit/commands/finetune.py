"""maekit finetune: the whole encoder plus a head, trained on labelled images (pretrained=none: from scratch
with identical architecture, schedule, data and budget)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import FinetuneConfig
from ..data.transforms import augment, mixup_cutmix, normalize
from ..engine.optim import build_optimizer
from ..engine.train import MicroBatch, autocast
from ..engine.trainer import Task, Trainer, process
from ..metrics import accuracy
from ..models.cnn import SmallCNN
from ..runs import predict
from .downstream import build_encoder, finish_trained, open_run, prepare_setup, redraw_curves, stopped_early


def run(cfg: FinetuneConfig, out: Path, kind: str = "finetune") -> dict:
    with process(cfg.train) as dist:
        return _run(cfg, out, kind, dist)


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
    n = len(setup.labelled)
    trainer = Trainer(
        model,
        build_optimizer(model, cfg.optim, setup.model_cfg.depth),
        kind=kind,
        run=run,
        train=cfg.train,
        optim=cfg.optim,
        dist=dist,
        n_train=n,
        resume=cfg.resume,
    )
    t_start -= trainer.resumed_s  # a resumed fine-tune's time_s counts the processes before the stop too
    mean, std = setup.mean.to(dist.device), setup.std.to(dist.device)
    images, labels = setup.labelled.images, setup.labelled.labels
    first = torch.arange(min(cfg.train.batch_size, n))
    trial_x, trial_y = normalize(images[first].to(dist.device), mean, std), labels[first].to(dist.device)
    precision = trainer.choose_precision(lambda m: F.cross_entropy(m(trial_x).float(), trial_y))
    if dist.is_main:
        run.write_info(kind, {"precision": precision, "world_size": dist.world})
    aug = cfg.data.augment

    def step_loss(mb: MicroBatch) -> torch.Tensor:
        x = normalize(images[mb.indices].to(dist.device), mean, std)
        x = augment(x, aug, mb.generator, mb.global_batch, mb.offset)
        x, lam = mixup_cutmix(x, mb.generator, cfg.mixup, cfg.cutmix)
        with autocast(dist.device, precision):
            logits = trainer.wrapped(x).float()
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
        "effective_batch": trainer.effective_batch,
        "data": {
            "mean": setup.mean.tolist(),
            "std": setup.std.tolist(),
            "class_names": setup.splits.class_names,
            "dtype": setup.splits.dtype,
            "channel_names": setup.splits.channel_names,
        },
    }
    if dist.is_main:
        encoder = "encoder from " + str(cfg.pretrained) if cfg.pretrained else "encoder randomly initialised"
        print(
            f"{kind}: {n} labelled images ({cfg.labels:g}), {len(setup.val)} val, "
            f"{'small CNN' if cfg.arch == 'cnn' else encoder}, peak lr {trainer.peak_lr:.2e}, layer "
            f"decay {cfg.optim.layer_decay}, {trainer.steps_per_epoch} steps/epoch x {cfg.train.epochs} epochs, "
            f"{trainer.precision_note}",
            flush=True,
        )
    curves = redraw_curves(out, f"{kind}, {n} labels")
    state = trainer.fit(Task(step_loss, evaluate, select=("val_accuracy", "max"), meta=meta, on_epoch_end=curves))
    if not trainer.finished:  # train.stop_after: checkpointed; the test waits for the finished run
        return stopped_early(run, kind, state.step, trainer.total_steps)
    trainer.load_best()
    logits = predict(model, setup.splits.test.images, mean, std)
    return finish_trained(run, kind, logits, setup, cfg, state, t_start)
