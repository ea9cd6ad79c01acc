"""Physics-aware reconstruction metrics for multi-channel detector images, as pure functions of tensors
[N, C, H, W] (original, reconstruction) and a pixel mask [N, H, W] (1 = masked), plus per-channel panels on a
log colour scale. Used by `maekit reconstruct` for detector data; see docs/physics.md for the definitions.

The image jet mass treats every pixel as a massless particle with transverse momentum = the pixel value
(summed over the energy channels) at (eta, phi) = the pixel centre relative to the image centre. Boost
invariance along the beam makes the mass independent of where the image sits in eta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .detector import ECAL_DETA, ECAL_DPHI


def _grid(h: int, w: int, deta: float, dphi: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    eta = (torch.arange(h, device=device, dtype=dtype) - h // 2) * deta
    phi = (torch.arange(w, device=device, dtype=dtype) - w // 2) * dphi
    return eta.view(h, 1).expand(h, w), phi.view(1, w).expand(h, w)


def _select(x: torch.Tensor, channels: Sequence[int] | None) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
    return x if channels is None else x[:, list(channels)]


def disc(
    h: int, w: int, radius: float | None, deta: float = ECAL_DETA, dphi: float = ECAL_DPHI, device=None
) -> torch.Tensor:
    """Bool [H, W]: pixel centres within `radius` of the image centre in (eta, phi); all True if radius is None."""
    if radius is None:
        return torch.ones(h, w, dtype=torch.bool, device=device)
    eta, phi = _grid(h, w, deta, dphi, device, torch.float64)
    return eta**2 + phi**2 < radius**2


def pt_map(
    x: torch.Tensor, channels: Sequence[int] | None = None, radius: float | None = None, clamp: bool = True
) -> torch.Tensor:
    """[N, H, W] float64: the energy channels summed (negative values set to 0 when clamp), outside `radius` zeroed."""
    s = _select(x, channels).double().sum(dim=1)
    if clamp:
        s = s.clamp_min(0)
    return s * disc(s.shape[1], s.shape[2], radius, device=s.device)


def total_intensity(
    x: torch.Tensor, channels: Sequence[int] | None = None, radius: float | None = None
) -> torch.Tensor:
    """[N]: sum of the (selected) channels' pixels, e.g. the scalar sum of pT in GeV for the energy channels."""
    return pt_map(x, channels, radius, clamp=False).sum(dim=(1, 2))


def image_jet_mass(
    x: torch.Tensor,
    channels: Sequence[int] | None = None,
    radius: float | None = None,
    deta: float = ECAL_DETA,
    dphi: float = ECAL_DPHI,
) -> torch.Tensor:
    """[N]: invariant mass of the massless four-vectors (pT = pixel, eta, phi = pixel centre) of the image."""
    pt = pt_map(x, channels, radius)
    eta, phi = _grid(pt.shape[1], pt.shape[2], deta, dphi, pt.device, pt.dtype)
    e = (pt * torch.cosh(eta)).sum(dim=(1, 2))
    px = (pt * torch.cos(phi)).sum(dim=(1, 2))
    py = (pt * torch.sin(phi)).sum(dim=(1, 2))
    pz = (pt * torch.sinh(eta)).sum(dim=(1, 2))
    return (e**2 - px**2 - py**2 - pz**2).clamp_min(0).sqrt()


def image_jet_pt(
    x: torch.Tensor, channels: Sequence[int] | None = None, radius: float | None = None, dphi: float = ECAL_DPHI
) -> torch.Tensor:
    """[N]: magnitude of the vector sum of the pixels' transverse momenta."""
    pt = pt_map(x, channels, radius)
    _, phi = _grid(pt.shape[1], pt.shape[2], 0.0, dphi, pt.device, pt.dtype)
    return torch.hypot((pt * torch.cos(phi)).sum(dim=(1, 2)), (pt * torch.sin(phi)).sum(dim=(1, 2)))


def radial_moment(
    x: torch.Tensor,
    channels: Sequence[int] | None = None,
    radius: float | None = 0.4,
    deta: float = ECAL_DETA,
    dphi: float = ECAL_DPHI,
) -> torch.Tensor:
    """[N]: pT-weighted mean distance of the pixels from the image centre (the jet's "girth" / width)."""
    pt = pt_map(x, channels, radius)
    eta, phi = _grid(pt.shape[1], pt.shape[2], deta, dphi, pt.device, pt.dtype)
    r = torch.sqrt(eta**2 + phi**2)
    return (pt * r).sum(dim=(1, 2)) / pt.sum(dim=(1, 2)).clamp_min(1e-12)


