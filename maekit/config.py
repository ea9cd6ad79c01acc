"""Configs: one dataclass per command, built from sub-configs (model, data, optim, train).

Loaded from YAML with the same nesting and overridden on the command line as `key.sub=value` (values parsed
as YAML). Unknown keys and values of the wrong type are errors naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import MaekitError
from .models.mae import ModelConfig
from .models.presets import PRESETS


@dataclass
class AugmentConfig:
    """Batched training augmentation (runs on tensors, per batch)."""

    crop_scale: list[float] = field(default_factory=lambda: [0.35, 1.0])  # random-resized-crop area range
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333])  # aspect ratio range
    hflip: bool = True  # off for digits and for data where left/right matters
    vflip: bool = False  # mirror top-bottom too: for images without an up (detector images: rows = eta -> -eta)

    def validate(self, prefix: str) -> None:
        lo, hi = _pair(self.crop_scale, f"{prefix}crop_scale")
        if not 0 < lo <= hi <= 1:
            raise MaekitError(f"{prefix}crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        lo, hi = _pair(self.crop_ratio, f"{prefix}crop_ratio")
        if not 0 < lo <= hi:
            raise MaekitError(f"{prefix}crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")


@dataclass
class PreprocessConfig:
    """Value transforms for float data (detector images), applied as the data are read, in this order."""

    zero_suppress: float | None = None  # values with |x| below this become 0 (ML4SCI files: 1e-3)
    scale: list[float] | None = None  # per-channel factors (after channel selection)
    log1p: bool = False  # sign(x) * log(1 + |x|), for intensities spanning decades
    clip: list[float] | None = None  # [min, max] after the steps above

    def validate(self, prefix: str) -> None:
        if self.zero_suppress is not None and self.zero_suppress < 0:
            raise MaekitError(f"{prefix}zero_suppress must be >= 0, got {self.zero_suppress}")
        if self.clip is not None:
            lo, hi = _pair(self.clip, f"{prefix}clip")
            if not lo < hi:
                raise MaekitError(f"{prefix}clip must be [min, max] with min < max, got {self.clip}")

    @property
    def active(self) -> bool:
        return self.zero_suppress is not None or self.scale is not None or self.log1p or self.clip is not None


SOURCES = ("idx", "cifar", "folder", "npy", "hdf5", "parquet")


@dataclass
class DataConfig:
    """Where the images come from, how they are read, split and normalised."""

    source: Literal["idx", "cifar", "folder", "npy", "hdf5", "parquet"] = "idx"
    name: str = "fashion_mnist"  # idx: fashion_mnist | mnist | kmnist (for locating the files)
    path: str | None = (
        None  # idx/cifar: folder (idx default: $MAEKIT_DATA, then the Debian package); else file or folder
    )
    test_path: str | None = None  # a separate test file/folder of the same format; else a seeded split of `path`
    test_fraction: float = 0.1  # seeded test split when the source has no test set of its own
    val_fraction: float = 0.1  # seeded held-out part of the training data, for model selection
    split_seed: int = 0
    images_key: str | None = None  # hdf5 dataset / npz array / parquet column; default: found automatically
    labels_key: str | None = None  # likewise (y, Y, labels, ...); "none" = ignore labels
    labels_path: str | None = None  # npy: labels in their own .npy file
    layout: Literal["auto", "nhwc", "nchw"] = "auto"  # channels-last or -first; auto = detected from the shape
    channels: list[int] | None = None  # use these channels (indices into the file's channels), in this order
    channel_names: list[str] | None = None  # names of the file's channels (for pictures and inspect)
    image_size: int | None = None  # folder: resize the shorter side, then center-crop to this size
    crop: int | None = None  # hdf5/parquet/npy: keep the central crop x crop pixels (e.g. 64 of 125: the jet core)
    color: Literal["auto", "L", "RGB"] = "auto"  # folder: grayscale or RGB (auto: RGB if any sampled image has colour)
    on_bad_image: Literal["skip", "error"] = "skip"  # folder: unreadable images are skipped with a count, or an error
    pack: str | None = None  # folder: read data.path from this pack (`maekit data pack`), checked against the folder
    test_pack: str | None = None  # folder: likewise for data.test_path
    stream: bool | None = None  # read from disk in chunks (hdf5/parquet/npy); None = when larger than memory_mb
    memory_mb: float = 4096.0  # above this the data stream; also bounds the stream's chunk cache
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    class_names: list[str] | None = None  # default: the dataset's own names

    def validate(self, prefix: str = "data.") -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise MaekitError(f"{prefix}val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            raise MaekitError(f"{prefix}test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.source not in ("idx", "cifar") and not self.path:
            raise MaekitError(f"{prefix}path is required for data.source={self.source}")
        if self.channels is not None and (not self.channels or min(self.channels) < 0):
            raise MaekitError(f"{prefix}channels must list channel indices >= 0, got {self.channels}")
        if self.crop is not None and (self.crop < 1 or self.source not in ("hdf5", "parquet", "npy")):
            raise MaekitError(
                f"{prefix}crop must be >= 1 and is for hdf5/parquet/npy sources "
                f"(folders: data.image_size), got {self.crop} with source {self.source}"
            )
        if (self.pack or self.test_pack) and self.source != "folder":
            raise MaekitError(
                f"{prefix}pack and {prefix}test_pack are packs of image "
                f"folders (data.source=folder), got source {self.source}"
            )
        if self.test_pack and not self.test_path:
            raise MaekitError(f"{prefix}test_pack is the pack of {prefix}test_path, which is not set")
        if self.pack and self.test_path and not self.test_pack:
            raise MaekitError(
                f"{prefix}test_path {self.test_path} needs its own pack "
                f"with {prefix}pack set: pack it and set {prefix}test_pack"
            )
        if self.test_pack and not self.pack:
            raise MaekitError(f"{prefix}test_pack needs {prefix}pack (the pack of {prefix}path) too")
        if self.image_size is not None and self.image_size < 1:
            raise MaekitError(f"{prefix}image_size must be >= 1, got {self.image_size}")
        if self.memory_mb <= 0:
            raise MaekitError(f"{prefix}memory_mb must be positive, got {self.memory_mb}")
        self.preprocess.validate(prefix + "preprocess.")
        self.augment.validate(prefix + "augment.")


@dataclass
class OptimConfig:
    """AdamW with warmup then cosine (or cosine with warm restarts); LR scaled by the effective batch."""

    base_lr: float = 1.5e-4  # per 256 images: lr = base_lr * effective_batch / 256 unless `lr` is set
    lr: float | None = None
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_epochs: float = 1.0
    schedule: Literal["cosine", "cosine_restarts", "constant"] = "cosine"
    restart_epochs: float = 10.0  # first cycle length for cosine_restarts
    restart_mult: float = 1.0  # cycle length multiplier for cosine_restarts
    layer_decay: float = 1.0  # layer-wise LR decay (fine-tuning); 1.0 = off
    clip_grad: float | None = 1.0

    def validate(self, prefix: str = "optim.") -> None:
        if self.base_lr <= 0 or (self.lr is not None and self.lr <= 0):
            raise MaekitError(f"{prefix}base_lr and {prefix}lr must be positive")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise MaekitError(f"{prefix}betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 < self.layer_decay <= 1:
            raise MaekitError(f"{prefix}layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.warmup_epochs < 0 or self.restart_epochs <= 0 or self.restart_mult < 1:
            raise MaekitError(f"{prefix}warmup_epochs >= 0, restart_epochs > 0 and restart_mult >= 1 are required")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256  # per process
    accum_steps: int = 1
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = (
        "auto"  # auto: bf16 where it is fast (CUDA, AVX-512 BF16/AMX CPUs), else fp32; fp16 only on CUDA
    )
    threads: int | None = None  # torch CPU threads; default: all cores
    log_every: int = 20  # steps between train-loss lines in metrics.jsonl
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    eval_samples: int = 2000  # images of each split used for the per-epoch reconstruction loss
    recon_every: int = 5  # epochs between reconstruction grids (and the last epoch)
    ckpt_every_steps: int = 0  # extra `last` checkpoints inside an epoch; 0 = once per epoch
    stop_after: int = 0  # end this invocation after this many optimiser steps (checkpointed; resume=true continues)
    skip_nonfinite: bool = False  # skip batches whose loss is NaN/Inf (counted in metrics.jsonl) instead of stopping
    progress: bool = True

    def validate(self, prefix: str = "train.") -> None:
        for name in ("epochs", "batch_size", "accum_steps", "log_every", "eval_every", "eval_samples", "recon_every"):
            if getattr(self, name) < 1:
                raise MaekitError(f"{prefix}{name} must be >= 1, got {getattr(self, name)}")
        if self.ckpt_every_steps < 0:
            raise MaekitError(f"{prefix}ckpt_every_steps must be >= 0")


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str | None = None  # run directory; default runs/<config name>-<timestamp>
    resume: bool = False
    init: str | None = None  # start from the weights of a maekit run directory

    def validate(self) -> None:
        _validate_sections(self)


def _validate_sections(cfg) -> None:
    """Validate the model, data, optim and train sections of a command config."""
    try:
        cfg.model.validate()
    except ValueError as e:
        raise MaekitError(str(e)) from None
    cfg.data.validate()
    cfg.optim.validate()
    cfg.train.validate()


# ---------------------------------------------------------------- generic loading and overriding


def _pair(v: list[float], name: str) -> tuple[float, float]:
    if len(v) != 2:
        raise MaekitError(f"{name} must be a list of two numbers, got {v}")
    return float(v[0]), float(v[1])


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if get_origin(tp) is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float). Error names `key`."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except MaekitError:
                continue
        raise MaekitError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise MaekitError(f"config key '{key}' must be one of {_type_name(tp)}, got {value!r}")
    if origin is list:
        (inner,) = get_args(tp)
        if key.endswith("img_size") and isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, (list, tuple)):
            raise MaekitError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key + ".")
    raise MaekitError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: Any, prefix: str = "", base: Any = None) -> Any:
    """Build dataclass `cls` from a nested dict on top of `base` (default: `cls()`), so that a partial
    section keeps the defaults of the command it belongs to. Unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise MaekitError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise MaekitError(f"unknown config key '{prefix}{key}' (known here: {', '.join(names)})")
    if cls is ModelConfig and data.get("preset") is not None:
        try:
            data = {**_preset(data["preset"], prefix), **data}
        except KeyError as e:
            raise MaekitError(str(e.args[0])) from None
    kwargs = {}
    for k, v in data.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = from_dict(tp, v, prefix + k + ".", getattr(base, k))
        else:
            kwargs[k] = _coerce(v, tp, prefix + k)
    return dataclasses.replace(base, **kwargs)


