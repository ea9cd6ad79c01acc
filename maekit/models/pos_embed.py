"""Fixed 2-D sine-cosine position embeddings (MAE, He et al. 2021), for any grid height and width."""

from __future__ import annotations

import torch


def sincos_1d(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """`pos` [M] -> [M, embed_dim]: first half sin, second half cos, float64."""
    if embed_dim % 2:
        raise ValueError(f"1-D sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(embed_dim: int, grid_h: int, grid_w: int, cls_token: bool = False) -> torch.Tensor:
    """Table [(1 if cls_token) + grid_h*grid_w, embed_dim], row-major over the patch grid.

    The layout is the reference one (facebookresearch/mae, transformers' ViTMAE): the first half of the
    channels encodes the column index, the second half the row index; the cls row is zeros.
    """
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}")
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )
    emb = torch.cat([sincos_1d(embed_dim // 2, cols), sincos_1d(embed_dim // 2, rows)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), emb], dim=0)
    return emb.float()