def occupancy(x: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """[N, C]: fraction of pixels whose |value| exceeds threshold, per image and channel."""
    return (x.abs() > threshold).double().mean(dim=(2, 3))


def per_channel_mse(original: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[C]: mean squared error per channel over all pixels, or over the pixels where mask [N, H, W] is 1."""
    if original.shape != recon.shape:
        raise ValueError(f"original {tuple(original.shape)} and reconstruction {tuple(recon.shape)} differ in shape")
    se = (recon.double() - original.double()) ** 2
    if mask is None:
        return se.mean(dim=(0, 2, 3))
    m = _pixel_mask(mask, original).double()
    return (se * m).sum(dim=(0, 2, 3)) / m.sum(dim=(0, 2, 3)).clamp_min(1)


def _pixel_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N, H, W] or [N, 1, H, W] -> [N, 1, H, W] bool, checked against images [N, C, H, W]."""
    m = mask.unsqueeze(1) if mask.dim() == 3 else mask
    if m.shape[0] != like.shape[0] or m.shape[2:] != like.shape[2:] or m.shape[1] != 1:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit images {tuple(like.shape)}")
    return m.bool()


MIN_MASS_OVER_PT = 0.01  # images with mass below 1 % of their pT get no relative mass residual


def _summary(v: torch.Tensor) -> dict[str, float]:
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "mean_abs": float("nan"), "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()) if v.numel() > 1 else 0.0,
        "median": float(v.median()),
        "mean_abs": float(v.abs().mean()),
        "n": int(v.numel()),
    }


class ReconMetrics:
    """Reconstruction metrics of detector images accumulated over batches, all in the images' own units.

    update(original, recon, mask): original, recon [N, C, H, W]; mask [N, H, W] (1 = masked, i.e. predicted).
    result():
    - mse_masked / mse_all: per-channel MSE on the masked pixels and on all pixels (recon as predicted);
    - total_intensity / jet_mass: relative residuals (reco - orig) / orig per image, over the energy channels
      (default: all), summarised (mean, std, median, mean |.|); the reconstructed image has the visible pixels
      pasted back when paste_visible (what is known is not re-predicted); negative pixels count as 0 in the mass;
    - occupancy: mean fraction of pixels above occupancy_threshold per channel, original and reconstruction.
    """

    def __init__(
        self,
        channel_names: Sequence[str] | None = None,
        energy_channels: Sequence[int] | None = None,
        occupancy_threshold: float = 0.0,
        radius: float | None = None,
        paste_visible: bool = True,
    ):
        self.names = list(channel_names) if channel_names is not None else None
        self.energy = list(energy_channels) if energy_channels is not None else None
        self.threshold, self.radius, self.paste = occupancy_threshold, radius, paste_visible
        self.n = 0
        self.se_masked = self.n_masked = self.se_all = self.n_all = self.occ_o = self.occ_r = None
        self.ti: list[torch.Tensor] = []
        self.jm: list[torch.Tensor] = []

    def update(self, original: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor) -> None:
        if original.shape != recon.shape:
            raise ValueError(
                f"original {tuple(original.shape)} and reconstruction {tuple(recon.shape)} differ in shape"
            )
        c = original.shape[1]
        if self.names is None:
            self.names = [f"ch{i}" for i in range(c)]
        if len(self.names) != c:
            raise ValueError(f"{len(self.names)} channel names for {c} channels")
        m = _pixel_mask(mask, original)
        o, r = original.double(), recon.double()
        se = (r - o) ** 2
        md = m.double()
        full = torch.where(m, r, o) if self.paste else r
        parts = {
            "se_masked": (se * md).sum(dim=(0, 2, 3)),
            "n_masked": md.sum(dim=(0, 2, 3)).expand(c),
            "se_all": se.sum(dim=(0, 2, 3)),
            "n_all": torch.full((c,), float(se[:, 0].numel()), dtype=torch.float64),
            "occ_o": occupancy(o, self.threshold).sum(0),
            "occ_r": occupancy(full, self.threshold).sum(0),
        }
        for k, v in parts.items():
            setattr(self, k, v if getattr(self, k) is None else getattr(self, k) + v)
        self.ti.append(
            torch.stack(
                [total_intensity(o, self.energy, self.radius), total_intensity(full, self.energy, self.radius)], 1
            )
        )
        self.jm.append(
            torch.stack(
                [image_jet_mass(o, self.energy, self.radius), image_jet_mass(full, self.energy, self.radius)], 1
            )
        )
        self.n += original.shape[0]

    def result(self) -> dict:
        if self.n == 0:
            raise ValueError("no images")
        names = self.names
        mse_m = self.se_masked / self.n_masked.clamp_min(1)
        mse_a = self.se_all / self.n_all
        ti, jm = torch.cat(self.ti), torch.cat(self.jm)
        # relative residuals need a scale: the mass one leaves out (near-)massless images, e.g. a jet that is one
        # photon, where any reconstructed spread gives a residual of thousands of per cent
        ok_t, ok_m = ti[:, 0].abs() > 1e-12, jm[:, 0] > MIN_MASS_OVER_PT * ti[:, 0].abs().clamp_min(1e-12)
        return {
            "images": self.n,
            "channels": names,
            "energy_channels": [names[i] for i in (self.energy if self.energy is not None else range(len(names)))],
            "mse_masked": {n: float(v) for n, v in zip(names, mse_m)},
            "mse_all": {n: float(v) for n, v in zip(names, mse_a)},
            "mse_masked_mean": float(mse_m.mean()),
            "total_intensity": {
                "original_mean": float(ti[:, 0].mean()),
                "recon_mean": float(ti[:, 1].mean()),
                "rel_residual": _summary((ti[ok_t, 1] - ti[ok_t, 0]) / ti[ok_t, 0]),
            },
            "jet_mass": {
                "original_mean": float(jm[:, 0].mean()),
                "recon_mean": float(jm[:, 1].mean()),
                "rel_residual": _summary((jm[ok_m, 1] - jm[ok_m, 0]) / jm[ok_m, 0]),
                "left_out_massless": int((~ok_m).sum()),
            },
            "occupancy": {
                "threshold": self.threshold,
                "original": {n: float(v) / self.n for n, v in zip(names, self.occ_o)},
                "recon": {n: float(v) / self.n for n, v in zip(names, self.occ_r)},
            },
            "paste_visible": self.paste,
            "radius": self.radius,
        }


def recon_metrics(
    original: torch.Tensor,
    recon: torch.Tensor,
    mask: torch.Tensor,
    energy_channels: Sequence[int] | None = None,
    channel_names: Sequence[str] | None = None,
    occupancy_threshold: float = 0.0,
    radius: float | None = None,
    paste_visible: bool = True,
) -> dict:
    """ReconMetrics of one batch: see ReconMetrics."""
    acc = ReconMetrics(channel_names, energy_channels, occupancy_threshold, radius, paste_visible)
    acc.update(original, recon, mask)
    return acc.result()


def energy_channels_of(names: Sequence[str] | None, c: int) -> list[int]:
    """Which channels hold transverse momenta / energies: by name when known (pt, ecal, hcal, energy, et),
    else the ML4SCI orders: all of 1 or 3 channels, [0, 3, 4] of 8 (pT, d0, dz, ECAL, HCAL, 3 pixel layers)."""
    if names:
        keys = ("pt", "ecal", "hcal", "energy", "et", "calo", "track")
        bad = ("d0", "dz", "bpix", "pix", "hit", "ip")
        idx = [
            i for i, n in enumerate(names) if any(k in n.lower() for k in keys) and not any(b in n.lower() for b in bad)
        ]
        if idx:
            return idx
    return [0, 3, 4] if c == 8 else list(range(c))


def channel_panels(
    original: np.ndarray,
    mask: np.ndarray,
    recon: np.ndarray,
    out: str | Path,
    channel_names: Sequence[str] | None = None,
    title: str = "",
    max_images: int = 4,
) -> None:
    """Per-channel panels on a log colour scale: for each image (rows) and channel, original | masked | reconstruction.

    original, recon: [N, C, H, W] (numpy or tensors) in the data's units; mask [N, H, W] (1 = masked, drawn grey).
    Channels with negative values (impact parameters) use a symmetric log scale. Pixels at or below the
    colour scale's lower end are drawn black.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    original, recon, mask = (
        np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
        for a in (original, recon, mask)
    )
    n, c = min(max_images, original.shape[0]), original.shape[1]
    names = list(channel_names) if channel_names is not None else [f"ch{i}" for i in range(c)]
    fig, axes = plt.subplots(n, 3 * c, figsize=(1.5 * 3 * c, 1.6 * n + 0.6), squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.6", under="black")
    for j in range(c):
        for i in range(n):
            o, r, m = original[i, j], recon[i, j], mask[i] > 0.5
            top = float(np.abs(o).max()) if np.abs(o).max() > 0 else 1.0
            if (o < 0).any():
                lin = max(top * 1e-3, 1e-12)
                norm = mcolors.SymLogNorm(linthresh=lin, vmin=-top, vmax=top)
                cm = plt.get_cmap("coolwarm").with_extremes(bad="0.6")
            else:
                positive = o[o > 0]
                low = max(float(np.percentile(positive, 5)) if positive.size else top * 1e-3, top * 1e-4)
                norm = mcolors.LogNorm(vmin=low, vmax=top)
                cm = cmap
            for k, (img, label) in enumerate(((o, "original"), (np.where(m, np.nan, o), "masked"), (r, "recon"))):
                ax = axes[i, 3 * j + k]
                if isinstance(norm, mcolors.LogNorm):  # zeros and negatives: below the scale (black), not "bad"
                    img = np.where(np.isnan(img), np.nan, np.maximum(img, norm.vmin * 0.5))
                ax.imshow(np.ma.masked_invalid(img), cmap=cm, norm=norm, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{names[j]}\n{label}" if k == 0 else label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, Path(out))