def _preset(name: Any, prefix: str) -> dict:
    if name not in PRESETS:
        raise KeyError(f"config key '{prefix}preset': unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return dict(PRESETS[name])


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=0.75' -> (['a', 'b'], 0.75). The value is parsed as YAML ('none' and 'null' mean None)."""
    if "=" not in text:
        raise MaekitError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise MaekitError(f"override {text!r} has an empty key")
    if raw.strip().lower() in ("none", "null", "~"):
        return key.split("."), None
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (a copy); sub-dicts are created as needed."""
    return set_keys(
        data,
        [(".".join(path), value) for path, value in map(parse_override, overrides)],
        [f"override {t!r}" for t in overrides],
    )


def set_keys(data: dict, items: list[tuple], labels: list[str] | None = None) -> dict:
    """A copy of `data` with each (dotted key, parsed value) of `items` set; sub-dicts are created as needed.
    `labels` name the items in errors (default: the key)."""
    out = _deepcopy(data)
    for i, (key, value) in enumerate(items):
        path = key.split(".")
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise MaekitError(f"{labels[i] if labels else f'override {key!r}'}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


# ---------------------------------------------------------------- grids (maekit sweep --grid)


@dataclass
class Axis:
    """One axis of a grid: a config key and the values it takes."""

    key: str  # dotted config key, e.g. model.patch_size or knn.labels
    raw: list[str]  # the values as written
    values: list[Any]  # the values parsed as YAML


def split_values(text: str) -> list[str]:
    """'0.75,0.85' -> ['0.75', '0.85']; commas inside [] or {} do not split ('[0.2,1.0],[0.35,1.0]')."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def parse_grid(items: list[str]) -> tuple[list[Axis], list[str]]:
    """--grid items -> axes (two or more values) and constant overrides (one value, e.g. out=DIR)."""
    axes: list[Axis] = []
    constants: list[str] = []
    for item in items:
        if "=" not in item:
            raise MaekitError(f"--grid item {item!r} must look like key.sub=value1,value2")
        key, rest = item.split("=", 1)
        raw = split_values(rest)
        if any(not r for r in raw):
            raise MaekitError(f"--grid item {item!r} has an empty value")
        if len(raw) == 1:
            constants.append(item)
            continue
        if any(a.key == key for a in axes):
            raise MaekitError(f"--grid key {key!r} is given twice")
        if len(set(raw)) != len(raw):
            raise MaekitError(f"--grid {key!r} repeats a value: {rest}")
        axes.append(Axis(key, raw, [parse_override(f"{key}={r}")[1] for r in raw]))
    return axes, constants


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise MaekitError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise MaekitError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MaekitError(f"config file {p} must hold a mapping at the top level")
    return data


def load_config(cls: type, path: str | Path | None, overrides: list[str] = ()) -> Any:
    """YAML file (optional) + dotted overrides -> validated dataclass `cls`."""
    data = read_yaml(path) if path is not None else {}
    cfg = from_dict(cls, apply_overrides(data, list(overrides)))
    cfg.validate()
    return cfg


def save_yaml(data: dict, path: Path) -> None:
    from .files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


# ---------------------------------------------------------------- downstream evaluation


@dataclass
class DownstreamConfig:
    """Shared by linprobe, finetune and knn: which encoder, which labels, which head."""

    pretrained: str | None = None  # a maekit pretraining run directory; None / 'none' = random initialisation
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture when pretrained is none
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    labels: float = 1.0  # labelled training images: a fraction (<= 1) of the train split, or a count (> 1)
    label_seed: int = 0  # seed of the stratified label subset
    pool: Literal["cls", "mean"] = "mean"
    head: Literal["linear", "mlp"] = "linear"
    mlp_hidden: int = 256
    label_smoothing: float = 0.0
    knn_k: int = 20
    knn_temperature: float = 0.07
    out: str | None = None
    resume: bool = False
    allow_test_overlap: bool = False  # run even when test images were pretraining images (refused by default)

    def validate(self) -> None:
        if self.pretrained is not None and self.pretrained.lower() == "none":
            self.pretrained = None
        if self.labels <= 0:
            raise MaekitError(f"labels must be a positive fraction (<= 1) or count (> 1), got {self.labels}")
        if not 0 <= self.label_smoothing < 1:
            raise MaekitError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.knn_k < 1 or self.knn_temperature <= 0:
            raise MaekitError("knn_k must be >= 1 and knn_temperature > 0")
        _validate_sections(self)


@dataclass
class LinprobeConfig(DownstreamConfig):
    """Frozen encoder; a BatchNorm (no affine) + linear head, or a small MLP, on cached features."""

    pool: Literal["cls", "mean"] = "cls"
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-2, weight_decay=0.0, warmup_epochs=5, clip_grad=None)
    )
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, batch_size=256, eval_every=5))


