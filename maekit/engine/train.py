"""The training loop shared by every command (pretrain, finetune, compare cells).

Every step's randomness (augmentation, masks, dropout) is a function of (seed, step, micro-batch) and every
epoch's sample order a function of (seed, epoch), so a run resumed from any checkpoint continues exactly as
the uninterrupted run would, and a run on N processes draws what one process with the same global batch draws.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from ..config import TrainConfig
from ..data.loader import step_batches
from ..errors import MaekitError
from .dist import DistInfo, all_reduce_sum
from .optim import set_lr
from .rundir import RunDir


@dataclass
class TrainState:
    """Everything a resumed run needs besides weights and optimiser (saved in each checkpoint's metadata)."""

    step: int = 0  # optimiser steps done
    best: float | None = None  # best value of the selection metric so far
    best_epoch: int = -1
    loss_window: list[float] = field(default_factory=list)  # step losses since the last train-loss log line
    skipped_nonfinite: int = 0  # batches skipped for a non-finite loss (train.skip_nonfinite)
    grad_scaler: dict | None = None  # fp16 GradScaler state (scale, growth tracker)
    precision: str | None = None  # what the run trains in (a resumed 'auto' run keeps it: no second trial)
    elapsed_s: float = 0.0  # seconds since the run's first process built its trainer, up to this checkpoint

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(
            step=int(d["step"]),
            best=d.get("best"),
            best_epoch=int(d.get("best_epoch", -1)),
            loss_window=[float(x) for x in d.get("loss_window", [])],
            skipped_nonfinite=int(d.get("skipped_nonfinite", 0)),
            grad_scaler=d.get("grad_scaler"),
            precision=d.get("precision"),
            elapsed_s=float(d.get("elapsed_s", 0.0)),
        )


@dataclass
class MicroBatch:
    """What a step's loss function gets: this process's sample indices [B], a generator for this micro-batch
    (identical on every process), the global micro-batch size and this process's offset in it."""

    indices: torch.Tensor
    generator: torch.Generator
    global_batch: int
    offset: int
    step: int


class Interrupted(MaekitError):
    """SIGINT or SIGTERM stopped training cleanly after a checkpoint."""


class _StopRequest:
    """SIGINT / SIGTERM set a flag; the loop finishes the current step, checkpoints and stops."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def resume_state(
    out,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: RunDir,
    resume: bool,
    effective_batch: int | None = None,
) -> TrainState:
    """With `resume`, load `out/checkpoints/last` (or its .prev copy) into model and optimiser and drop the
    metrics logged after it; otherwise (or with no checkpoint yet) a fresh state.

    Resuming with another number of processes keeps the images seen: with the same effective batch (per-process
    batch x processes x accumulation) nothing changes; with a different one the step count is rescaled so the
    run continues at the same point of the same epoch order (the LR then follows the new batch's scaling)."""
    from pathlib import Path

    from . import checkpoint

    last = Path(out) / "checkpoints" / "last.safetensors"
    if not resume or not (last.exists() or checkpoint.previous_path(last).exists()):
        return TrainState()
    tensors, meta = checkpoint.load(last)
    checkpoint.load_weights(model, checkpoint.model_state(tensors), str(last))
    checkpoint.restore_optimizer(optimizer, tensors, meta)
    state = TrainState.from_dict(meta["train_state"])
    run.truncate_metrics(state.step)
    old = meta.get("effective_batch")
    if effective_batch and old and old != effective_batch:
        images = state.step * old
        state.step = images // effective_batch
        print(
            f"resume: effective batch {old} -> {effective_batch}: "
            f"continuing after {images} images at step {state.step}",
            flush=True,
        )
    return state


def step_generator(seed: int, step: int, micro: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 101 + micro)


def resolve_precision(precision: str, device: torch.device, flags: frozenset[str] | None = None) -> str:
    """'auto' -> 'bf16' on a CUDA GPU with bf16 or a CPU with native bf16 (AVX-512 BF16 / AMX), else 'fp32'
    (never the slow emulated bf16). Other values are returned as they are. `flags`: CPU flags (default: this CPU)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        from ..environment import cpu_flags, fast_bf16_cpu

        return (
            "bf16"
            if fast_bf16_cpu(cpu_flags() if flags is None else flags) and torch.backends.mkldnn.is_available()
            else "fp32"
        )
    return "fp32"


def autocast(device: torch.device, precision: str):
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise MaekitError("train.precision=fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# 'auto' keeps bf16 only when its trial step is this much faster than fp32's. Near 1.0x the choice flipped from run to
# run with the timing noise of shared cores (one fine-tune recipe's trials read 0.91x-1.19x on an AVX-512 BF16 CPU),
# so the same config trained in either precision and gave different numbers, for no real speed-up. A model whose
# speed-up sits near this bar can still land on either side: set train.precision to pin one for a benchmark.
BF16_MIN_SPEEDUP = 1.15


def timed_precisions(
    model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], device: torch.device, reps: int = 5
) -> dict[str, float]:
    """Seconds of one forward and backward of `loss_of(model copy)` in fp32 and in bf16 autocast: the median of
    `reps`, the two precisions alternating (so that a burst of load on the cores slows both), after a warm-up of
    each. On a copy and under a forked RNG: the run's weights, buffers and random streams are untouched."""
    probe = copy.deepcopy(model).train()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for rep in range(reps + 1):
            for precision in ("fp32", "bf16"):
                _sync(device)
                t = time.perf_counter()
                with autocast(device, precision):
                    loss = loss_of(probe)
                loss.float().backward()
                _sync(device)
                if rep:  # the first of each is the warm-up
                    times[precision].append(time.perf_counter() - t)
                probe.zero_grad(set_to_none=True)
    return {p: statistics.median(v) for p, v in times.items()}


def choose_precision(
    precision: str,
    device: torch.device,
    model: nn.Module | None = None,
    loss_of: Callable[[nn.Module], torch.Tensor] | None = None,
    flags: frozenset[str] | None = None,
) -> tuple[str, str]:
    """The precision a run trains in, and why (for its first line). 'auto' where bf16 is native (resolve_precision)
    and a trial loss is given: bf16 only if its timed forward and backward (timed_precisions) is at least
    BF16_MIN_SPEEDUP times as fast as fp32's, because small models on a GPU are bound by kernel launches and
    autocast's casts slow them down (docs/gpu.md), and a choice at the noise level would make results vary."""
    chosen = resolve_precision(precision, device, flags)
    if precision != "auto":
        return chosen, chosen
    if chosen != "bf16" or model is None or loss_of is None:
        return chosen, f"{chosen} (precision=auto on {device.type})"
    t = timed_precisions(model, loss_of, device)
    speed = t["fp32"] / t["bf16"]
    chosen = "bf16" if speed >= BF16_MIN_SPEEDUP else "fp32"
    return chosen, f"{chosen} (precision=auto on {device.type}: bf16 ran at {speed:.2f}x fp32's speed in a timed trial)"


def steps_per_epoch(n_train: int, cfg: TrainConfig, world: int = 1) -> int:
    """Optimiser steps in one epoch: whole global batches (micro-batch x accumulation x processes); the one
    count that fit and every command's LR schedule share."""
    spe = n_train // (cfg.batch_size * cfg.accum_steps * world)
    if spe == 0:
        raise MaekitError(
            f"{n_train} training images are fewer than one global batch "
            f"({cfg.batch_size} x {cfg.accum_steps} accumulation x {world} processes); lower train.batch_size"
        )
    return spe


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    n_train: int,
    step_loss: Callable[[MicroBatch], torch.Tensor],
    evaluate: Callable[[int], dict],
    select: tuple[str, str],
    save: Callable[[str, TrainState, int], None],
    lr_fn: Callable[[int], float],
    cfg: TrainConfig,
    clip_grad: float | None,
    run: RunDir,
    dist: DistInfo,
    state: TrainState,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    desc: str = "train",
    units: tuple | None = None,
    epoch_steps: int | None = None,
) -> TrainState:
    """Train for cfg.epochs epochs from `state`; evaluate and checkpoint each epoch.

    `select` = (metric key, 'min' | 'max') picks the `best` checkpoint; `save(name, state, epoch)` writes a
    checkpoint called `name` ('last' or 'best'). `units` (read unit per image, units per buffer) gives
    streamed data their chunk-wise shuffle. `epoch_steps`: steps_per_epoch(n_train, cfg, dist.world) if the caller
    has it already. Returns the final state.
    """
    key, mode = select
    micro_bs = cfg.batch_size
    per_step = micro_bs * cfg.accum_steps
    spe = epoch_steps or steps_per_epoch(n_train, cfg, dist.world)
    total = spe * cfg.epochs
    bar = tqdm(
        total=total,
        initial=state.step,
        desc=desc,
        disable=not (dist.is_main and cfg.progress) or None,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=1.0,
    )
    ddp = hasattr(model, "no_sync")
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" and dist.device.type == "cuda" else None
    if scaler and state.grad_scaler:
        scaler.load_state_dict(state.grad_scaler)
    window = state.loss_window  # kept in checkpoints: a resumed run logs the same train loss
    stop = _StopRequest()

    def checkpoint_as(name: str, epoch: int) -> None:
        state.grad_scaler = scaler.state_dict() if scaler else None
        save(name, state, epoch)

    model.train()
    try:
        while state.step < total:
            epoch = state.step // spe
            batches = step_batches(n_train, per_step, epoch, cfg.seed, dist.rank, dist.world, units)
            t0 = time.perf_counter()
            seen = 0
            for s in range(state.step % spe, spe):
                lr = lr_fn(state.step)
                set_lr(optimizer, lr)
                torch.manual_seed(cfg.seed * 7919 + state.step * 131 + dist.rank)  # dropout / drop path
                step_total = 0.0
                for m in range(cfg.accum_steps):
                    idx = batches[s, m * micro_bs : (m + 1) * micro_bs]
                    mb = MicroBatch(
                        idx,
                        step_generator(cfg.seed, state.step, m),
                        micro_bs * dist.world,
                        dist.rank * micro_bs,
                        state.step,
                    )
                    sync = (m == cfg.accum_steps - 1) or not ddp
                    with contextlib.nullcontext() if sync else model.no_sync():
                        loss = step_loss(mb)
                        value = loss.item()  # the step's one host sync
                        if math.isfinite(value):
                            scaled = loss / cfg.accum_steps
                            (scaler.scale(scaled) if scaler else scaled).backward()
                            step_total += value / cfg.accum_steps
                        elif cfg.skip_nonfinite:
                            state.skipped_nonfinite += 1
                        else:
                            raise MaekitError(
                                f"non-finite loss ({value}) at step {state.step} (epoch {epoch}); stopped, the last "
                                "good checkpoint is kept (lower the learning rate, check the data for NaN/Inf, or set "
                                "train.skip_nonfinite=true)"
                            )
                if scaler:
                    scaler.unscale_(optimizer)
                if clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                if state.skipped_nonfinite and state.step % cfg.log_every == 0:
                    run.log({"step": state.step, "skipped_nonfinite_batches": state.skipped_nonfinite})
                seen += per_step * dist.world
                window.append(step_total)
                if state.step % cfg.log_every == 0:
                    local = torch.tensor(sum(window) / len(window))
                    mean_loss = float(all_reduce_sum(local) / dist.world) if dist.enabled else float(local)
                    run.log({"step": state.step, "epoch": epoch, "train_loss": mean_loss, "lr": lr})
                    window.clear()
                bar.update(1)
                bar.set_postfix(
                    loss=f"{step_total:.4f}",
                    lr=f"{lr:.2e}",
                    img_s=f"{seen / (time.perf_counter() - t0):.0f}",
                    refresh=False,
                )
                if cfg.ckpt_every_steps and state.step % cfg.ckpt_every_steps == 0 and state.step % spe:
                    checkpoint_as("last", epoch)
                # at an epoch's last step a stop waits for the epoch's evaluation and `best` (below), so that a
                # resumed run, which starts at the next epoch, has them
                stop_after = bool(cfg.stop_after) and state.step >= cfg.stop_after and state.step % spe
                if stop_after or (stop.requested and state.step % spe):
                    checkpoint_as("last", epoch)
                    if stop_after:
                        return state
                    raise Interrupted(
                        f"{stop.requested} received: stopped after step {state.step} with a checkpoint; continue with "
                        f"resume=true and the same out={run.path}"
                    )
            elapsed = time.perf_counter() - t0
            model.eval()
            with torch.no_grad():
                metrics = evaluate(epoch) if (epoch + 1) % cfg.eval_every == 0 or state.step == total else {}
            model.train()
            record = {
                "step": state.step,
                "epoch": epoch,
                "img_per_s": seen / max(elapsed, 1e-9),
                "epoch_time_s": elapsed,
                **metrics,
            }
            run.log(record)
            improved = key in metrics and (
                state.best is None or (metrics[key] < state.best if mode == "min" else metrics[key] > state.best)
            )
            if improved:
                state.best, state.best_epoch = float(metrics[key]), epoch
                checkpoint_as("best", epoch)
            checkpoint_as("last", epoch)
            if dist.is_main:
                shown = ", ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)
                )
                speed = f"{record['img_per_s']:.0f} img/s"  # alone on epochs without evaluation (train.eval_every)
                tqdm.write(
                    f"{desc} epoch {epoch + 1}/{cfg.epochs}: {shown + ', ' if shown else ''}{speed}", file=sys.stderr
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics)
            if state.step < total and cfg.stop_after and state.step >= cfg.stop_after:
                return state
            if state.step < total and stop.requested:
                raise Interrupted(
                    f"{stop.requested} received: stopped after epoch {epoch + 1} (step {state.step}) "
                    f"with a checkpoint; continue with resume=true and the same out={run.path}"
                )
    finally:
        bar.close()
        stop.restore()
    if dist.enabled:
        run.log({"step": state.step, "ddp_param_max_diff": replica_divergence(model)})
    return state


@torch.no_grad()
def replica_divergence(model: nn.Module) -> float:
    """Largest absolute difference between this process's parameters and rank 0's, over all processes
    (0.0 when DistributedDataParallel kept the replicas identical, as it should)."""
    import torch.distributed as td

    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    ref = flat.clone()
    td.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    td.all_reduce(diff, op=td.ReduceOp.MAX)
    return float(diff)
