"""What several commands share: the config of a config-driven command (`resolve`), process set-up, model building and
loading, reconstruction evaluation and pictures. No training loop here (that is engine/train.py)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import plots
from ..config import (
    CompareConfig,
    DataConfig,
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
from ..data.transforms import eval_batch_size, normalize
from ..engine import checkpoint
from ..engine.dist import DistInfo, all_reduce_sum, setup
from ..engine.rundir import default_out
from ..errors import MaekitError
from ..models.mae import HIT_DECODINGS, MAE, ModelConfig

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


def init_process(device: str, threads: int | None) -> DistInfo:
    dist = setup(device)
    if dist.device.type == "cpu":
        n = threads or max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        torch.set_num_threads(n)
    return dist


def checkpoint_meta(
    kind: str, model_cfg: ModelConfig, splits: Splits, data_cfg: DataConfig, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "model_config": asdict(model_cfg),
        "data": {
            "mean": splits.mean.tolist(),
            "std": splits.std.tolist(),
            "class_names": splits.class_names,
            "image_size": list(splits.image_size),
            "channels": splits.channels,
            "channel_names": splits.channel_names,
            "dtype": splits.dtype,  # uint8: images were divided by 255 before normalising; float32: used as read
            "config": asdict(data_cfg),
        },
        **(extra or {}),
    }


@dataclass
class LoadedRun:
    path: Path
    model_cfg: ModelConfig
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    config: dict[str, Any]

    @property
    def mean(self) -> torch.Tensor:
        return torch.tensor(self.meta["data"]["mean"])

    @property
    def std(self) -> torch.Tensor:
        return torch.tensor(self.meta["data"]["std"])


def load_run(path: str | Path, which: str = "best") -> LoadedRun:
    """A pretraining run directory (or a checkpoint file in one) -> its model config, weights and metadata.

    A Hugging Face transformers ViTMAE directory (config.json with model_type "vit_mae" + model.safetensors,
    no run.json) works too: its config, weights converted to maekit's names, and meta["data"]["mean"/"std"]
    from its preprocessor_config.json (zeros/ones and meta["data"]["note"] without one); see interop/hf.py.
    """
    from ..interop import hf

    hf_dir = hf.hf_model_dir(path)
    if hf_dir is not None:
        model_cfg, state, meta = hf.load_hf_vitmae(hf_dir)
        return LoadedRun(hf_dir, model_cfg, state, meta, {})
    p = Path(path)
    if p.is_file():
        ckpt, run_dir = p, p.parent.parent
    elif p.is_dir():
        run_dir = p
        ckpt = p / "checkpoints" / f"{which}.safetensors"
        if not ckpt.exists() and not checkpoint.previous_path(ckpt).exists():
            ckpt = p / "checkpoints" / "last.safetensors"
        if not (p / "run.json").exists() or not (ckpt.exists() or checkpoint.previous_path(ckpt).exists()):
            raise MaekitError(
                f"{p} is not a maekit run directory with a checkpoint (expected "
                f"run.json and checkpoints/{which}.safetensors) nor a Hugging "
                "Face ViTMAE directory (config.json and model.safetensors)"
            )
    else:
        raise MaekitError(
            f"pretrained path {p} does not exist (expected a maekit run directory or a Hugging Face ViTMAE directory)"
        )
    tensors, meta = checkpoint.load(ckpt)
    try:
        model_cfg = from_dict(ModelConfig, meta["model_config"], "model_config.")
    except (KeyError, MaekitError) as e:
        raise MaekitError(f"checkpoint {ckpt} has an unreadable model config ({e})") from None
    cfg_file = run_dir / "config.yaml"
    import yaml

    config = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else {}
    return LoadedRun(run_dir, model_cfg, checkpoint.model_state(tensors), meta, config)


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


def check_hit_decoding(model_cfg, decoding: str) -> None:
    """A clear error for a decoding that is not one of HIT_DECODINGS or a model whose loss has no hit map."""
    if decoding not in HIT_DECODINGS:
        raise MaekitError(f"--hit-decoding must be one of {', '.join(HIT_DECODINGS)}, got {decoding!r}")
    if decoding != "top" and model_cfg.loss != "hit_intensity":
        raise MaekitError(
            f"--hit-decoding {decoding} applies to model.loss=hit_intensity; this run's model.loss is {model_cfg.loss}"
        )


def hit_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of sampled hits: seeded apart from the masks' noise, so one seed fixes both."""
    return torch.Generator(device=device).manual_seed(10_007 + seed)


def fixed_noise(n: int, num_patches: int, seed: int) -> torch.Tensor:
    """Masking noise [n, L] that depends on the seed only, so evaluations are repeatable."""
    return torch.rand(n, num_patches, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def recon_loss(
    model: MAE,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor,
    mask_ratio: float | None = None,
    batch_size: int | None = None,
    dist: DistInfo | None = None,
    progress: bool = False,
) -> float:
    """Mean masked-patch loss over images [N, C, H, W] (uint8 or float) with the given masking noise [N, L]
    (sharded across processes under DDP, then summed)."""
    rank, world = (dist.rank, dist.world) if dist else (0, 1)
    device = next(model.parameters()).device
    batch_size = batch_size or eval_batch_size(images)
    total = torch.zeros(2, dtype=torch.float64)
    starts = list(range(rank * batch_size, images.shape[0], batch_size * world))
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="reconstruction loss", leave=False, disable=None)
    for i in starts:
        x = normalize(images[i : i + batch_size].to(device), mean, std)
        loss, _, _ = model(x, mask_ratio, noise=noise[i : i + batch_size].to(device))
        total += torch.tensor([loss.item() * x.shape[0], x.shape[0]], dtype=torch.float64)
    total = all_reduce_sum(total)
    return float(total[0] / total[1])


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
    hit_decoding: str = "top",
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
    value of an empty (zero) pixel per channel, from the training split's statistics."""
    model = cfg.model
    if model.loss == "hit_intensity" and model.empty_level is None:
        model = dataclasses.replace(model, empty_level=[float(v) for v in (-splits.mean / splits.std)])
    try:
        return model.resolved(splits.image_size, splits.channels)
    except ValueError as e:
        raise MaekitError(str(e)) from None
