"""maekit reconstruct RUN_DIR: reconstruction grid and loss on a split, with fixed seeded masks."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import DataConfig, from_dict
from ..data.loader import load_splits, undo_preprocess
from ..data.transforms import normalize
from ..engine import checkpoint
from ..errors import MaekitError
from ..models.mae import MAE, HitDecoding
from ..runs import CALIBRATED, fixed_noise, hit_decoding_of, hit_generator, load_run, recon_loss
from .common import split_by_name, spread, write_recon_grid


def run(
    run_dir: str,
    split: str = "test",
    n: int = 8,
    mask_ratio: float | None = None,
    seed: int = 0,
    limit: int | None = None,
    out: str | None = None,
    hit_decoding: str = "top",
) -> dict:
    loaded = load_run(run_dir, "best")
    decoding = hit_decoding_of(loaded, hit_decoding)
    if mask_ratio is not None and not 0.0 < mask_ratio < 1.0:  # it reports the loss over the masked patches
        raise MaekitError(
            f"--mask-ratio must be in (0, 1) (the loss is taken over the masked patches), got {mask_ratio:g}"
        )
    data_cfg = from_dict(DataConfig, loaded.meta["data"]["config"], "data.")
    splits = load_splits(data_cfg)
    images = split_by_name(splits, split)
    model = MAE(loaded.model_cfg)
    checkpoint.load_weights(model, loaded.state, str(loaded.path))
    model.eval()
    data = images.images if limit is None else images.images[:limit]
    ratio = loaded.model_cfg.mask_ratio if mask_ratio is None else mask_ratio
    noise = fixed_noise(len(data), model.num_patches, seed)
    loss = recon_loss(model, data, loaded.mean, loaded.std, noise, ratio, progress=True)
    suffix = {"sample": "_sampled", CALIBRATED: "_calibrated"}.get(hit_decoding, "")
    out_png = Path(out) if out else loaded.path / f"reconstruct_{split}_mask{ratio:g}_seed{seed}{suffix}.png"
    k = min(n, len(data))
    grid = spread(len(data), k)  # every class of a split read class by class
    write_recon_grid(
        model,
        data[grid],
        loaded.mean,
        loaded.std,
        noise[grid],
        out_png,
        f"{split} images, mask ratio {ratio:g}, seed {seed}{DECODING_TITLES.get(hit_decoding, '')}",
        ratio,
        decoding,
        seed,
    )
    result = {
        "split": split,
        "images": len(data),
        "mask_ratio": ratio,
        "seed": seed,
        "recon_loss": loss,
        "grid": str(out_png),
    }
    if loaded.model_cfg.loss == "hit_intensity":
        result["hit_decoding"] = hit_decoding
        if hit_decoding == CALIBRATED:
            result["calibration"] = {"temperature": decoding.temperature, "intensity_scale": decoding.intensity_scale}
    if is_detector_data(splits):
        names = loaded.meta["data"].get("channel_names") or splits.channel_names
        panels = out_png.with_name(out_png.stem + "_channels.png")
        result["physics"] = physics_metrics(
            model,
            data,
            loaded.mean,
            loaded.std,
            noise,
            ratio,
            data_cfg,
            names,
            panels,
            f"{split} images, mask ratio {ratio:g}, seed {seed}{DECODING_TITLES.get(hit_decoding, '')}",
            k,
            mean_image(splits.train.images),
            hit_decoding=decoding,
            seed=seed,
        )
    with open(loaded.path / "reconstruct.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"{split} reconstruction loss (mask ratio {ratio:g}, seed {seed}, {len(data)} images): {loss:.5f}")
    print(f"grid: {out_png}")
    if "physics" in result:
        _print_physics(result["physics"])
    return result


DECODING_TITLES = {"sample": ", sampled hits", CALIBRATED: ", calibrated hits"}


def is_detector_data(splits) -> bool:
    """The rule for the physics-aware metrics: float images (photos are uint8 in maekit) with 2 or more channels,
    i.e. multi-channel detector data such as the ML4SCI jet images (HDF5, Parquet, float .npy)."""
    return splits.dtype == "float32" and splits.channels > 1


@torch.no_grad()
def mean_image(images, batch: int = 1024) -> torch.Tensor:
    """The training split's mean image [C, H, W], as the model reads it (preprocessed), in blocks (it may stream)."""
    total = None
    for i in range(0, len(images), batch):
        block = images[i : i + batch].float().sum(0)
        total = block if total is None else total + block
    return total / max(1, len(images))


