"""maekit export RUN_DIR --format hf OUT_DIR: a run's best checkpoint as a Hugging Face transformers ViTMAE
directory (config.json, model.safetensors, preprocessor_config.json); see maekit/interop/hf.py."""

from __future__ import annotations

from pathlib import Path

from ..errors import MaekitError
from ..interop import hf
from ..runs import load_run

FORMATS = ("hf",)


def run(run_dir: str, out: str, fmt: str = "hf") -> Path:
    """Export the best checkpoint of `run_dir` (a maekit run, or a Hugging Face ViTMAE directory) to `out`."""
    if fmt not in FORMATS:
        raise MaekitError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    loaded = load_run(run_dir, "best")
    meta = loaded.meta
    provenance = {
        "source": str(loaded.path),
        "kind": meta.get("kind"),
        "epoch": meta.get("epoch"),
        "step": (meta.get("train_state") or {}).get("step"),
        "model_config": meta.get("model_config"),
        "data": meta.get("data"),
    }
    path = hf.export_hf(
        out,
        loaded.model_cfg,
        loaded.state,
        meta["data"]["mean"],
        meta["data"]["std"],
        provenance,
        rescale=meta["data"].get("dtype", "uint8") == "uint8",
    )
    if hf.encoder_only(loaded.model_cfg):
        why = (
            "model.decoder_attention=cross: CrossMAE's cross-attention blocks"
            if loaded.model_cfg.decoder_attention != "self"
            else f"model.loss={loaded.model_cfg.loss}: hit probability and intensity per pixel"
        )
        print(
            f"exported the encoder of {loaded.path} as a transformers ViTMAEModel "
            f"directory -> {path}; its decoder ({why}) has no transformers counterpart"
        )
    else:
        print(f"exported {loaded.path} as a transformers ViTMAE directory -> {path}")
    for f in hf.EXPORT_FILES:
        print(f"  {path / f}")
    model = "ViTMAEModel" if hf.encoder_only(loaded.model_cfg) else "ViTMAEForPreTraining"
    print(f"  load with transformers.{model}.from_pretrained({str(path)!r}) (or ViTMAEModel, ViTImageProcessor)")
    return path
