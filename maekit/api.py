"""The Python API: the functions the command line calls, for notebooks and scripts.

    import maekit
    run = maekit.pretrain("configs/fashion_mnist.yaml", overrides={"train.epochs": 1, "out": "runs/try"})
    features = run.embed(images)                 # uint8/float, [N, H, W], [N, H, W, C] or [N, C, H, W]
    rec = run.reconstruct(images[:8], mask_ratio=0.75, seed=0)
    result = maekit.finetune({"pretrained": str(run.path), "labels": 600}, overrides={"train.epochs": 5})

A config is a YAML path, a dict with the YAML's nesting, or the command's config dataclass; `overrides` is a dict of
dotted keys (`{"train.epochs": 3}`) or a list of `key=value` strings as on the command line.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .commands.common import resolve
from .data.transforms import eval_batch_size, normalize
from .engine.rundir import read_metrics
from .errors import MaekitError
from .models.mae import MAE
from .runs import fixed_noise, hit_decoding_of, hit_generator, load_run


def run_command(command: str, config: Any = None, overrides: dict | list[str] | None = None) -> tuple[Any, Path]:
    """Run pretrain / linprobe / finetune / knn / compare; returns (the command's result, the run directory)."""
    cfg, out = resolve(command, config, overrides)
    module = __import__(f"maekit.commands.{command}", fromlist=["run"])
    return module.run(cfg, out), out


def pretrain(config: Any = None, overrides: dict | list[str] | None = None) -> "Run":
    """MAE pretraining (as `maekit pretrain`); returns the finished run, loaded."""
    _, out = run_command("pretrain", config, overrides)
    return load(out)


def finetune(config: Any = None, overrides: dict | list[str] | None = None) -> dict:
    """`maekit finetune`: the result dict (test_accuracy, test_roc_auc, val_accuracy, ...)."""
    return run_command("finetune", config, overrides)[0]


def linprobe(config: Any = None, overrides: dict | list[str] | None = None) -> dict:
    """`maekit linprobe`: the result dict."""
    return run_command("linprobe", config, overrides)[0]


def knn(config: Any = None, overrides: dict | list[str] | None = None) -> dict:
    """`maekit knn`: the result dict."""
    return run_command("knn", config, overrides)[0]


def compare(config: Any = None, overrides: dict | list[str] | None = None) -> list[dict]:
    """`maekit compare`: one result dict per cell (method x budget x seed)."""
    return run_command("compare", config, overrides)[0]


def load(path: str | Path, which: str = "best") -> "Run":
    """A maekit pretraining run directory (its `best` checkpoint) or a transformers ViTMAE directory."""
    return Run(path, which)


class Run:
    """A trained MAE with its normalisation: `.model` (MAE), `.encoder` (ViT), `.config`, `.metrics`,
    `.embed(images)`, `.reconstruct(images)`, `.calibrate()`."""

    def __init__(self, path: str | Path, which: str = "best"):
        self._loaded = load_run(path, which)
        self.path = self._loaded.path
        self.mean, self.std = self._loaded.mean, self._loaded.std

    def __repr__(self) -> str:
        c = self._loaded.model_cfg
        return (
            f"maekit.Run({str(self.path)!r}: {c.in_chans}x{c.img_size[0]}x{c.img_size[1]}, "
            f"patch {c.patch_size}, encoder {c.depth} x {c.embed_dim})"
        )

    @property
    def config(self) -> dict:
        """The run's resolved config (config.yaml; empty for a transformers directory)."""
        return self._loaded.config

    @property
    def model_config(self):
        return self._loaded.model_cfg

    @property
    def metrics(self) -> list[dict]:
        """The rows of metrics.jsonl (train loss, LR, per-epoch reconstruction losses)."""
        return read_metrics(self.path) if (self.path / "metrics.jsonl").exists() else []

    @cached_property
    def model(self) -> MAE:
        m = MAE(self._loaded.model_cfg)
        m.load_state_dict(self._loaded.state)
        return m.eval()

    @property
    def encoder(self) -> torch.nn.Module:
        return self.model.encoder

    def as_batch(self, images) -> torch.Tensor:
        """uint8 or float images (numpy or torch) in [N, H, W], [N, H, W, C] or [N, C, H, W] -> [N, C, H, W]."""
        # a copy: inputs stay untouched
        x = images if isinstance(images, torch.Tensor) else torch.tensor(np.asarray(images))
        c, (h, w) = self._loaded.model_cfg.in_chans, self._loaded.model_cfg.img_size
        if x.ndim == 3 and c == 1:
            x = x.unsqueeze(1)
        elif x.ndim == 4 and x.shape[1:] != (c, h, w) and x.shape[1:] == (h, w, c):
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise MaekitError(
                f"images of shape {tuple(x.shape)} do not fit this encoder, which takes {c} channel(s) of {h}x{w} "
                f"([N, {h}, {w}]{' ' if c == 1 else ''}, [N, {h}, {w}, {c}] or [N, {c}, {h}, {w}])"
            )
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise MaekitError(f"images must be uint8 (0-255) or float, got {x.dtype}")
        return x.contiguous()

    @torch.no_grad()
    def embed(self, images, pool: str = "mean", batch_size: int | None = None) -> np.ndarray:
        """Encoder features [N, D] (float32; every patch visible; mean of the patch tokens or the cls token),
        with the run's own normalisation."""
        if pool not in ("cls", "mean"):
            raise MaekitError(f"pool must be cls or mean, got {pool!r}")
        x = self.as_batch(images)
        b = batch_size or eval_batch_size(x)
        enc = self.encoder
        parts = [
            enc.pool(enc.forward_features(normalize(x[i : i + b], self.mean, self.std)), pool)
            for i in range(0, len(x), b)
        ]
        return torch.cat(parts).float().numpy() if parts else np.zeros((0, enc.embed_dim), np.float32)

    def calibrate(self, split: str = "val", limit: int | None = 2000, seed: int = 0) -> dict:
        """Fit the "calibrated" hit decoding on held-out detector images (model.loss=hit_intensity), as
        `maekit calibrate`: writes hit_calibration.json to the run, which reconstruct(..., hit_decoding="calibrated")
        uses."""
        from .commands.calibrate import run

        return run(str(self.path), split, limit, seed)

    @torch.no_grad()
    def reconstruct(
        self, images, mask_ratio: float | None = None, seed: int = 0, hit_decoding: str = "top"
    ) -> dict[str, Any]:
        """Masked reconstruction with seeded masks (the same call gives the same result; hit_decoding: "top",
        "sample" or "calibrated" for model.loss=hit_intensity, as `maekit reconstruct --hit-decoding`):
        {"reconstruction": [N, C, H, W] float32 on the input's scale (0-1 for uint8 input), "mask": [N, L] (1 = masked
        patch), "loss": mean masked-patch loss}."""
        decoding = hit_decoding_of(self._loaded, hit_decoding)
        ratio = self._loaded.model_cfg.mask_ratio if mask_ratio is None else mask_ratio
        if not 0.0 < ratio < 1.0:
            raise MaekitError(f"mask_ratio must be in (0, 1), got {ratio}")
        x = normalize(self.as_batch(images), self.mean, self.std)
        noise = fixed_noise(len(x), self.model.num_patches, seed)
        loss, pred, mask = self.model(x, ratio, noise=noise)
        pixels = self.model.predictions_to_pixels(x, pred, mask, decoding, hit_generator(seed)) * self.std.view(
            1, -1, 1, 1
        ) + self.mean.view(1, -1, 1, 1)
        return {"reconstruction": pixels.float().numpy(), "mask": mask.numpy(), "loss": float(loss)}