@torch.no_grad()
def physics_metrics(
    model: MAE,
    data,
    mean: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor,
    ratio: float,
    data_cfg: DataConfig,
    names: list[str] | None,
    panels: Path | None,
    title: str,
    n_panels: int,
    baseline: torch.Tensor | None = None,
    batch_size: int = 64,
    hit_decoding: str | HitDecoding = "top",
    seed: int = 0,
) -> dict:
    """Per-channel MSE (masked / all pixels), total-intensity and image-jet-mass residuals, occupancy, and the
    per-channel log-scale panels, with the same fixed masks as the loss; with `baseline` (the training split's mean
    image) the same metrics for that image pasted into the masked patches, under "mean_image". See docs/physics.md."""
    from ..physics.metrics import ReconMetrics, channel_panels, energy_channels_of

    c, p = model.in_chans, model.patch_size
    known = list(names) if names and len(names) == c else None
    names = known or [f"ch{i}" for i in range(c)]
    energy = energy_channels_of(known, c)
    # occupancy counts pixels above the zero-suppression threshold: a reconstruction's empty pixels come back from
    # normalisation as +-1e-9 rather than exactly 0
    threshold = data_cfg.preprocess.zero_suppress or 0.0
    acc = ReconMetrics(names, energy, threshold)
    base = ReconMetrics(names, energy, threshold) if baseline is not None else None
    m_, s_ = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    first = None
    generator = hit_generator(seed)
    for i in range(0, len(data), batch_size):
        x = normalize(data[i : i + batch_size], mean, std)
        _, pred, mask = model(x, ratio, noise=noise[i : i + batch_size])
        recon = model.predictions_to_pixels(x, pred, mask, hit_decoding, generator)
        m = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p * c))[:, 0]
        o, r = undo_preprocess(x * s_ + m_, data_cfg.preprocess), undo_preprocess(recon * s_ + m_, data_cfg.preprocess)
        acc.update(o, r, m)
        if base is not None:  # the mean image wherever a patch is masked (ReconMetrics pastes the visible ones back)
            base.update(o, undo_preprocess(baseline.unsqueeze(0).expand_as(o), data_cfg.preprocess), m)
        if first is None:
            first = (o[:n_panels], m[:n_panels], r[:n_panels])
    out = acc.result()
    if base is not None:
        out["mean_image"] = {
            k: v for k, v in base.result().items() if k in ("mse_masked", "total_intensity", "jet_mass", "occupancy")
        }
    if panels is not None:
        channel_panels(first[0], first[1], first[2], panels, names, title, max_images=min(4, n_panels))
        out["panels"] = str(panels)
    out["units"] = "the data file's (data.preprocess log1p and scale undone)"
    if model.cfg.norm_pix_loss:
        out["note"] = (
            "norm_pix_loss: the reconstruction borrows each masked patch's true mean and variance, so the "
            "intensity and mass residuals flatter the model"
        )
    return out


def _print_physics(ph: dict) -> None:
    mse = ", ".join(f"{k} {v:.4g}" for k, v in ph["mse_masked"].items())
    print(f"per-channel MSE on masked pixels: {mse}")
    for key, label in (("total_intensity", "total intensity"), ("jet_mass", "image jet mass")):
        r = ph[key]["rel_residual"]
        print(
            f"{label} ({'+'.join(ph['energy_channels'])}): relative residual "
            f"{r['mean']:+.3f} +- {r['std']:.3f} (median {r['median']:+.3f})"
        )
    occ = ", ".join(
        f"{k} {ph['occupancy']['original'][k]:.4f}->{ph['occupancy']['recon'][k]:.4f}" for k in ph["channels"]
    )
    print(f"occupancy (original->reconstruction): {occ}")
    if "mean_image" in ph:  # the baseline: the training split's mean image in the masked patches
        b = ph["mean_image"]
        print(
            "baseline, mean training image pasted into the masked patches: total "
            f"intensity {b['total_intensity']['rel_residual']['mean']:+.3f}, image "
            f"jet mass {b['jet_mass']['rel_residual']['mean']:+.3f}, occupancy "
            + ", ".join(f"{k} {b['occupancy']['recon'][k]:.4f}" for k in ph["channels"])
        )
    print(f"channel panels: {ph['panels']}")
