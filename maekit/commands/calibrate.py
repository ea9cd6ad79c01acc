"""maekit calibrate RUN_DIR: fit the "calibrated" hit decoding of a model.loss=hit_intensity run on held-out images.

Per-pixel hit probabilities say how likely each pixel is to be hit, not which pixels are hit together, so no
per-pixel decoding gets both the energy and its spread right: "top" piles the hits on the jet core (jet mass too
low), independent draws scatter them (mass too high). The calibrated decoding sits between the two, as a detector's
energy calibration does: "top"'s count of hits chosen by Gumbel-top-k at a temperature T, and each channel's hit
intensities scaled about the empty level. Per T of a grid, one pass finds the scales that make the channel's summed
|energy| in the masked patches equal the original's (ratio of sums over the split, by bisection); a second pass
measures the jet mass; the T whose mean jet-mass residual is nearest zero is kept. Fitted on the validation split
(never the test split), written to RUN_DIR/hit_calibration.json, read by `--hit-decoding calibrated`.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..config import DataConfig, PreprocessConfig, from_dict
from ..data.loader import load_splits, undo_preprocess
from ..data.transforms import normalize
from ..engine import checkpoint
from ..errors import MaekitError
from ..files import save_json
from ..models.mae import MAE, HitDecoding
from ..runs import HIT_CALIBRATION, fixed_noise, hit_generator, load_run
from .common import split_by_name
from .reconstruct import is_detector_data, mean_image, physics_metrics

TEMPERATURES = tuple(round(0.1 * i, 1) for i in range(11))  # 0 ("top") .. 1 (hits drawn in proportion)
SCALE_RANGE = (0.125, 8.0)  # searched for each channel's intensity scale


def run(
    run_dir: str,
    split: str = "val",
    limit: int | None = 2000,
    seed: int = 0,
    temperatures: tuple[float, ...] = TEMPERATURES,
    batch_size: int = 64,
) -> dict:
    if split == "test":
        raise MaekitError(
            "--split test: calibrating on the test split would leave no unseen images to measure the calibration on; "
            "use val (default) or train"
        )
    loaded = load_run(run_dir, "best")
    if loaded.model_cfg.loss != "hit_intensity":
        raise MaekitError(
            f"{loaded.path}: calibrate fits the hit decoding of model.loss=hit_intensity; "
            f"this run's model.loss is {loaded.model_cfg.loss}"
        )
    if not temperatures or any(t < 0 for t in temperatures):
        raise MaekitError(f"temperatures must be numbers >= 0, got {','.join(map(str, temperatures)) or 'none'}")
    data_cfg = from_dict(DataConfig, loaded.meta["data"]["config"], "data.")
    splits = load_splits(data_cfg)
    if not is_detector_data(splits):
        raise MaekitError(f"{data_cfg.path}: calibrate is for detector images (float, 2 or more channels)")
    images = split_by_name(splits, split).images
    data = images if limit is None else images[:limit]
    if len(data) == 0:
        raise MaekitError(f"the {split} split of {data_cfg.path} is empty: nothing to calibrate on")
    model = MAE(loaded.model_cfg)
    checkpoint.load_weights(model, loaded.state, str(loaded.path))
    model.eval()
    ratio = loaded.model_cfg.mask_ratio
    noise = fixed_noise(len(data), model.num_patches, seed)
    names = loaded.meta["data"].get("channel_names") or splits.channel_names
    baseline = mean_image(splits.train.images)
    rows = []
    for t in tqdm(temperatures, desc="calibrate: temperatures", unit="T"):
        scales = fit_scales(model, data, loaded.mean, loaded.std, noise, ratio, data_cfg, t, seed, batch_size)
        decoding = HitDecoding("top", t, scales)
        ph = physics_metrics(
            model, data, loaded.mean, loaded.std, noise, ratio, data_cfg, names, None, "", 1, None, batch_size,
            decoding, seed,
        )  # fmt: skip
        rows.append(
            {
                "temperature": t,
                "intensity_scale": list(scales),
                "total_intensity": ph["total_intensity"]["rel_residual"],
                "jet_mass": ph["jet_mass"]["rel_residual"],
                "occupancy": ph["occupancy"],
            }
        )
    best = min(rows, key=lambda r: (abs(r["jet_mass"]["mean"]), r["temperature"]))
    top = physics_metrics(
        model, data, loaded.mean, loaded.std, noise, ratio, data_cfg, names, None, "", 1, baseline, batch_size,
        "top", seed,
    )  # fmt: skip
    result = {
        "temperature": best["temperature"],
        "intensity_scale": best["intensity_scale"],
        "fitted_on": {"split": split, "images": len(data), "mask_ratio": ratio, "mask_seed": seed},
        "channels": top["channels"],
        "criterion": "intensity scales: summed |energy| in the masked patches equals the original's, per channel; "
        "temperature: mean jet-mass relative residual nearest zero",
        "on_the_fit_split": {
            "calibrated": {k: best[k] for k in ("total_intensity", "jet_mass")},
            "top": {k: top[k]["rel_residual"] for k in ("total_intensity", "jet_mass")},
            "mean_image": {k: top["mean_image"][k]["rel_residual"] for k in ("total_intensity", "jet_mass")},
        },
        "grid": rows,
    }
    path = loaded.path / HIT_CALIBRATION
    existed = path.exists()
    save_json(path, result)
    _print(result, path, existed)
    return result


@torch.no_grad()
def fit_scales(
    model: MAE,
    data,
    mean: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor,
    ratio: float,
    data_cfg: DataConfig,
    temperature: float,
    seed: int,
    batch_size: int = 64,
) -> tuple[float, ...]:
    """Per channel, the factor on the hits' distance from the empty level at which the reconstruction's summed
    |energy| (file units) over the masked patches equals the original's, with "top" at `temperature`; 1 on signed
    channels (model.signed_channels: impact parameters, whose hits' predicted values average over both signs)."""
    c, p = model.in_chans, model.patch_size
    pre = data_cfg.preprocess
    offsets: list[list[torch.Tensor]] = [[] for _ in range(c)]  # per channel: hits' preprocessed distance from empty
    target = torch.zeros(c, dtype=torch.float64)
    generator = hit_generator(seed)
    decoding = HitDecoding("top", temperature)
    s_ = std.view(1, -1, 1, 1)
    for i in range(0, len(data), batch_size):
        x = normalize(data[i : i + batch_size], mean, std)
        _, pred, mask = model(x, ratio, noise=noise[i : i + batch_size])
        recon = model.predictions_to_pixels(x, pred, mask, decoding, generator)
        level = model.empty_level.view(1, -1, 1, 1)
        m = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p * c))[:, :1] > 0  # [N, 1, H, W]
        original = (x - level) * s_  # preprocessed units, 0 = empty
        target += undo_preprocess(original * m, pre).abs().double().sum(dim=(0, 2, 3))
        off = (recon - level) * s_
        for ch in range(c):
            values = off[:, ch][m[:, 0]]
            offsets[ch].append(values[values != 0])
    scales = []
    for ch in range(c):
        if model.signed[ch] > 0:  # a hit's predicted value there averages over both signs: no magnitude to scale
            scales.append(1.0)
            continue
        u = torch.cat(offsets[ch]).double()
        scales.append(_solve_scale(u, ch, target[ch].item(), pre))
    return tuple(scales)


