"""A run as a library: load a pretraining run (or a transformers ViTMAE directory) into a model config, weights and
normalisation; the metadata a checkpoint carries about its model and data; the check that a test split was not
pretrained on; and batched inference on a loaded model (features, logits, reconstruction loss).
Commands use these; nothing here parses a command line, prints a report or writes a run directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DataConfig, from_dict
from .data.loader import Splits
from .data.transforms import eval_batch_size, normalize
from .engine import checkpoint
from .engine.dist import DistInfo, all_reduce_sum
from .errors import MaekitError
from .models.mae import HIT_DECODINGS, MAE, HitDecoding, ModelConfig
from .models.vit import ViT


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
    from .interop import hf

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


SPLIT_KEYS = ("path", "test_path", "split_seed", "test_fraction")


def check_test_not_pretrained(run: LoadedRun, splits: Splits, data: DataConfig) -> None:
    """Refuse a test split that holds images the encoder was pretrained on (another split_seed, test_fraction or
    file than the pretraining run's): its accuracy would not measure generalisation."""
    saved = run.path / "splits.npz"
    if not saved.exists():  # a Hugging Face directory (or a run from before splits.npz): nothing to check against
        return
    with np.load(saved) as z:
        if "train_rows" not in z or "train_source" not in z:
            return
        seen, source = z["train_rows"], str(z["train_source"])
    if splits.sources.get("test") != source:
        return
    overlap = np.intersect1d(seen, splits.rows["test"]).size
    if overlap:
        before = run.config.get("data", {})
        theirs = ", ".join(f"{k}={before.get(k)}" for k in SPLIT_KEYS)
        ours = ", ".join(f"{k}={getattr(data, k)}" for k in SPLIT_KEYS)
        raise MaekitError(
            f"{overlap} of the {len(splits.rows['test'])} test images ({source}) were pretraining images of {run.path} "
            f"(pretrained with data.{theirs}; this run has data.{ours}); use the pretraining's split settings, "
            f"or pass allow_test_overlap=true to evaluate anyway"
        )


HIT_CALIBRATION = "hit_calibration.json"  # in a run directory: what `maekit calibrate` fitted
CALIBRATED = "calibrated"  # the decoding name that reads it


def hit_decoding_of(run: LoadedRun, name: str) -> HitDecoding:
    """--hit-decoding NAME of a run: one of HIT_DECODINGS, or "calibrated" (the temperature and intensity scales in
    the run's hit_calibration.json); a clear error for another name, a model without a hit map or a missing file."""
    names = (*HIT_DECODINGS, CALIBRATED)
    if name not in names:
        raise MaekitError(f"--hit-decoding must be one of {', '.join(names)}, got {name!r}")
    if name != "top" and run.model_cfg.loss != "hit_intensity":
        raise MaekitError(
            f"--hit-decoding {name} applies to model.loss=hit_intensity; this run's model.loss is {run.model_cfg.loss}"
        )
    if name != CALIBRATED:
        return HitDecoding(name)
    path = run.path / HIT_CALIBRATION
    if not path.is_file():
        raise MaekitError(f"{path}: no such file; fit it first with `maekit calibrate {run.path}`")
    try:
        fitted = json.loads(path.read_text())
        return HitDecoding("top", float(fitted["temperature"]), tuple(float(v) for v in fitted["intensity_scale"]))
    except (ValueError, KeyError, TypeError) as e:
        raise MaekitError(f"{path}: expected maekit calibrate's JSON with temperature and intensity_scale ({e})") from e


def hit_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of sampled hits (MAE.hit_pixels): seeded apart from the masks' noise, so one seed fixes both."""
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


@torch.no_grad()
def extract_features(
    encoder: ViT, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, pool: str, batch_size: int | None = None
) -> torch.Tensor:
    """uint8 images [N, C, H, W] -> pooled features [N, D] (encoder in eval mode, no masking)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    batch_size = batch_size or eval_batch_size(images)
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = normalize(images[i : i + batch_size].to(device), mean, std)
        out.append(encoder.pool(encoder.forward_features(x), pool).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, encoder.embed_dim)


def extract_features_sharded(
    encoder: ViT, images, mean: torch.Tensor, std: torch.Tensor, pool: str, dist: DistInfo
) -> torch.Tensor:
    """extract_features with the images split across DDP processes (contiguous blocks) and the features
    gathered on every process; the same as extract_features in a single process."""
    if not dist.enabled:
        return extract_features(encoder, images, mean, std, pool)
    import torch.distributed as tdist

    n = images.shape[0]
    per = -(-n // dist.world)
    lo, hi = min(n, dist.rank * per), min(n, (dist.rank + 1) * per)
    local = extract_features(encoder, images[lo:hi], mean, std, pool)
    padded = torch.zeros(per, encoder.embed_dim)
    padded[: hi - lo] = local
    parts = [torch.empty(per, encoder.embed_dim, device=dist.device) for _ in range(dist.world)]
    tdist.all_gather(parts, padded.to(dist.device))
    return torch.cat([q.cpu() for q in parts])[:n]
