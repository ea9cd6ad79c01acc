"""Batched tensor transforms. Random parameters are drawn for the whole global batch from one generator and
then sliced, so every process of a distributed run sees the same augmentation a single process would."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import AugmentConfig
from ..errors import MaekitError


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 on the 0-1 scale; float images (detector data) are already on their own scale."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> float32 (to_unit(x) - mean) / std per channel; mean, std [C] on to_unit's scale."""
    x = to_unit(x)
    return (x - mean.view(1, -1, 1, 1).to(x)) / std.view(1, -1, 1, 1).to(x)


def random_resized_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (0.75, 4 / 3),
    hflip: bool = True,
    global_batch: int | None = None,
    offset: int = 0,
    vflip: bool = False,
) -> torch.Tensor:
    """[N, C, H, W] float -> same shape: a random crop of area fraction in `scale` and aspect ratio in
    `ratio`, resized back with bilinear sampling, mirrored left-right with probability 1/2 if `hflip`, and
    top-bottom, independently, with probability 1/2 if `vflip`.

    Parameters are drawn for `global_batch` samples and rows offset:offset+N are used.
    """
    n = x.shape[0]
    g = global_batch or n
    area = torch.empty(g).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(g).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    cx = torch.rand(g, generator=generator)
    cy = torch.rand(g, generator=generator)
    flip = torch.rand(g, generator=generator) < 0.5
    # drawn only when asked for, so that runs without it keep their random stream
    vflip_rows = torch.rand(g, generator=generator) < 0.5 if vflip else None
    sl = slice(offset, offset + n)
    r = torch.exp(log_r[sl])
    w = torch.sqrt(area[sl] * r).clamp(max=1.0)
    h = torch.sqrt(area[sl] / r).clamp(max=1.0)
    # centre in normalised [-1, 1] coordinates such that the crop stays inside the image
    tx = (cx[sl] * 2 - 1) * (1 - w)
    ty = (cy[sl] * 2 - 1) * (1 - h)
    sx = torch.where(flip[sl], -w, w) if hflip else w
    sy = torch.where(vflip_rows[sl], -h, h) if vflip_rows is not None else h
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = ty
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(x: torch.Tensor, aug: AugmentConfig, generator: torch.Generator, global_batch: int, offset: int):
    """A training batch augmented as `data.augment` says (random_resized_crop_flip with its settings)."""
    return random_resized_crop_flip(
        x, generator, tuple(aug.crop_scale), tuple(aug.crop_ratio), aug.hflip, global_batch, offset, vflip=aug.vflip
    )


def eval_batch_size(images, target_bytes: int = 16 << 20, most: int = 512) -> int:
    """Images per evaluation batch: up to `most`, at most about `target_bytes` of float32 input."""
    return int(max(1, min(most, target_bytes // (4 * math.prod(images.shape[1:])))))


def channel_stats(images, chunk_bytes: int = 32 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [C] of images [N, C, H, W] (a tensor, or StreamedImages read in one pass) on
    to_unit's scale, accumulated in float64, `chunk_bytes` of float64 at a time."""
    c = images.shape[1]
    chunk = max(1, chunk_bytes // (8 * math.prod(images.shape[1:])))
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    count = 0
    n = images.shape[0]
    bar = tqdm(
        total=n,
        desc="channel stats",
        unit="img",
        leave=False,
        disable=None if not isinstance(images, torch.Tensor) else True,
    )
    for i in range(0, n, chunk):
        x = to_unit(images[i : i + chunk]).to(torch.float64)
        bar.update(x.shape[0])
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    bar.close()
    if count == 0:
        raise MaekitError("cannot compute channel statistics of an empty training split")
    mean = s / count
    std = (s2 / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


def negative_channels(images, chunk_bytes: int = 32 << 20) -> list[bool]:
    """Per channel, whether any pixel of images [N, C, H, W] (a tensor, or StreamedImages read in one pass) is below
    zero: signed values such as a track's impact parameter, in one pass of `chunk_bytes` at a time."""
    c = images.shape[1]
    if images.dtype == torch.uint8:
        return [False] * c
    chunk = max(1, chunk_bytes // (4 * math.prod(images.shape[1:])))
    found = torch.zeros(c, dtype=torch.bool)
    for i in range(0, images.shape[0], chunk):
        found |= (images[i : i + chunk] < 0).any(dim=0).flatten(1).any(dim=1)
    return found.tolist()


def mixup_cutmix(
    x: torch.Tensor, generator: torch.Generator, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0
) -> tuple[torch.Tensor, float]:
    """[N, C, H, W] -> (mixed images, lam): every image blended with its partner in the reversed batch
    (`x.flip(0)`, as timm's Mixup does), by mixup (a convex blend) or cutmix (a pasted box), chosen with
    probability 1/2 when both are on. One lam ~ Beta(alpha, alpha) per batch; for cutmix it is the kept area.
    The loss is lam * CE(y) + (1 - lam) * CE(y.flip(0)). Both alphas 0: the batch unchanged and lam = 1."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, 1.0
    import numpy as np

    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha))
    partner = x.flip(0)
    if not use_cutmix:
        return x * lam + partner * (1.0 - lam), lam
    h, w = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
