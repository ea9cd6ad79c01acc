"""Masked Autoencoder (He et al. 2021) in stages, as in facebookresearch/mae:
forward_encoder -> forward_decoder -> forward_loss; `forward` returns (loss, pred, mask).

No I/O, no printing, no device logic. Works for any channel count and for H != W.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .masking import patchify, random_masking, unpatchify
from .pos_embed import sincos_2d
from .vit import Block, CrossBlock, ViT, init_linear_and_norm

LOSSES = ("mse", "hit_intensity")
# self: the MAE decoder, a transformer over the visible and the mask tokens. cross: CrossMAE's, where only the mask
# tokens go through the decoder and attend to the visible ones (cheaper: the visible tokens skip the decoder's MLPs)
DECODER_ATTENTIONS = ("self", "cross")
# ModelConfig fields that shape only the MAE's decoder or its pretraining objective: a ViT built from the config (the
# downstream commands' encoder) is the same whatever they are
PRETRAINING_ONLY_FIELDS = (
    "mask_ratio",
    "decoder_embed_dim",
    "decoder_depth",
    "decoder_num_heads",
    "decoder_keep",
    "decoder_attention",
    "norm_pix_loss",
    "loss",
    "empty_level",
    "signed_channels",
    "hit_variance",
)
# hit_intensity predictions -> pixels: "top" puts the expected number of hits at the most probable pixels (the
# expected occupancy, concentrated where hits are likeliest); "sample" draws each pixel's hit from its probability
# (a picture from the predicted hit map: the same expected occupancy, spread as the probabilities are)
HIT_DECODINGS = ("top", "sample")
HIT_PRIOR = 0.01  # initial hit probability of every pixel (hit_intensity): detector images are ~99 % empty
HIT_MARGIN = 1e-4  # normalised units above the empty level that count as a hit (float rounding of exact zeros)
LOG_VAR_RANGE = (-10.0, 10.0)  # hit_variance: the predicted log-variance is clamped here (normalised units)


@dataclass(frozen=True)
class HitDecoding:
    """How hit_intensity predictions become pixels (MAE.hit_pixels): `how` is one of HIT_DECODINGS; `temperature`
    spreads "top"'s hits from the most probable pixels (0) towards drawn ones (1); `intensity_scale` (one factor per
    channel) multiplies each hit's distance from the empty level. Both are fitted on held-out images by
    `maekit calibrate` so that the reconstruction's total intensity and jet mass come out unbiased."""

    how: str = "top"
    temperature: float = 0.0
    intensity_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.how not in HIT_DECODINGS:
            raise ValueError(f"hit decoding must be one of {', '.join(HIT_DECODINGS)}, got {self.how!r}")
        if self.temperature < 0:
            raise ValueError(f"hit decoding temperature must be >= 0, got {self.temperature}")

    @classmethod
    def of(cls, decoding: str | HitDecoding) -> HitDecoding:
        return decoding if isinstance(decoding, HitDecoding) else cls(decoding)


