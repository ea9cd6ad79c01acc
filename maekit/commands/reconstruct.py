"""maekit reconstruct RUN_DIR: reconstruction grid and loss on a split, with fixed seeded masks."""
from __future__ import annotations

import json
from pathlib import Path


from ..config import DataConfig, from_dict
from ..data.loader import load_splits
from ..engine import checkpoint
from ..errors import MaekitError
from ..models.mae import MAE
from .common import fixed_noise, load_run, recon_loss, split_by_name, write_recon_grid


def run(run_dir: str, split: str = "test", n: int = 8, mask_ratio: float | None = None, seed: int = 0, limit: int | None = None, out: str | None = None) -> dict:
    loaded = load_run(run_dir, "best")
    if mask_ratio is not None and not 0.0 <= mask_ratio < 1.0:
        raise MaekitError(f"--mask-ratio must be in [0, 1), got {mask_ratio}")
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
    out_png = Path(out) if out else loaded.path / f"reconstruct_{split}_mask{ratio:g}_seed{seed}.png"
    k = min(n, len(data))
    write_recon_grid(model, data[:k], loaded.mean, loaded.std, noise[:k], out_png, f"{split} images, mask ratio {ratio:g}, seed {seed}", ratio)
    result = {"split": split, "images": len(data), "mask_ratio": ratio, "seed": seed, "recon_loss": loss, "grid": str(out_png)}
    with open(loaded.path / "reconstruct.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"{split} reconstruction loss (mask ratio {ratio:g}, seed {seed}, {len(data)} images): {loss:.5f}")
    print(f"grid: {out_png}")
    return result


