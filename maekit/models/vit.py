"""Vision Transformer encoder: patch embedding for any channel count and H != W, pre-norm blocks with
scaled_dot_product_attention, fixed sin-cos position embeddings, cls token.

`forward_features(x)` returns normalised tokens [N, 1+L, D] (cls first); `forward_head(features)` pools
(cls or mean of patch tokens) and applies the classification head, as in timm's vision_transformer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .masking import patchify, random_masking
from .pos_embed import sincos_2d


class PatchEmbed(nn.Module):
    """[N, C, H, W] -> [N, L, D] with a non-overlapping p x p convolution."""

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        h, w = img_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"image size {h}x{w} is not divisible by patch size {patch_size}")
        self.img_size = (h, w)
        self.patch_size = patch_size
        self.grid_size = (h // patch_size, w // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.img_size:
            raise ValueError(f"expected images of size {self.img_size}, got {tuple(x.shape[-2:])}")
        # The same map as self.proj(x).flatten(2).transpose(1, 2), computed as one matmul on the patchified
        # image: on CPU a stride-p convolution takes the slow im2col path (about 10% of a small MAE's step).
        w = self.proj.weight
        weight = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)  # [D, p*p*C] in patchify's (row, col, channel) order
        return F.linear(patchify(x, self.patch_size), weight, self.proj.bias)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """scaled_dot_product_attention; under CPU autocast it runs in fp32. torch's CPU flash-attention backward in
    bf16 was measured 5x slower than in fp32 (1.30 s against 0.24 s for two ViT-Tiny steps on an AVX-512 BF16 CPU),
    which cancelled what bf16 matmuls gain; the linear layers around it stay in bf16."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):  # autocast would cast the inputs back to bf16
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, D] -> [N, T, D]."""
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(n, t, d)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth per sample (drops the residual branch of whole samples)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttention(nn.Module):
    """Queries [N, T, D] attend to a context [N, S, D] (keys and values); the queries do not see each other."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        h = self.num_heads
        q = self.q(x).reshape(n, t, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(n, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        x = attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class CrossBlock(nn.Module):
    """CrossMAE's decoder block (Fu et al. 2024, arXiv 2401.14391): x + cross_attn(norm(x), norm(context)), then
    x + mlp(norm(x)). Each query is computed on its own, so decoding a subset of queries gives exactly those
    queries' outputs."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm_context = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = CrossAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT encoder with a cls token and fixed (non-trained) 2-D sin-cos position embeddings."""

    def __init__(
        self,
        img_size: tuple[int, int],
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        num_classes: int = 0,
        global_pool: str = "cls",
        patch_dropout: float = 0.0,
    ):
        super().__init__()
        if global_pool not in ("cls", "mean"):
            raise ValueError(f"global_pool must be 'cls' or 'mean', got {global_pool!r}")
        if not 0.0 <= patch_dropout < 1.0:
            raise ValueError(f"patch_dropout must be in [0, 1), got {patch_dropout}")
        self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.patch_dropout = patch_dropout
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        gh, gw = self.patch_embed.grid_size
        self.register_buffer("pos_embed", sincos_2d(embed_dim, gh, gw, cls_token=True)[None], persistent=True)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, rates[i], norm_eps) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Reference MAE initialisation: xavier-uniform linears and patch projection, normal(0.02) cls."""
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(init_linear_and_norm)

    def reset_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> patch tokens with position embedding [N, L, D] (no cls token)."""
        return self.patch_embed(x) + self.pos_embed[:, 1:, :]

    def cls_with_pos(self, batch: int) -> torch.Tensor:
        """[N, 1, D] cls token plus its (zero) position embedding."""
        return (self.cls_token + self.pos_embed[:, :1, :]).expand(batch, -1, -1)

    def run_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, T, D] -> [N, T, D]: the transformer blocks and the final norm."""
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, 1+L, D], every patch visible; in training with patch_dropout, [N, 1+K, D] with a
        random K = int(L * (1 - patch_dropout)) patches per image (PatchDropout, Liu et al. 2023: the step costs
        about K/L as much, and it regularises like a crop)."""
        tokens = self.embed(x)
        if self.training and self.patch_dropout > 0:
            ids_keep, _, _ = random_masking(x.shape[0], tokens.shape[1], self.patch_dropout, device=x.device)
            tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[2]))
        return self.run_blocks(torch.cat([self.cls_with_pos(x.shape[0]), tokens], dim=1))

    def pool(self, features: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        """[N, 1+L, D] -> [N, D]: the cls token, or the mean of the patch tokens."""
        pool = pool or self.global_pool
        return features[:, 1:].mean(dim=1) if pool == "mean" else features[:, 0]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[N, 1+L, D] -> [N, num_classes] (or the pooled [N, D] with pre_logits)."""
        x = self.head_drop(self.pool(features))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def init_linear_and_norm(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