def _solve_scale(offsets: torch.Tensor, channel: int, target: float, pre: PreprocessConfig) -> float:
    """Bisection for s in SCALE_RANGE with sum |file units of s * offsets| = target (monotone in s); 1.0 when the
    channel has no hits or no energy to match."""
    if offsets.numel() == 0 or target <= 0:
        return 1.0

    def energy(s: float) -> float:
        x = (s * offsets).abs()
        x = torch.expm1(x) if pre.log1p else x
        return (x.sum() / (pre.scale[channel] if pre.scale is not None else 1.0)).item()

    lo, hi = SCALE_RANGE
    if energy(hi) <= target:
        return hi
    if energy(lo) >= target:
        return lo
    for _ in range(40):  # geometric bisection: the range spans factors
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if energy(mid) < target else (lo, mid)
    return (lo * hi) ** 0.5


def _print(result: dict, path, existed: bool) -> None:
    fit = result["on_the_fit_split"]
    print(
        f"{'replaced ' if existed else ''}{path}: temperature {result['temperature']:g}, intensity scale "
        + ", ".join(f"{n} {s:.3f}" for n, s in zip(result["channels"], result["intensity_scale"], strict=True))
    )
    f = result["fitted_on"]
    print(f"on the {f['split']} split ({f['images']} images, mask ratio {f['mask_ratio']:g}), mean relative residuals:")
    for name, r in fit.items():
        print(
            f"  {name:10s} total intensity {r['total_intensity']['mean']:+.3f} +- {r['total_intensity']['std']:.3f}, "
            f"jet mass {r['jet_mass']['mean']:+.3f} +- {r['jet_mass']['std']:.3f}"
        )
    print(f"use it: maekit reconstruct {path.parent} --hit-decoding calibrated")