@dataclass
class ModelConfig:
    """Architecture of a ViT-MAE. `img_size` and `in_chans` left as None are taken from the data."""

    preset: str | None = None
    img_size: list[int] | None = None  # [H, W]; an int in YAML means a square image
    in_chans: int | None = None
    patch_size: int = 4
    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 4
    decoder_embed_dim: int = 96
    decoder_depth: int = 2
    decoder_num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    mask_ratio: float = 0.75
    decoder_keep: float = 1.0  # fraction of the masked patches decoded in training (CrossMAE-style); 1 = standard MAE
    decoder_attention: Literal["self", "cross"] = "self"
    norm_pix_loss: bool = False
    # mse: the MAE's pixel regression. hit_intensity, for sparse detector images: per pixel a hit probability (binary
    # cross-entropy against "above the empty level") and an intensity given a hit (squared error on hit pixels only,
    # relative to the channel's mean squared hit height)
    loss: Literal["mse", "hit_intensity"] = "mse"
    empty_level: list[float] | None = None  # per channel, the normalised value of an empty pixel (filled from the data)
    # per channel, whether its pixels can lie below the empty level (signed values such as a track's impact parameter;
    # filled from the data): a hit there is any pixel off the empty level, of either sign
    signed_channels: list[bool] | None = None
    # hit_intensity: also predict each hit intensity's variance (Gaussian likelihood of the intensity's residual), so
    # that "sample" pictures draw the intensity too, not only where the hits are (log-normal in file units with log1p)
    hit_variance: bool = False
    drop: float = 0.0
    drop_path: float = 0.0

    def validate(self, prefix: str = "model.") -> None:
        """Raise ValueError naming the first bad field."""
        if not 0.0 < self.mask_ratio < 1.0:  # at 0 no patch is masked and the loss is 0/0
            raise ValueError(
                f"{prefix}mask_ratio must be in (0, 1) (the loss is "
                f"taken over the masked patches), got {self.mask_ratio}"
            )
        for name in ("patch_size", "embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{prefix}{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_depth < 0:
            raise ValueError(f"{prefix}decoder_depth must be >= 0, got {self.decoder_depth}")
        for dim, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            if getattr(self, dim) % getattr(self, heads):
                raise ValueError(
                    f"{prefix}{dim}={getattr(self, dim)} is not divisible by {prefix}{heads}={getattr(self, heads)}"
                )
            if getattr(self, dim) % 4:
                raise ValueError(f"{prefix}{dim} must be divisible by 4 (2-D sin-cos position embedding)")
        if self.img_size is not None:
            if len(self.img_size) != 2 or min(self.img_size) < 1:
                raise ValueError(f"{prefix}img_size must be [height, width], got {self.img_size}")
            h, w = self.img_size
            if h % self.patch_size or w % self.patch_size:
                raise ValueError(f"{prefix}img_size {h}x{w} is not divisible by {prefix}patch_size={self.patch_size}")
        if self.loss not in LOSSES:
            raise ValueError(f"{prefix}loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.loss == "hit_intensity" and self.norm_pix_loss:
            raise ValueError(
                f"{prefix}loss=hit_intensity predicts pixels as they are; "
                f"it cannot be combined with {prefix}norm_pix_loss=true"
            )
        if self.hit_variance and self.loss != "hit_intensity":
            raise ValueError(
                f"{prefix}hit_variance applies to {prefix}loss=hit_intensity, got {prefix}loss={self.loss}"
            )
        if self.empty_level is not None and self.in_chans is not None and len(self.empty_level) != self.in_chans:
            raise ValueError(
                f"{prefix}empty_level lists {len(self.empty_level)} values, the images have {self.in_chans} channels"
            )
        if (
            self.signed_channels is not None
            and self.in_chans is not None
            and len(self.signed_channels) != self.in_chans
        ):
            raise ValueError(
                f"{prefix}signed_channels lists {len(self.signed_channels)} values, the images have {self.in_chans} "
                "channels"
            )
        if not 0.0 < self.decoder_keep <= 1.0:
            raise ValueError(f"{prefix}decoder_keep must be in (0, 1], got {self.decoder_keep}")
        if self.decoder_attention not in DECODER_ATTENTIONS:
            raise ValueError(
                f"{prefix}decoder_attention must be one of {', '.join(DECODER_ATTENTIONS)}, "
                f"got {self.decoder_attention!r}"
            )
        if not 0.0 <= self.drop_path < 1.0 or not 0.0 <= self.drop < 1.0:
            raise ValueError(f"{prefix}drop and {prefix}drop_path must be in [0, 1)")

    def resolved(self, img_size: tuple[int, int], in_chans: int) -> "ModelConfig":
        """A copy with the image size and channel count filled in (from the data) and validated."""
        cfg = dataclasses.replace(
            self,
            img_size=list(self.img_size) if self.img_size is not None else list(img_size),
            in_chans=self.in_chans if self.in_chans is not None else in_chans,
        )
        cfg.validate()
        return cfg

    @property
    def grid_size(self) -> tuple[int, int]:
        assert self.img_size is not None
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw


class MAE(nn.Module):
    """ViT encoder on visible patches + lightweight transformer decoder predicting every patch's pixels."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.img_size is None or cfg.in_chans is None:
            raise ValueError("ModelConfig.img_size and in_chans must be resolved before building the model")
        cfg.validate()
        self.cfg = cfg
        self.patch_size = cfg.patch_size
        self.in_chans = cfg.in_chans
        self.img_size = (cfg.img_size[0], cfg.img_size[1])
        self.encoder = ViT(
            img_size=self.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            drop=cfg.drop,
            drop_path=cfg.drop_path,
            norm_eps=cfg.norm_eps,
        )
        gh, gw = self.encoder.patch_embed.grid_size
        dd = cfg.decoder_embed_dim
        self.decoder_embed = nn.Linear(cfg.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer("decoder_pos_embed", sincos_2d(dd, gh, gw, cls_token=True)[None], persistent=True)
        block = CrossBlock if cfg.decoder_attention == "cross" else Block
        self.decoder_blocks = nn.ModuleList(
            block(dd, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.qkv_bias, norm_eps=cfg.norm_eps)
            for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=cfg.norm_eps)
        # hit_intensity: a hit logit and an intensity per pixel, [logits | intensities] along the last axis, and with
        # hit_variance the intensity's log-variance after them
        outputs = cfg.patch_size**2 * cfg.in_chans * self.outputs_per_pixel
        self.decoder_pred = nn.Linear(dd, outputs)
        if cfg.loss == "hit_intensity":
            if cfg.empty_level is None:
                raise ValueError("ModelConfig.empty_level must be resolved (from the data) for loss=hit_intensity")
            self.register_buffer("empty_level", torch.tensor(cfg.empty_level, dtype=torch.float32), persistent=False)
            signed = cfg.signed_channels or [False] * cfg.in_chans
            self.register_buffer("signed", torch.tensor(signed, dtype=torch.float32), persistent=False)
        for m in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            m.apply(init_linear_and_norm)
        nn.init.normal_(self.mask_token, std=0.02)
        if cfg.loss == "hit_intensity":  # hit logits start at a 1 % prior, not 50 % (the prior init of RetinaNet's
            with torch.no_grad():  # classifier): a few hundred steps otherwise go to unlearning the 50 %
                self.decoder_pred.bias[: outputs // self.outputs_per_pixel] = math.log(HIT_PRIOR / (1 - HIT_PRIOR))

    @property
    def outputs_per_pixel(self) -> int:
        if self.cfg.loss != "hit_intensity":
            return 1
        return 3 if self.cfg.hit_variance else 2

    def hit_outputs(self, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """hit_intensity predictions [N, L, k*p*p*C] -> (hit logits, intensities, log-variances or None), in fp32."""
        parts = pred.float().chunk(self.outputs_per_pixel, dim=-1)
        return parts[0], parts[1], parts[2].clamp(*LOG_VAR_RANGE) if self.cfg.hit_variance else None

    @property
    def num_patches(self) -> int:
        return self.encoder.patch_embed.num_patches

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, L, p*p*C]."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[N, L, p*p*C] -> [N, C, H, W]."""
        return unpatchify(x, self.patch_size, self.in_chans, *self.img_size)

    def forward_encoder(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs [N, C, H, W] -> latent [N, 1+K, D] (cls + K visible tokens), mask [N, L], ids_restore [N, L]."""
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        tokens = self.encoder.embed(imgs)
        n, length, d = tokens.shape
        ids_keep, mask, ids_restore = random_masking(
            n, length, ratio, noise=noise, generator=generator, device=imgs.device
        )
        visible = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        latent = self.encoder.run_blocks(torch.cat([self.encoder.cls_with_pos(n), visible], dim=1))
        return latent, mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent [N, 1+K, D], ids_restore [N, L] -> predicted patches [N, L, p*p*C]."""
        if self.cfg.decoder_attention == "cross":  # a query at every position, visible ones included
            n, length = ids_restore.shape
            ids_all = torch.arange(length, device=latent.device).expand(n, -1)
            return self.decode_queries(self.decoder_context(latent, torch.argsort(ids_restore, dim=1)), ids_all)
        x = self.decoder_embed(latent)
        n, length = ids_restore.shape
        dd = x.shape[-1]
        mask_tokens = self.mask_token.to(x.dtype).expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dd))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:]

    def forward_decoder_partial(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, num_decoded: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the visible tokens and only `num_decoded` of the masked ones (the first in the random shuffle,
        so a uniform random subset), as in CrossMAE's partial reconstruction: the decoder sees K + num_decoded
        tokens instead of L. latent [N, 1+K, D], ids_restore [N, L] -> (pred [N, L, p*p*C], zero where not
        decoded; decoded [N, L], 1 for the decoded masked patches). With every masked patch decoded it gives
        forward_decoder's predictions (up to float rounding: attention does not depend on token order). With
        decoder_attention=cross only the decoded patches' queries go through the decoder."""
        n, length = ids_restore.shape
        k = latent.shape[1] - 1
        ids_shuffle = torch.argsort(ids_restore, dim=1)
        ids_decoded = ids_shuffle[:, k : k + num_decoded]
        context = self.decoder_context(latent, ids_shuffle)
        if self.cfg.decoder_attention == "cross":
            out = self.decode_queries(context, ids_decoded)
        else:
            x = torch.cat([context, self.mask_token.to(context.dtype) + self.decoder_positions(ids_decoded)], dim=1)
            for blk in self.decoder_blocks:
                x = blk(x)
            out = self.decoder_pred(self.decoder_norm(x[:, 1 + k :]))
        pred = out.new_zeros(n, length, out.shape[-1]).scatter(
            1, ids_decoded.unsqueeze(-1).expand(-1, -1, out.shape[-1]), out
        )
        decoded = torch.zeros(n, length, device=latent.device).scatter(1, ids_decoded, 1.0)
        return pred, decoded

    def decoder_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Patch indices [N, T] -> their decoder position embeddings [N, T, D_dec]."""
        pos = self.decoder_pos_embed[:, 1:].expand(ids.shape[0], -1, -1)
        return torch.gather(pos, 1, ids.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))

    def decoder_context(self, latent: torch.Tensor, ids_shuffle: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens in decoder width with their positions: latent [N, 1+K, D] -> [N, 1+K, D_dec].
        ids_shuffle [N, L]: the masking's patch order, the K visible patches first (argsort of ids_restore)."""
        x = self.decoder_embed(latent)
        ids_visible = ids_shuffle[:, : x.shape[1] - 1]
        return torch.cat([x[:, :1] + self.decoder_pos_embed[:, :1], x[:, 1:] + self.decoder_positions(ids_visible)], 1)

    def decode_queries(self, context: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Cross-attention decoder: mask tokens at patch indices ids [N, T] attend to context [N, 1+K, D_dec] ->
        predictions [N, T, p*p*C]."""
        x = self.mask_token.to(context.dtype) + self.decoder_positions(ids)
        for blk in self.decoder_blocks:
            x = blk(x, context)
        return self.decoder_pred(self.decoder_norm(x))

    def targets(self, imgs: torch.Tensor) -> torch.Tensor:
        """The regression targets [N, L, p*p*C]: pixels, or per-patch normalised pixels (norm_pix_loss)."""
        target = self.patchify(imgs)
        if self.cfg.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def empty_patches(self, dtype: torch.dtype) -> torch.Tensor:
        """[1, L, p*p*C] the empty level of every pixel, patchified like the predictions (hit_intensity)."""
        return self.patchify(self.empty_level.view(1, -1, 1, 1).expand(1, -1, *self.img_size).to(dtype))

    def signed_patches(self) -> torch.Tensor:
        """[1, L, p*p*C] 1.0 on the pixels of signed channels, patchified like the predictions (hit_intensity)."""
        return self.patchify(self.signed.view(1, -1, 1, 1).expand(1, -1, *self.img_size))

    def hits(self, imgs: torch.Tensor) -> torch.Tensor:
        """[N, L, p*p*C] 1.0 where a pixel is above its channel's empty level, or off it on a signed channel
        (hit_intensity)."""
        off = self.patchify(imgs) - self.empty_patches(imgs.dtype)
        off = torch.where(self.signed_patches() > 0, off.abs(), off)
        return (off > HIT_MARGIN).float()

    def hit_pixels(
        self,
        pred: torch.Tensor,
        mask: torch.Tensor | None,
        decoding: str | HitDecoding = "top",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """hit_intensity predictions [N, L, k*p*p*C] -> pixels [N, L, p*p*C] over the `mask`ed patches (HitDecoding):
        "top": per image and channel, the round(sum of hit probabilities) most probable pixels are hits, or with a
        temperature T > 0 the pixels whose log-probability plus T times Gumbel noise is highest (T = 1 draws that many
        pixels without replacement in proportion to their probabilities); "sample": each pixel is a hit with its
        probability. Draws use `generator`. A hit gets its predicted intensity, at least the empty level (on a signed
        channel, any value); with hit_variance, "sample" draws it from the predicted normal, truncated to the side of
        the empty level its intensity is on (a hit is not empty). An intensity_scale multiplies each hit's distance
        from the empty level, per channel."""
        decoding = HitDecoding.of(decoding)
        logits, intensity, log_var = self.hit_outputs(pred)
        n, L, P = logits.shape
        c = self.cfg.in_chans
        inside = torch.ones(n, L, device=pred.device) if mask is None else mask.float()
        prob = torch.sigmoid(logits) * inside[..., None]  # patches outside the mask never hold a hit
        if decoding.how == "sample":
            hit = uniform(prob.shape, generator, pred.device) < prob
        else:
            per_channel = prob.reshape(n, L * P // c, c)  # patch pixels are ordered (row, col, channel)
            count = per_channel.sum(dim=1).round()  # [N, C] expected hits
            score = per_channel
            if decoding.temperature > 0:  # Gumbel-top-k: log p + T * (-log(-log u))
                u = uniform(per_channel.shape, generator, pred.device).clamp(1e-12, 1.0 - 1e-7)
                score = per_channel.log() - decoding.temperature * (-u.log()).log()
            order = score.argsort(dim=1, descending=True).argsort(dim=1)  # rank of every pixel in its channel
            hit = ((order < count[:, None, :]) & (per_channel > 0)).reshape(n, L, P)
        level = self.empty_patches(torch.float32).expand_as(intensity)
        signed = self.signed_patches().expand_as(intensity) > 0
        if decoding.how == "sample" and log_var is not None:  # drawn as level + side * (a draw above 0)
            side = torch.where(signed & (intensity < level), -1.0, 1.0)
            intensity = level + side * truncated_normal(side * (intensity - level), (0.5 * log_var).exp(), 0, generator)
        if decoding.intensity_scale is not None:
            scale = torch.tensor(decoding.intensity_scale, dtype=intensity.dtype, device=intensity.device)
            intensity = level + scale.repeat(P // c) * (intensity - level)
        pixels = torch.where(hit, torch.where(signed, intensity, torch.maximum(intensity, level)), level)
        return pixels.to(pred.dtype)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Over the masked patches only (scalar): the mean squared error, or for hit_intensity the hit
        cross-entropy (mean over their pixels) plus the squared error of the intensity on their hit pixels, divided
        by the channel's mean squared hit height above the empty level in this batch (predicting empty costs 1); with
        hit_variance plus the Gaussian negative log-likelihood of that error under the predicted variance."""
        if self.cfg.loss == "hit_intensity":
            logits, intensity, log_var = self.hit_outputs(pred)
            hit = self.hits(imgs)
            pixels = mask.unsqueeze(-1).expand_as(hit)
            bce = nn.functional.binary_cross_entropy_with_logits(logits, hit, reduction="none")
            on_hit = hit * pixels
            target = self.patchify(imgs).float()
            sq = (intensity - target) ** 2
            # relative to each channel's mean squared hit height above empty in the batch, so that predicting "empty"
            # costs 1 and the term weighs like the cross-entropy: in normalised units hits sit ~5 standard deviations
            # up, and the raw squared error (~25) drowned the cross-entropy (~0.1): the hit map was never learnt
            c = self.cfg.in_chans
            height = ((target - self.empty_patches(target.dtype)) ** 2 * on_hit).reshape(-1, c).sum(0)
            scale = (height / on_hit.reshape(-1, c).sum(0).clamp(min=1.0)).clamp(min=1e-6).detach()
            relative = (sq.reshape(-1, c) / scale * on_hit.reshape(-1, c)).sum()
            loss = (bce * pixels).sum() / pixels.sum() + relative / on_hit.sum().clamp(min=1.0)
            if log_var is not None:  # Gaussian negative log-likelihood of the residual, around the intensity as it is
                # (detached: a learnt variance would otherwise let the intensity fit worse where it is unsure)
                nll = 0.5 * (log_var + (target - intensity.detach()) ** 2 * (-log_var).exp())
                loss = loss + (nll * on_hit).sum() / on_hit.sum().clamp(min=1.0)
            return loss
        per_patch = ((pred.float() - self.targets(imgs).float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs [N, C, H, W] -> (loss, pred [N, L, p*p*C], mask [N, L]).

        In training with `decoder_keep` < 1 only that fraction of the masked patches is decoded: `pred` is zero
        elsewhere and `mask` marks the decoded patches, the ones the loss is taken over."""
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise, generator)
        masked = mask.shape[1] - (latent.shape[1] - 1)  # L - K, with no host sync
        cross = self.cfg.decoder_attention == "cross"  # in training it decodes only masked patches, even at keep 1
        if self.training and (cross or self.cfg.decoder_keep < 1.0 and masked > 1):
            pred, mask = self.forward_decoder_partial(
                latent, ids_restore, max(1, round(self.cfg.decoder_keep * masked))
            )
            return self.forward_loss(imgs, pred, mask), pred, mask
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def predictions_to_pixels(
        self,
        imgs: torch.Tensor,
        pred: torch.Tensor,
        mask: torch.Tensor | None = None,
        hit_decoding: str | HitDecoding = "top",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Predicted patches [N, L, p*p*C] -> images [N, C, H, W] in the input's (normalised) pixel space.

        With norm_pix_loss the predictions are per-patch standardised; they are mapped back with each
        patch's mean and variance from `imgs` (what the reference visualisation does), so such pictures
        borrow the true patch brightness and contrast.

        hit_intensity: by default each image and channel gets as many hits as its hit probabilities add up to over
        the patches of `mask` [N, L] (1 = predicted; None = all), at its most probable pixels, with their predicted
        intensity; every other pixel is empty. So the occupancy is the expected one, where "p > 0.5" would keep almost
        none of a sparse image's hits. hit_decoding="sample" draws the hits instead (see hit_pixels).
        """
        if self.cfg.loss == "hit_intensity":
            pred = self.hit_pixels(pred, mask, hit_decoding, generator)
        if self.cfg.norm_pix_loss:
            target = self.patchify(imgs)
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            pred = pred * (var + 1.0e-6) ** 0.5 + mean
        return self.unpatchify(pred)


def uniform(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U(0, 1) draws from `generator` (on its device), or from the global generator on `device`."""
    return torch.rand(shape, generator=generator, device=generator.device if generator is not None else device)


def truncated_normal(
    mean: torch.Tensor, std: torch.Tensor, low: torch.Tensor | float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One draw per element from N(mean, std^2) restricted to values above `low`, by the inverse CDF."""
    below = torch.special.ndtr((low - mean) / std)
    u = uniform(mean.shape, generator, mean.device)
    p = (below + u * (1.0 - below)).clamp(1e-7, 1.0 - 1e-7)
    return mean + std * torch.special.ndtri(p)


def build_mae(cfg: ModelConfig) -> MAE:
    return MAE(cfg)
