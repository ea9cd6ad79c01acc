"""maekit compress RUN_DIR [--data FILE]: the MAE as a lossy codec for detector images, against raw and sparse storage.

For each mask ratio the encoder turns an image into latent tokens (cls + visible patches) stored as float16 plus the
indices of the visible patches; the decoder turns them back into a whole image (no pixel is kept). Reported per
image: bytes of that code, of the raw float32 image, and of a zero-suppressed sparse encoding (value float32 +
flat index of every pixel above data.preprocess.zero_suppress), with the physics fidelity of the decoded images
(per-channel MSE, total-intensity and image-jet-mass residuals, occupancy) in the file's units. The sparse
encoding is exact above its threshold: it is the baseline to beat, and for very sparse images it usually wins.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import DataConfig, from_dict
from ..data.loader import load_splits, undo_preprocess
from ..data.transforms import eval_batch_size, normalize
from ..engine import checkpoint
from ..errors import MaekitError
from ..files import atomic_write_text
from ..models.mae import MAE
from ..models.masking import num_kept
from ..runs import fixed_noise, hit_decoding_of, hit_generator, load_run
from .common import split_by_name

RATIOS = (0.0, 0.5, 0.75, 0.9)


@torch.no_grad()
def run(
    run_dir: str,
    data: str | None = None,
    split: str = "test",
    ratios: tuple[float, ...] = RATIOS,
    limit: int | None = 2000,
    seed: int = 0,
    out: str | None = None,
    hit_decoding: str = "top",
) -> dict:
    from ..physics.metrics import ReconMetrics, energy_channels_of

    loaded = load_run(run_dir, "best")
    decoding = hit_decoding_of(loaded, hit_decoding)
    for r in ratios:
        if not 0.0 <= r < 1.0:
            raise MaekitError(f"--mask-ratios must be in [0, 1), got {r}")
    raw_cfg = dict(loaded.meta["data"]["config"])
    if data is not None:
        raw_cfg.update(path=str(data), test_path=None)
    data_cfg = from_dict(DataConfig, raw_cfg, "data.")
    data_cfg.validate()
    splits = load_splits(data_cfg)
    if splits.dtype != "float32":
        raise MaekitError(f"compress is for float detector images; {data_cfg.path} holds {splits.dtype} images")
    model = MAE(loaded.model_cfg)
    checkpoint.load_weights(model, loaded.state, str(loaded.path))
    model.eval()
    images = split_by_name(splits, split).images
    images = images[: limit or len(images)]
    n, (c, h, w) = len(images), tuple(images.shape[1:])
    names = loaded.meta["data"].get("channel_names") or splits.channel_names or [f"ch{i}" for i in range(c)]
    energy = energy_channels_of(names if len(names) == c else None, c)
    pre = data_cfg.preprocess
    mean, std = loaded.mean, loaded.std
    m_, s_ = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    L, D = model.num_patches, loaded.model_cfg.embed_dim
    index_bytes = 2 if c * h * w < 2**16 else 4
    patch_index_bytes = 1 if L < 2**8 else 2
    raw_bytes = c * h * w * 4
    threshold = pre.zero_suppress or 0.0
    bs = eval_batch_size(images, most=256)
    nnz = 0
    rows = []
    for ratio in ratios:
        keep = num_kept(L, ratio)  # the encoder's own count of visible patches
        noise = fixed_noise(n, L, seed)
        generator = hit_generator(seed)
        acc = ReconMetrics(names, energy, threshold, paste_visible=False)
        for i in range(0, n, bs):
            x = normalize(images[i : i + bs], mean, std)
            latent, mask, ids_restore = model.forward_encoder(x, ratio, noise=noise[i : i + bs])
            pred = model.forward_decoder(latent.half().float(), ids_restore)  # what float16 storage gives back
            recon = model.predictions_to_pixels(x, pred, None, decoding, generator)
            o = undo_preprocess(x * s_ + m_, pre)
            acc.update(o, undo_preprocess(recon * s_ + m_, pre), torch.ones(x.shape[0], h, w))
            if ratio == ratios[0]:
                nnz += int((o.abs() > threshold).sum())
        code = (1 + keep) * D * 2 + (keep * patch_index_bytes if ratio > 0 else 0)
        if loaded.model_cfg.norm_pix_loss:
            # the decoder predicts standardised patches: each patch's mean and std (float16) are needed too
            code += L * 2 * 2
        res = acc.result()
        rows.append(
            {
                "method": f"MAE latent, mask {ratio:g}",
                "mask_ratio": ratio,
                "bytes_per_image": code,
                "vs_raw": raw_bytes / code,
                "mse_mean": float(sum(res["mse_all"].values()) / c),
                "mass_rel_residual_mean_abs": res["jet_mass"]["rel_residual"]["mean_abs"],
                "intensity_rel_residual_mean_abs": res["total_intensity"]["rel_residual"]["mean_abs"],
                "occupancy_recon": res["occupancy"]["recon"],
                "metrics": res,
            }
        )
    sparse = nnz / n * (4 + index_bytes)
    rows.append(
        {
            "method": f"sparse (values above {threshold:g}: float32 value + {index_bytes}-byte index)",
            "mask_ratio": None,
            "bytes_per_image": sparse,
            "vs_raw": raw_bytes / sparse if sparse else float("inf"),
            "mse_mean": 0.0,
            "mass_rel_residual_mean_abs": 0.0,
            "intensity_rel_residual_mean_abs": 0.0,
            "note": f"exact above the threshold; {nnz / n:.0f} stored pixels per image on average",
        }
    )
    rows.append(
        {
            "method": "raw float32",
            "mask_ratio": None,
            "bytes_per_image": raw_bytes,
            "vs_raw": 1.0,
            "mse_mean": 0.0,
            "mass_rel_residual_mean_abs": 0.0,
            "intensity_rel_residual_mean_abs": 0.0,
        }
    )
    result = {
        "run": str(loaded.path),
        "data": data_cfg.path,
        "split": split,
        "images": n,
        "shape": [c, h, w],
        "seed": seed,
        **({"hit_decoding": hit_decoding} if loaded.model_cfg.loss == "hit_intensity" else {}),
        **(
            {"calibration": {"temperature": decoding.temperature, "intensity_scale": decoding.intensity_scale}}
            if decoding.intensity_scale is not None
            else {}
        ),
        "units": "the data file's (data.preprocess log1p and scale undone)",
        "rows": rows,
    }
    md = [
        f"Compression of {n} {split} images {c}x{h}x{w} of {data_cfg.path} with {loaded.path} (units: the file's).",
        "",
        "| encoding | bytes / image | x smaller than raw | MSE (mean over channels) | image "
        "jet mass, mean abs rel. residual | total intensity, mean abs rel. residual |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['method']} | {r['bytes_per_image']:,.0f} | {r['vs_raw']:.1f} | {r['mse_mean']:.4g} | "
            f"{r['mass_rel_residual_mean_abs']:.3f} | {r['intensity_rel_residual_mean_abs']:.3f} |"
        )
    best_mae = min((r for r in rows if r["mask_ratio"] is not None), key=lambda r: r["bytes_per_image"])
    verdict = (
        "the sparse encoding is smaller and exact"
        if sparse <= best_mae["bytes_per_image"]
        else "the MAE code is smaller than the sparse encoding, at the fidelity shown"
    )
    md += [
        "",
        f"Smallest MAE code: {best_mae['bytes_per_image']:,.0f} bytes (mask "
        f"{best_mae['mask_ratio']:g}); sparse: {sparse:,.0f} bytes: {verdict}.",
    ]
    dst = Path(out) if out else loaded.path / f"compress_{split}"
    dst.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dst / "compress.json", json.dumps(result, indent=1))
    atomic_write_text(dst / "compress.md", "\n".join(md) + "\n")
    print("\n".join(md))
    print(f"-> {dst / 'compress.json'}, {dst / 'compress.md'}")
    return result
