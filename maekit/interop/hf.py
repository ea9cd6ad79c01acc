"""Hugging Face transformers' ViTMAE <-> maekit's MAE: weight names, config.json and preprocessor_config.json.

Export writes a directory that `transformers.ViTMAEForPreTraining.from_pretrained(DIR)` (and `ViTMAEModel`,
`ViTImageProcessor`) load with every tensor in place:

    config.json                 ViTMAEConfig (architecture, mask ratio, norm_pix_loss, layer-norm eps)
    model.safetensors           the weights under the checkpoint names used on the Hub (facebook/vit-mae-*),
                                which transformers 4.x loads as they are and 5.x renames on loading; the
                                fused qkv projection is split into query/key/value; header metadata `maekit`
                                records where the weights came from (run, data config, class names)
    preprocessor_config.json    ViTImageProcessor: rescale by 1/255, then the per-channel mean/std of the
                                run's training split; no resizing

Import reads such a directory (or one written by transformers itself: any of its weight-name generations)
back into a maekit ModelConfig + MAE state dict + checkpoint-like metadata. Nothing here imports
transformers, and nothing is unpickled: weights are read with `safetensors.torch.load_file`.

transformers' ViTMAE assumes a square image (sin-cos table and patchify), so only square models export.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save as st_save

from ..errors import MaekitError
from ..files import fsync_dir
from ..models.mae import MAE, ModelConfig

EXPORT_FORMAT = "maekit-hf-export-1"
EXPORT_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")

# ViTMAEConfig's defaults: transformers omits keys equal to them when it writes config.json
HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-12,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
    "decoder_num_attention_heads": 16,
    "decoder_hidden_size": 512,
    "decoder_num_hidden_layers": 8,
    "decoder_intermediate_size": 2048,
    "mask_ratio": 0.75,
    "norm_pix_loss": False,
}
# ViTImageProcessor's defaults (IMAGENET_STANDARD_MEAN / STD, rescale 1/255)
PROCESSOR_DEFAULTS: dict[str, Any] = {
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}

# maekit block sub-module -> transformers layer sub-module (Hub checkpoint names); qkv is handled apart
_BLOCK = (
    ("norm1", "layernorm_before"),
    ("attn.proj", "attention.output.dense"),
    ("norm2", "layernorm_after"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)
_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
# transformers >= 5 module names (what a 5.x model's state_dict holds) -> Hub checkpoint names
_LAYER_ALIASES = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_ENC_LAYER = re.compile(r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
# transformers 5.x writes decoder layers as `decoder.decoder_encoder.layer.N` (its reverse renaming of `layers.`)
_DEC_LAYER = re.compile(r"^decoder\.(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\.(.+)\.(weight|bias)$")


# ---------------------------------------------------------------- configs


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """config.json of a transformers ViTMAEForPreTraining with the architecture of `cfg` (square images only)."""
    h, w = _square(cfg)
    return {
        "architectures": ["ViTMAEForPreTraining"],
        "model_type": "vit_mae",
        "image_size": h,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "decoder_hidden_size": cfg.decoder_embed_dim,
        "decoder_num_hidden_layers": cfg.decoder_depth,
        "decoder_num_attention_heads": cfg.decoder_num_heads,
        "decoder_intermediate_size": int(cfg.decoder_embed_dim * cfg.mlp_ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.drop,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": cfg.norm_eps,
        "qkv_bias": cfg.qkv_bias,
        "mask_ratio": cfg.mask_ratio,
        "norm_pix_loss": cfg.norm_pix_loss,
        "initializer_range": 0.02,
    }


def preprocessor_config(cfg: ModelConfig, mean: list[float], std: list[float], rescale: bool = True) -> dict[str, Any]:
    """preprocessor_config.json of a ViTImageProcessor doing what maekit does: x / 255 (8-bit images; float
    detector images are used as read, rescale=False), then (x - mean) / std."""
    h, w = cfg.img_size
    if len(mean) != cfg.in_chans or len(std) != cfg.in_chans:
        raise MaekitError(f"normalisation has {len(mean)} means and {len(std)} stds for a {cfg.in_chans}-channel model")
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": False,
        "size": {"height": h, "width": w},
        "do_rescale": rescale,
        "rescale_factor": 1 / 255 if rescale else 1.0,
        "do_normalize": True,
        "image_mean": [float(m) for m in mean],
        "image_std": [float(s) for s in std],
    }


def model_config_from_hf(conf: dict[str, Any], source: str) -> ModelConfig:
    """A ViTMAE config.json (missing keys take ViTMAEConfig's defaults) -> the equivalent ModelConfig."""
    if conf.get("model_type") is None:
        raise MaekitError(
            f"{source} has a config.json without a model_type and no run.json: "
            "neither a Hugging Face ViTMAE directory nor a maekit run"
        )
    if conf.get("model_type") != "vit_mae":
        raise MaekitError(
            f"{source} holds a Hugging Face model of type {conf.get('model_type')!r}; "
            "maekit reads only 'vit_mae' (ViTMAE) directories"
        )
    c = {**HF_DEFAULTS, **conf}
    img, patch = c["image_size"], c["patch_size"]
    img = [img, img] if isinstance(img, int) else list(img)
    if isinstance(patch, (list, tuple)):
        if len(patch) != 2 or patch[0] != patch[1]:
            raise MaekitError(f"{source}: patch_size {patch} is not square; maekit's patches are square")
        patch = patch[0]
    if c["hidden_act"] != "gelu":
        raise MaekitError(
            f"{source}: hidden_act {c['hidden_act']!r} is not supported (maekit's blocks use exact GELU, 'gelu')"
        )
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    if "head_dim" in c and c["head_dim"] * heads != hidden:
        raise MaekitError(
            f"{source}: head_dim {c['head_dim']} x {heads} heads != hidden_size "
            f"{hidden}; maekit needs head_dim = hidden_size / heads"
        )
    try:
        ratio = c["intermediate_size"] / hidden
        dec_ratio = c["decoder_intermediate_size"] / c["decoder_hidden_size"]
    except (TypeError, ZeroDivisionError):
        raise MaekitError(f"{source}: hidden sizes and intermediate sizes must be positive integers") from None
    if (
        int(hidden * ratio) != c["intermediate_size"]
        or int(c["decoder_hidden_size"] * ratio) != c["decoder_intermediate_size"]
    ):
        raise MaekitError(
            f"{source}: intermediate_size / hidden_size = {ratio:g} but decoder_intermediate_size / "
            f"decoder_hidden_size = {dec_ratio:g}; maekit uses one mlp_ratio for encoder and decoder"
        )
    from ..config import from_dict

    fields = {
        "img_size": img,
        "in_chans": c["num_channels"],
        "patch_size": patch,
        "embed_dim": hidden,
        "depth": c["num_hidden_layers"],
        "num_heads": heads,
        "decoder_embed_dim": c["decoder_hidden_size"],
        "decoder_depth": c["decoder_num_hidden_layers"],
        "decoder_num_heads": c["decoder_num_attention_heads"],
        "mlp_ratio": ratio,
        "qkv_bias": c["qkv_bias"],
        "norm_eps": c["layer_norm_eps"],
        "mask_ratio": c["mask_ratio"],
        "norm_pix_loss": c["norm_pix_loss"],
        "drop": c["hidden_dropout_prob"],
        "drop_path": 0.0,
    }
    try:
        cfg = from_dict(ModelConfig, fields, "model.")
        cfg.validate()
    except (MaekitError, ValueError) as e:
        raise MaekitError(f"{source}: config.json does not describe a model maekit can build ({e})") from None
    return cfg


def _square(cfg: ModelConfig) -> tuple[int, int]:
    if cfg.img_size is None or cfg.in_chans is None:
        raise MaekitError("model config has no image size / channel count")
    h, w = cfg.img_size
    if h != w:
        raise MaekitError(
            f"cannot export a model for {h}x{w} images to transformers: its ViTMAE supports only square images "
            f"(one image_size for its sin-cos position table and patchify)"
        )
    return h, w


# ---------------------------------------------------------------- weights


def _mismatch(missing: list[str], unexpected) -> str:
    """'missing: a, b; unexpected: c' (the first three of each) for a weights-do-not-fit error."""
    parts = [
        f"missing: {', '.join(missing[:3])}" if missing else "",
        f"unexpected: {', '.join(sorted(unexpected)[:3])}" if unexpected else "",
    ]
    return "; ".join(x for x in parts if x)


def to_hf_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """maekit MAE state dict -> ViTMAEForPreTraining checkpoint names (the Hub's), qkv split into q, k, v.
    For an encoder-only export (see encoder_only) the decoder's tensors are left out."""
    whole = not encoder_only(cfg)
    src = {k: v for k, v in state.items() if whole or k.startswith("encoder.")}
    missing: list[str] = []

    def take(name: str) -> torch.Tensor:
        if name not in src:
            missing.append(name)
            return torch.zeros(0)
        return src.pop(name).detach().cpu().contiguous()

    out = {
        "vit.embeddings.cls_token": take("encoder.cls_token"),
        "vit.embeddings.position_embeddings": take("encoder.pos_embed"),
        "vit.embeddings.patch_embeddings.projection.weight": take("encoder.patch_embed.proj.weight"),
        "vit.embeddings.patch_embeddings.projection.bias": take("encoder.patch_embed.proj.bias"),
        "vit.layernorm.weight": take("encoder.norm.weight"),
        "vit.layernorm.bias": take("encoder.norm.bias"),
    }
    layers = [(f"encoder.blocks.{i}.", f"vit.encoder.layer.{i}.") for i in range(cfg.depth)]
    if whole:
        out |= decoder_tensors(take)
        layers += [(f"decoder_blocks.{i}.", f"decoder.decoder_layers.{i}.") for i in range(cfg.decoder_depth)]
    for mk, hf in layers:
        leaves = ("weight", "bias") if cfg.qkv_bias else ("weight",)
        for leaf in leaves:
            qkv = take(f"{mk}attn.qkv.{leaf}")
            if qkv.numel():
                for name, part in zip(_QKV, qkv.chunk(3, dim=0)):
                    out[f"{hf}{name}.{leaf}"] = part.clone()
        for m, h in _BLOCK:
            for leaf in ("weight", "bias"):
                out[f"{hf}{h}.{leaf}"] = take(f"{mk}{m}.{leaf}")
    if missing or src:
        raise MaekitError(f"weights do not match the model config ({_mismatch(missing, src)})")
    return out


def decoder_tensors(take: Callable[[str], torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder's tensors outside its blocks, under ViTMAEForPreTraining's names."""
    return {
        "decoder.decoder_embed.weight": take("decoder_embed.weight"),
        "decoder.decoder_embed.bias": take("decoder_embed.bias"),
        "decoder.mask_token": take("mask_token"),
        "decoder.decoder_pos_embed": take("decoder_pos_embed"),
        "decoder.decoder_norm.weight": take("decoder_norm.weight"),
        "decoder.decoder_norm.bias": take("decoder_norm.bias"),
        "decoder.decoder_pred.weight": take("decoder_pred.weight"),
        "decoder.decoder_pred.bias": take("decoder_pred.bias"),
    }


def _canonical(key: str) -> str:
    """Any generation of transformers' ViTMAE weight names -> the Hub checkpoint names (with the `vit.` prefix)."""
    for pattern, prefix in ((_ENC_LAYER, "vit.encoder.layer"), (_DEC_LAYER, "decoder.decoder_layers")):
        m = pattern.match(key)
        if m:
            return f"{prefix}.{m[1]}.{_LAYER_ALIASES.get(m[2], m[2])}.{m[3]}"
    if key.startswith(("decoder.", "vit.")):
        return key
    return "vit." + key  # a ViTMAEModel checkpoint (encoder only, no `vit.` prefix)


def from_hf_state(
    tensors: dict[str, torch.Tensor], cfg: ModelConfig, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """ViTMAE weights (Hub names, transformers 5 names, with or without `vit.`; the decoder may be absent) ->
    maekit MAE state dict (only the encoder's `encoder.*` tensors when the checkpoint holds no decoder)."""
    hf: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        ck = _canonical(k)
        if ck in hf:
            raise MaekitError(f"{source}: tensor {k} appears twice under different names")
        hf[ck] = v
    has_decoder = any(k.startswith("decoder.") for k in hf)
    missing: list[str] = []

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            missing.append(name)
            return torch.zeros(0)
        return hf.pop(name)

    out = {
        "encoder.cls_token": take("vit.embeddings.cls_token"),
        "encoder.pos_embed": take("vit.embeddings.position_embeddings"),
        "encoder.patch_embed.proj.weight": take("vit.embeddings.patch_embeddings.projection.weight"),
        "encoder.patch_embed.proj.bias": take("vit.embeddings.patch_embeddings.projection.bias"),
        "encoder.norm.weight": take("vit.layernorm.weight"),
        "encoder.norm.bias": take("vit.layernorm.bias"),
    }
    layers = [(f"encoder.blocks.{i}.", f"vit.encoder.layer.{i}.") for i in range(cfg.depth)]
    if has_decoder:
        for mk, hk in (
            ("decoder_embed.weight", "decoder_embed.weight"),
            ("decoder_embed.bias", "decoder_embed.bias"),
            ("mask_token", "mask_token"),
            ("decoder_pos_embed", "decoder_pos_embed"),
            ("decoder_norm.weight", "decoder_norm.weight"),
            ("decoder_norm.bias", "decoder_norm.bias"),
            ("decoder_pred.weight", "decoder_pred.weight"),
            ("decoder_pred.bias", "decoder_pred.bias"),
        ):
            out[mk] = take("decoder." + hk)
        layers += [(f"decoder_blocks.{i}.", f"decoder.decoder_layers.{i}.") for i in range(cfg.decoder_depth)]
    for mk, hk in layers:
        for leaf in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            parts = [take(f"{hk}{name}.{leaf}") for name in _QKV]
            if all(p.numel() for p in parts):
                out[f"{mk}attn.qkv.{leaf}"] = torch.cat(parts, dim=0)
        for m, h in _BLOCK:
            for leaf in ("weight", "bias"):
                out[f"{mk}{m}.{leaf}"] = take(f"{hk}{h}.{leaf}")
    if missing or hf:
        raise MaekitError(f"{source} does not fit its config.json ({_mismatch(missing, hf)})")
    _check_shapes(cfg, out, source)
    return out


def _check_shapes(cfg: ModelConfig, state: dict[str, torch.Tensor], source: str) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # building initialises: leave the global RNG as it was
        own = {k: v.shape for k, v in MAE(cfg).state_dict().items()}
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k])}" for k, v in state.items() if k in own and v.shape != own[k]]
    if bad:
        raise MaekitError(f"{source} does not fit its config.json (shape mismatch: {', '.join(bad[:3])})")


# ---------------------------------------------------------------- export


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}


