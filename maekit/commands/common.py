"""What several commands share: the config of a config-driven command (`resolve`), evaluation subsets and
reconstruction pictures. Loading a run and batched inference are the run library's (runs.py); the training run is
engine/trainer.py's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from .. import plots
from ..config import (
    CompareConfig,
    FinetuneConfig,
    KnnConfig,
    LinprobeConfig,
    PretrainConfig,
    from_dict,
    parse_override,
    read_yaml,
    set_keys,
    to_dict,
)
from ..data.loader import ImageSet, Splits
from ..data.transforms import negative_channels, normalize
from ..engine.rundir import default_out
from ..errors import MaekitError
from ..models.mae import MAE, HitDecoding, ModelConfig
from ..runs import hit_generator

CONFIGS = {
    "pretrain": PretrainConfig,
    "linprobe": LinprobeConfig,
    "finetune": FinetuneConfig,
    "knn": KnnConfig,
    "compare": CompareConfig,
}


def resolve(command: str, config: Any = None, overrides: dict | list[str] | None = None) -> tuple[Any, Path]:
    """(validated config dataclass, run directory) of a config-driven command, as the command line builds them:
    a resumed run keeps its saved configuration, with only the overrides on top."""
    cls = CONFIGS[command]
    name = None
    if config is None:
        data: dict = {}
    elif isinstance(config, (str, Path)):
        data, name = read_yaml(config), config
    elif isinstance(config, dict):
        data = json.loads(json.dumps(config, default=str))  # a deep copy of plain values
    elif dataclasses.is_dataclass(config) and isinstance(config, cls):
        data = to_dict(config)
    else:
        raise MaekitError(
            f"{command}: config must be a YAML path, a dict or a {cls.__name__}, got {type(config).__name__}"
        )
    dotted = dotted_overrides(overrides)
    data = set_keys(data, dotted)
    out = Path(data["out"]) if data.get("out") else default_out(name, command)
    saved, info = out / "config.yaml", out / "run.json"
    if data.get("resume") and info.exists() and command != "compare":
        kind = json.loads(info.read_text()).get("kind")
        if kind != command:
            raise MaekitError(f"{out} holds a {kind!r} run, not a {command!r} run; cannot resume it as {command}")
    if data.get("resume") and saved.exists() and command != "compare":
        # a resumed run keeps its own configuration; only the overrides apply on top
        # (stop_after belongs to the invocation that set it, not to the run)
        data = set_keys(read_yaml(saved), [("train.stop_after", 0), ("resume", True), *dotted])
    cfg = from_dict(cls, data)
    cfg.validate()
    return cfg, out


def dotted_overrides(overrides: dict | list[str] | None) -> list[tuple[str, Any]]:
    """A dict of dotted keys or a list of `key=value` strings -> [(dotted key, value)]."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    return [(".".join(path), value) for path, value in map(parse_override, overrides)]


def split_by_name(splits: Splits, name: str) -> ImageSet:
    if name not in ("train", "val", "test"):
        raise MaekitError(f"split must be train, val or test, got {name!r}")
    return getattr(splits, name)


def eval_subset(images: ImageSet, n: int, seed: int) -> ImageSet:
    """A fixed, seeded subset of at most n images (all of them if n >= len)."""
    if n >= len(images):
        return images
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images.subset(idx)


def spread(n: int, k: int) -> torch.Tensor:
    """min(k, n) positions evenly spread over 0..n-1, first and last included: the images of a picture, so that a
    split read class by class (a folder of class folders, or its pack) shows every class, not only the first."""
    k = min(k, n)
    return torch.linspace(0, n - 1, k).round().long() if k > 1 else torch.zeros(k, dtype=torch.long)


@torch.no_grad()
def write_recon_grid(
    model: MAE,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor,
    out: Path,
    title: str,
    mask_ratio: float | None = None,
    hit_decoding: str | HitDecoding = "top",
    seed: int = 0,
) -> None:
    """Original | masked | reconstruction | reconstruction with the visible patches pasted back (hit_decoding and
    seed: see MAE.hit_pixels)."""
    device = next(model.parameters()).device
    x = normalize(images.to(device), mean, std)
    _, pred, mask = model(x, mask_ratio, noise=noise.to(device))
    recon = model.predictions_to_pixels(x, pred, mask, hit_decoding, hit_generator(seed, device))
    p, c = model.patch_size, model.in_chans
    m = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p * c))
    m_, s_ = mean.view(1, -1, 1, 1).to(device), std.view(1, -1, 1, 1).to(device)
    # uint8 photos are drawn on their 0-1 scale; float (detector) images relative to each channel's maximum
    top = 1.0 if images.dtype == torch.uint8 else (x * s_ + m_).amax(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12)

    def pix(t: torch.Tensor) -> Any:
        return ((t * s_ + m_) / top).clamp(0, 1).cpu().float().numpy()

    original = pix(x)
    masked = original * (1 - m.cpu().numpy()) + 0.5 * m.cpu().numpy()
    plots.recon_grid(
        {
            "original": original,
            "masked": masked,
            "reconstruction": pix(recon),
            "recon + visible": pix(recon * m + x * (1 - m)),
        },
        out,
        title,
    )


def model_config_of(cfg: PretrainConfig, splits: Splits) -> ModelConfig:
    """The model config resolved for the data: image size, channels, and for loss=hit_intensity the normalised
    value of an empty (zero) pixel per channel, from the training split's statistics, and which channels hold
    negative values (signed channels, whose hits may lie below the empty level)."""
    model = cfg.model
    if model.loss == "hit_intensity" and model.empty_level is None:
        model = dataclasses.replace(model, empty_level=[float(v) for v in (-splits.mean / splits.std)])
    if model.loss == "hit_intensity" and model.signed_channels is None:
        model = dataclasses.replace(model, signed_channels=negative_channels(splits.train.images))
    try:
        return model.resolved(splits.image_size, splits.channels)
    except ValueError as e:
        raise MaekitError(str(e)) from None
