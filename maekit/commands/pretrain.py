"""maekit pretrain: MAE self-supervised pretraining; writes checkpoints, metrics, reconstructions, plots."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import plots
from ..config import PretrainConfig, save_yaml, to_dict
from ..data.loader import load_splits
from ..data.transforms import augment, normalize
from ..engine import checkpoint
from ..engine.optim import build_optimizer
from ..engine.rundir import RunDir, prepare
from ..engine.train import MicroBatch, autocast
from ..engine.trainer import Task, Trainer, process
from ..errors import MaekitError
from ..models.mae import MAE
from ..runs import checkpoint_meta, fixed_noise, load_run, recon_loss
from .common import eval_subset, model_config_of, spread, write_recon_grid

EVAL_MASK_SEED = 1234


def run(cfg: PretrainConfig, out: Path) -> Path:
    """Pretrain into run directory `out` (new, or resumed when cfg.resume); returns `out`."""
    with process(cfg.train) as dist:
        return _run(cfg, out, dist)


def _run(cfg: PretrainConfig, out: Path, dist) -> Path:
    if dist.is_main:
        prepare(out, cfg.resume, "pretrain")
    splits = load_splits(cfg.data)
    mcfg = model_config_of(cfg, splits)
    if splits.channels != mcfg.in_chans or tuple(splits.image_size) != tuple(mcfg.img_size):
        raise MaekitError(
            f"data {splits.sources.get('train', cfg.data.path)} have {splits.channels} channels of "
            f"{splits.image_size[0]}x{splits.image_size[1]} but the model expects {mcfg.in_chans} "
            f"of {mcfg.img_size[0]}x{mcfg.img_size[1]} (model.in_chans / model.img_size)"
        )
    torch.manual_seed(cfg.train.seed)
    model = MAE(mcfg).to(dist.device)
    if cfg.init:
        init = load_run(cfg.init, "best")
        checkpoint.load_weights(model, init.state, str(cfg.init))
    run = RunDir(out, active=dist.is_main)
    trainer = Trainer(
        model,
        build_optimizer(model, cfg.optim, mcfg.depth),
        kind="pretrain",
        run=run,
        train=cfg.train,
        optim=cfg.optim,
        dist=dist,
        n_train=len(splits.train),
        resume=cfg.resume,
    )
    eff_batch, peak = trainer.effective_batch, trainer.peak_lr
    n_train, spe = len(splits.train), trainer.steps_per_epoch
    mean, std = splits.mean.to(dist.device), splits.std.to(dist.device)
    aug = cfg.data.augment
    L = mcfg.num_patches
    train_images = splits.train.images
    trial = normalize(train_images[torch.arange(min(cfg.train.batch_size, n_train))].to(dist.device), mean, std)
    trial_noise = torch.rand(trial.shape[0], L, generator=torch.Generator().manual_seed(0)).to(dist.device)
    precision = trainer.choose_precision(lambda m: m(trial, noise=trial_noise)[0])
    if dist.is_main:
        save_yaml(to_dict(cfg) | {"out": str(out)}, out / "config.yaml")
        splits.save_rows(out / "splits.npz")
        run.write_info("pretrain", {"effective_batch": eff_batch, "world_size": dist.world, "precision": precision})
        run.tb(purge_step=trainer.state.step + 1 if trainer.state.step else None)

    def step_loss(mb: MicroBatch) -> torch.Tensor:
        x = normalize(train_images[mb.indices].to(dist.device), mean, std)
        x = augment(x, aug, mb.generator, mb.global_batch, mb.offset)
        noise = torch.rand(mb.global_batch, L, generator=mb.generator)[mb.offset : mb.offset + x.shape[0]]
        with autocast(dist.device, precision):
            loss, _, _ = trainer.wrapped(x, noise=noise.to(dist.device))
        return loss.float()

    n_eval = cfg.train.eval_samples
    evals = {
        name: eval_subset(getattr(splits, name), n_eval, cfg.data.split_seed + i)
        for i, name in enumerate(("train", "val", "test"))
    }
    noises = {name: fixed_noise(len(s), L, EVAL_MASK_SEED + i) for i, (name, s) in enumerate(evals.items())}

    def evaluate(epoch: int) -> dict:
        return {
            f"{name}_recon_loss": recon_loss(model, s.images, mean, std, noises[name], dist=dist)
            for name, s in evals.items()
        }

    meta = checkpoint_meta(
        "mae", mcfg, splits, cfg.data, {"effective_batch": eff_batch, "peak_lr": peak, "steps_per_epoch": spe}
    )
    grid = spread(len(evals["test"]), 8)  # test images of every reconstruction grid

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        plots.loss_curves(out, out / "loss.png")
        if (epoch + 1) % cfg.train.recon_every == 0 or epoch + 1 == cfg.train.epochs:
            model.eval()
            write_recon_grid(
                model,
                evals["test"].images[grid],
                splits.mean,
                splits.std,
                noises["test"][grid],
                out / f"recon_epoch{epoch + 1:03d}.png",
                f"test images, mask ratio {mcfg.mask_ratio}, epoch {epoch + 1}",
            )
            model.train()

    if dist.is_main:
        print(
            f"pretrain: {n_train} train / {len(splits.val)} val / {len(splits.test)} test images "
            f"{splits.channels}x{splits.image_size[0]}x{splits.image_size[1]}, "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {mcfg.num_patches} patches "
            f"of {mcfg.patch_size}x{mcfg.patch_size}, mask {mcfg.mask_ratio}, effective batch "
            f"{eff_batch} ({dist.world} process(es)), peak lr {peak:.2e}, {spe} steps/epoch, {trainer.precision_note}"
            + (f", resuming at step {trainer.state.step}" if trainer.state.step else ""),
            flush=True,
        )
    task = Task(step_loss, evaluate, select=("val_recon_loss", "min"), meta=meta, on_epoch_end=on_epoch_end)
    if splits.train.streamed:
        task.units = (train_images.chunk_of, train_images.buffer_units)
    state = trainer.fit(task)
    run.close()
    if dist.is_main:
        if state.best is not None:
            print(f"pretrain: best val reconstruction loss {state.best:.4f} at epoch {state.best_epoch + 1}")
        if not trainer.finished:
            print(
                f"pretrain: stopped at step {state.step} of {trainer.total_steps}; continue with resume=true out={out}"
            )
        print(f"run directory: {out}")
        for f in (
            "config.yaml",
            "metrics.jsonl",
            "loss.png",
            "checkpoints/best.safetensors",
            "checkpoints/last.safetensors",
            "tensorboard/",
        ):
            print(f"  {out / f}")
        grids = sorted(out.glob("recon_epoch*.png"))
        if grids:
            print(f"  {grids[-1]}")
    return out