def is_export(path: Path) -> bool:
    """A directory holding only a previous maekit export (the three files; maekit metadata in the weights)."""
    names = {p.name for p in Path(path).iterdir()}
    if not names or not names <= set(EXPORT_FILES) or "model.safetensors" not in names:
        return False
    try:
        return (
            json.loads(_metadata(Path(path) / "model.safetensors").get("maekit", "{}")).get("format") == EXPORT_FORMAT
        )
    except (json.JSONDecodeError, AttributeError):
        return False


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def encoder_only(cfg: ModelConfig) -> bool:
    """Whether an export holds the encoder only: a decoder trained with another objective than pixel MSE
    (model.loss=hit_intensity) or a cross-attention decoder (model.decoder_attention=cross) has no counterpart in
    transformers' ViTMAEForPreTraining."""
    return cfg.loss != "mse" or cfg.decoder_attention != "self"


def export_hf(
    out_dir: str | Path,
    cfg: ModelConfig,
    state: dict[str, torch.Tensor],
    mean: list[float],
    std: list[float],
    provenance: dict[str, Any] | None = None,
    rescale: bool = True,
) -> Path:
    """Write a transformers ViTMAE directory (config.json, model.safetensors, preprocessor_config.json).

    `out_dir` must not exist, be empty, or hold only a previous maekit export (which is replaced). The files
    are written to a temporary sibling directory which then takes `out_dir`'s place, so an interrupted export
    leaves the old directory (or none), never a partial one.
    """
    out = Path(out_dir)
    config = hf_config(cfg)  # raises for non-square models before anything is written
    processor = preprocessor_config(cfg, list(mean), list(std), rescale)
    tensors = to_hf_state(state, cfg)
    if encoder_only(cfg):  # to_hf_state left the decoder out: the encoder goes out as a ViTMAEModel
        config["architectures"] = ["ViTMAEModel"]
    if out.exists() and not out.is_dir():
        raise MaekitError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise MaekitError(
            f"output directory {out} already holds files that are not a maekit export; choose another or empty it"
        )
    meta = {"format": EXPORT_FORMAT, **(provenance or {})}
    try:
        blob = st_save(tensors, metadata={"format": "pt", "maekit": json.dumps(meta)})
    except (SafetensorError, ValueError, TypeError) as e:
        raise MaekitError(f"could not serialise the weights ({e})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write(tmp / "config.json", (json.dumps(config, indent=2) + "\n").encode())
        _write(tmp / "preprocessor_config.json", (json.dumps(processor, indent=2) + "\n").encode())
        _write(tmp / "model.safetensors", blob)
        fsync_dir(tmp)
        if out.exists():
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
        fsync_dir(out.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MaekitError(f"could not write {out} ({e.strerror or e})") from None
    return out


# ---------------------------------------------------------------- import


def hf_model_dir(path: str | Path) -> Path | None:
    """The Hugging Face model directory `path` names (the directory, or its config.json / model.safetensors),
    or None: a directory with a config.json and no maekit run.json."""
    p = Path(path)
    if p.is_file() and p.name in ("config.json", "model.safetensors", "model.safetensors.index.json"):
        p = p.parent
    if p.is_dir() and (p / "config.json").is_file() and not (p / "run.json").exists():
        return p
    return None


def _read_weights(d: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    try:
        if single.is_file():
            return load_file(str(single)), _metadata(single)
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            tensors: dict[str, torch.Tensor] = {}
            for name in files:
                tensors.update(load_file(str(d / name)))
            return tensors, _metadata(d / files[0]) if files else {}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise MaekitError(f"{d}: the safetensors weights are unreadable ({e})") from None
    if any((d / n).exists() for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise MaekitError(
            f"{d} holds only pytorch_model.bin (a pickle); maekit never unpickles: save it as model.safetensors"
        )
    raise MaekitError(f"{d} has a config.json but no model.safetensors")


def _stats(d: Path, channels: int) -> tuple[list[float], list[float], str | None]:
    """maekit's (mean, std) on the 0-1 scale from preprocessor_config.json, so that (x/255 - mean)/std is
    what the processor computes; (zeros, ones, note) without one."""
    f = d / "preprocessor_config.json"
    if not f.is_file():
        note = f"{d} has no preprocessor_config.json: images are only scaled to [0, 1] (mean 0, std 1)"
        return [0.0] * channels, [1.0] * channels, note
    try:
        pp = {**PROCESSOR_DEFAULTS, **json.loads(f.read_text())}
    except (OSError, json.JSONDecodeError) as e:
        raise MaekitError(f"{f} is not valid JSON ({e})") from None
    try:
        if not pp["do_normalize"]:
            mean, std = [0.0] * channels, [1.0] * channels
        else:
            mean = pp["image_mean"] if pp["image_mean"] is not None else PROCESSOR_DEFAULTS["image_mean"]
            std = pp["image_std"] if pp["image_std"] is not None else PROCESSOR_DEFAULTS["image_std"]
            mean = [mean] * channels if isinstance(mean, (int, float)) else [float(m) for m in mean]
            std = [std] * channels if isinstance(std, (int, float)) else [float(s) for s in std]
        # the processor computes (x * r - m) / s = (x / 255 - m / (255 r)) / (s / (255 r))
        r = float(pp["rescale_factor"]) if pp["do_rescale"] else 1.0
        scale = 1.0 if math.isclose(r * 255.0, 1.0, rel_tol=1e-12) else 1.0 / (255.0 * r)
        mean, std = [float(m) * scale for m in mean], [float(s) * scale for s in std]
    except (TypeError, ValueError, ZeroDivisionError):
        raise MaekitError(f"{f}: image_mean, image_std and rescale_factor must be numbers") from None
    if len(mean) != channels or len(std) != channels:
        raise MaekitError(
            f"{f} has {len(mean)} image_mean and {len(std)} image_std values for a {channels}-channel model"
        )
    if min(std) <= 0:
        raise MaekitError(f"{f}: image_std must be positive, got {std}")
    return mean, std, None


def load_hf_vitmae(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """A local transformers ViTMAE directory -> (ModelConfig, maekit MAE state dict, checkpoint-like metadata
    with meta["data"]["mean"/"std"] from preprocessor_config.json, or zeros/ones and meta["data"]["note"])."""
    d = hf_model_dir(path)
    if d is None:
        raise MaekitError(f"{path} is not a Hugging Face model directory (expected config.json and model.safetensors)")
    try:
        conf = json.loads((d / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MaekitError(f"{d / 'config.json'} is not valid JSON ({e})") from None
    if not isinstance(conf, dict):
        raise MaekitError(f"{d / 'config.json'} must hold a JSON object")
    cfg = model_config_from_hf(conf, str(d))
    tensors, st_meta = _read_weights(d)
    state = from_hf_state(tensors, cfg, str(d))
    mean, std, note = _stats(d, cfg.in_chans)
    if note:
        warnings.warn(note, stacklevel=2)
    try:
        prov = json.loads(st_meta.get("maekit", "{}"))
    except json.JSONDecodeError:
        prov = {}
    pdata = prov.get("data") if isinstance(prov, dict) and isinstance(prov.get("data"), dict) else {}
    if pdata.get("dtype") == "float32" and "mean" in pdata:
        # exported from float (detector) data, which maekit normalises as read (no 1/255): its own statistics
        mean, std = [float(m) for m in pdata["mean"]], [float(v) for v in pdata["std"]]
    data = {
        "mean": mean,
        "std": std,
        "class_names": pdata.get("class_names"),
        "image_size": list(cfg.img_size),
        "channels": cfg.in_chans,
        "dtype": pdata.get("dtype", "uint8"),
        "config": pdata.get("config"),  # the data config of the maekit run that was exported, if any
    }
    if note:
        data["note"] = note
    meta = {
        "kind": "hf_vitmae",
        "source": str(d),
        "model_config": asdict(cfg),
        "data": data,
        "encoder_only": not any(k.startswith("decoder") for k in state),
    }
    if prov:
        meta["exported_from"] = {k: v for k, v in prov.items() if k != "data"}
    return cfg, state, meta