@dataclass
class FinetuneConfig(DownstreamConfig):
    """Whole encoder trained with a lower learning rate, layer-wise LR decay, warmup + cosine."""

    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            base_lr=1e-3, weight_decay=0.05, warmup_epochs=5, layer_decay=0.75, min_lr=1e-6
        )
    )
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=50, batch_size=64, eval_every=5))
    label_smoothing: float = 0.1
    arch: Literal["vit", "cnn"] = "vit"  # cnn: the small supervised CNN baseline (models/cnn.py), from scratch only
    cnn_width: int = 32  # channels of the CNN's first stage (then 2x, 4x)
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) of cutmix; 0 = off (both on: one of the two per batch)
    patch_dropout: float = 0.0  # ViT: fraction of patch tokens each training image drops (cheaper steps); eval sees all

    def validate(self) -> None:
        super().validate()
        if self.mixup < 0 or self.cutmix < 0:
            raise MaekitError(f"mixup and cutmix must be >= 0 (0 = off), got {self.mixup} and {self.cutmix}")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise MaekitError(f"patch_dropout must be in [0, 1) (0 = off), got {self.patch_dropout}")
        if self.arch == "cnn" and self.patch_dropout > 0:
            raise MaekitError(
                f"patch_dropout drops ViT patch tokens; arch=cnn has none (got patch_dropout={self.patch_dropout})"
            )
        if self.cnn_width < 1:
            raise MaekitError(f"cnn_width must be >= 1, got {self.cnn_width}")
        if self.arch == "cnn" and self.pretrained is not None:
            raise MaekitError(
                f"arch=cnn is the supervised CNN baseline and trains from scratch; got pretrained={self.pretrained}"
            )


