"""A training run's whole life, shared by pretrain, finetune and linprobe: the process (`process`), then a `Trainer`
that resumes, wraps the model for DDP, owns the LR schedule (steps per epoch counted once), runs `train.fit` with a
command's `Task`, names and saves the `last` / `best` checkpoints, and reloads `best` at the end.

A command brings the model, its optimiser (it knows the layer-wise decay depth), the run directory and a `Task`:
its micro-batch loss, its evaluation, which metric is best and what its checkpoints say about the model."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..config import OptimConfig, TrainConfig
from . import checkpoint
from .dist import DistInfo, all_reduce_sum, cleanup, init_process
from .optim import lr_at, peak_lr
from .rundir import RunDir
from .train import MicroBatch, TrainState, choose_precision, fit, resume_state, steps_per_epoch


@contextlib.contextmanager
def process(train: TrainConfig) -> Iterator[DistInfo]:
    """This process joined to torchrun's group (torch's CPU threads set) for one run; left when the run ends
    (unless a command of several runs holds the group: engine/dist.py:held)."""
    dist = init_process(train.device, train.threads)
    try:
        yield dist
    finally:
        cleanup()


@dataclass
class Task:
    """What a command trains for."""

    step_loss: Callable[[MicroBatch], torch.Tensor]  # a micro-batch's loss; use Trainer.wrapped for the forward
    evaluate: Callable[[int], dict]  # epoch -> metrics (run in eval mode without gradients)
    select: tuple[str, str]  # (metric, "min" | "max"): the one that picks the `best` checkpoint
    meta: dict[str, Any]  # checkpoint metadata; the trainer adds train_state and epoch
    on_epoch_end: Callable[[int, dict], None] | None = None  # main process only; metrics are {} without evaluation
    units: tuple | None = None  # streamed data: (read unit per image, units per buffer), see train.fit


class Trainer:
    """One training run of `model` (unwrapped: what is checkpointed) with `optimizer` into `run`.

    Constructing it resumes from `run`'s last checkpoint when `resume` (rescaling the step count to a changed
    effective batch) and wraps the model in DDP over `dist`'s processes; `fit` trains, `load_best` reloads."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        kind: str,
        run: RunDir,
        train: TrainConfig,
        optim: OptimConfig,
        dist: DistInfo,
        n_train: int,
        resume: bool,
    ) -> None:
        self.model, self.optimizer, self.kind, self.run = model, optimizer, kind, run
        self.train, self.optim, self.dist, self.n_train = train, optim, dist, n_train
        self.effective_batch = train.batch_size * train.accum_steps * dist.world
        self.peak_lr = peak_lr(optim, self.effective_batch)
        if optim.schedule != "constant" and optim.warmup_epochs >= train.epochs and dist.is_main:
            # e.g. a 5-epoch fine-tune with the default 5 warmup epochs: it trains, but not on the intended schedule
            print(
                f"{kind}: warning: optim.warmup_epochs {optim.warmup_epochs:g} >= train.epochs {train.epochs}: the "
                "learning rate rises for the whole run and never decays (set a shorter optim.warmup_epochs)",
                file=sys.stderr,
                flush=True,
            )
        self.state = resume_state(run.path, model, optimizer, run, resume, self.effective_batch)
        # a resumed run's time goes on from its checkpoint's (the time between the stop and the resume is not counted)
        self.resumed_s, self._started = self.state.elapsed_s, time.perf_counter()
        # after resuming: DDP's constructor hands rank 0's (restored) weights to every process
        self.wrapped = DDP(model) if dist.enabled else model
        self.precision, self.precision_note = choose_precision(train.precision, dist.device)  # no trial yet

    def choose_precision(self, loss_of: Callable[[nn.Module], torch.Tensor]) -> str:
        """Set and return `self.precision`, what train.precision means for this run (train.choose_precision, with
        `loss_of(model)` as the timed trial of 'auto'); `self.precision_note` says why. Every process trains in
        rank 0's choice."""
        train, dist, kept = self.train, self.dist, self.state.precision
        if train.precision == "auto" and kept in ("fp32", "bf16") and self.state.step:
            # a resumed run continues as the uninterrupted one would: in the precision its trial chose
            self.precision, self.precision_note = kept, f"{kept} (precision=auto, kept from the resumed run)"
            return self.precision
        self.precision, self.precision_note = choose_precision(train.precision, dist.device, self.model, loss_of)
        if dist.enabled and train.precision == "auto":
            rank0_bf16 = all_reduce_sum(torch.tensor([float(dist.is_main and self.precision == "bf16")]))
            self.precision = "bf16" if rank0_bf16.item() > 0 else "fp32"
        self.state.precision = self.precision
        return self.precision

    @cached_property
    def steps_per_epoch(self) -> int:
        # counted on first use, so that a too-small data set fails where it always did (after the run files)
        return steps_per_epoch(self.n_train, self.train, self.dist.world)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.train.epochs

    @property
    def finished(self) -> bool:
        """False after a train.stop_after (or a stop before fit): the run continues with resume=true."""
        return self.state.step >= self.total_steps

    def lr(self, step: int) -> float:
        return lr_at(step, self.steps_per_epoch, self.train.epochs, self.optim, self.peak_lr)

    @property
    def elapsed_s(self) -> float:
        """Seconds of this run since its first process built its trainer, the processes before a resume included."""
        return self.resumed_s + time.perf_counter() - self._started

    def checkpoint_path(self, name: str) -> Path:
        return self.run.checkpoints / f"{name}.safetensors"

    def fit(self, task: Task) -> TrainState:
        def save(name: str, state: TrainState, epoch: int) -> None:
            state.elapsed_s = self.elapsed_s
            if self.dist.is_main:
                meta = task.meta | {"train_state": state.to_dict(), "epoch": epoch}
                checkpoint.save(self.checkpoint_path(name), self.model.state_dict(), meta, self.optimizer)

        def on_epoch_end(epoch: int, metrics: dict) -> None:
            if self.dist.is_main and task.on_epoch_end is not None:
                task.on_epoch_end(epoch, metrics)

        self.state = fit(
            self.wrapped,
            self.optimizer,
            n_train=self.n_train,
            step_loss=task.step_loss,
            evaluate=task.evaluate,
            select=task.select,
            save=save,
            lr_fn=self.lr,
            cfg=self.train,
            clip_grad=self.optim.clip_grad,
            run=self.run,
            dist=self.dist,
            state=self.state,
            on_epoch_end=on_epoch_end,
            desc=self.kind,
            units=task.units,
            epoch_steps=self.steps_per_epoch,
        )
        return self.state

    def load_best(self) -> None:
        """The `best` checkpoint's weights into the model (what a finished run is tested with)."""
        tensors, _ = checkpoint.load(self.checkpoint_path("best"))
        self.model.load_state_dict(checkpoint.model_state(tensors))
