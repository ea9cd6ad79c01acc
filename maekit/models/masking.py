"""Pure functions: patchify, unpatchify and per-sample random masking. Any channel count, H != W."""

from __future__ import annotations

import torch


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, L, p*p*C] with L = (H/p)*(W/p), patch pixels ordered (row, col, channel)."""
    n, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by patch size {p}")
    gh, gw = h // p, w // p
    x = imgs.reshape(n, c, gh, p, gw, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, gh * gw, p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int, height: int, width: int) -> torch.Tensor:
    """[N, L, p*p*C] -> [N, C, H, W]; inverse of `patchify`."""
    p = patch_size
    gh, gw = height // p, width // p
    n = x.shape[0]
    if x.shape[1] != gh * gw or x.shape[2] != p * p * channels:
        raise ValueError(f"cannot unpatchify {tuple(x.shape)} into {channels}x{height}x{width} with patch {p}")
    x = x.reshape(n, gh, gw, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, height, width)


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Visible patches per sample, as in the reference implementation: int(L * (1 - ratio))."""
    return int(num_patches * (1 - mask_ratio))


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of uniform noise (lowest noise is kept).

    Returns ids_keep [N, K] (K = visible patches), mask [N, L] (0 keep, 1 masked, in original patch order)
    and ids_restore [N, L] (the inverse permutation: gathering a shuffled sequence with it unshuffles it).
    Pass `noise` [N, L] to fix the masks (it is what transformers' ViTMAE accepts too) or a `generator`.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {mask_ratio}")
    if noise is None:
        noise = torch.rand(batch, num_patches, generator=generator, device=device)
    elif noise.shape != (batch, num_patches):
        raise ValueError(f"noise must have shape {(batch, num_patches)}, got {tuple(noise.shape)}")
    keep = num_kept(num_patches, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(batch, num_patches, device=noise.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_keep, mask, ids_restore