@dataclass
class ScratchConfig(FinetuneConfig):
    """The from-scratch ViT's own recipe: no layer decay (it would starve the early layers of a random encoder)."""

    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(base_lr=4e-3, weight_decay=0.05, warmup_epochs=5, min_lr=1e-6)
    )


@dataclass
class CnnConfig(FinetuneConfig):
    """The small supervised CNN baseline, trained from scratch with its own learning rate."""

    arch: Literal["vit", "cnn"] = "cnn"
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(base_lr=1.2e-2, weight_decay=0.05, warmup_epochs=5, min_lr=1e-6)
    )


@dataclass
class KnnConfig(DownstreamConfig):
    """Weighted k-NN on L2-normalised encoder features (no training), or on the normalised pixels themselves."""

    features: Literal["encoder", "pixels"] = "encoder"

    def validate(self) -> None:
        super().validate()
        if self.features == "pixels" and self.pretrained is not None:
            raise MaekitError(f"features=pixels uses no encoder; got pretrained={self.pretrained}")


@dataclass
class CompareConfig:
    """Pretrain (or reuse a run), then every method x label budget x seed, against the from-scratch baseline."""

    pretrained: str | None = None  # reuse this pretraining run; None = pretrain with `pretrain` first
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    budgets: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(
        default_factory=lambda: [
            "finetune",
            "scratch",
            "cnn",
            "pixel_knn",
            "linprobe",
            "linprobe_random",
            "knn",
            "knn_random",
        ]
    )
    linprobe: LinprobeConfig = field(default_factory=LinprobeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)  # the from-scratch ViT's own recipe
    cnn: CnnConfig = field(default_factory=CnnConfig)  # the supervised CNN baseline's recipe
    finetune_epochs: list[int] | None = None  # per budget (same order); default finetune.train.epochs for all
    finetune_lrs: list[float] | None = None  # fine-tune base_lr candidates, chosen on the validation split
    scratch_lrs: list[float] | None = None  # the same for the from-scratch ViT (default: finetune_lrs)
    cnn_lrs: list[float] | None = None  # the same for the CNN
    out: str | None = None
    resume: bool = True  # completed cells are always skipped; this lets an existing compare directory be reused

    METHODS = ("finetune", "scratch", "cnn", "pixel_knn", "linprobe", "linprobe_random", "knn", "knn_random")

    def validate(self) -> None:
        if self.pretrained is not None and self.pretrained.lower() == "none":
            self.pretrained = None
        for m in self.methods:
            if m not in self.METHODS:
                raise MaekitError(f"methods: unknown method {m!r} (known: {', '.join(self.METHODS)})")
        if not self.budgets or any(b <= 0 for b in self.budgets):
            raise MaekitError(f"budgets must be positive fractions (<= 1) or counts (> 1), got {self.budgets}")
        if not self.seeds:
            raise MaekitError("seeds must list at least one seed")
        if self.finetune_epochs is not None and len(self.finetune_epochs) != len(self.budgets):
            raise MaekitError(
                f"finetune_epochs must have one entry per budget ({len(self.budgets)}), got {self.finetune_epochs}"
            )
        for name in ("finetune_lrs", "scratch_lrs", "cnn_lrs"):
            lrs = getattr(self, name)
            if lrs is not None and (not lrs or any(x <= 0 for x in lrs)):
                raise MaekitError(f"{name} must list positive learning rates, got {lrs}")
        self.pretrain.validate()
        for sub in (self.linprobe, self.finetune, self.scratch, self.cnn, self.knn):
            sub.validate()
