"""What linprobe, finetune and knn share: the encoder (pretrained or random), the stratified label subset,
the run directory's opening, test evaluation and its outputs (result.json, confusion matrix, curves)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import plots
from ..config import DownstreamConfig, save_yaml, to_dict
from ..data.loader import ImageSet, Splits, load_splits
from ..engine import checkpoint
from ..engine.rundir import RunDir, prepare
from ..errors import MaekitError
from ..files import save_json
from ..metrics import AUC_UNDEFINED, classification_report, confusion_matrix, text_or_na
from ..models.mae import ModelConfig
from ..models.vit import ViT
from ..runs import check_test_not_pretrained, load_run


def label_subset(labels: torch.Tensor, budget: float, seed: int) -> torch.Tensor:
    """Sorted indices of a stratified, seeded subset: a fraction (budget <= 1) or a count (budget > 1) of
    the labelled images, each class represented in proportion (largest-remainder rounding)."""
    n = len(labels)
    count = round(budget * n) if budget <= 1 else int(budget)
    if count > n:
        raise MaekitError(f"labels={budget:g} asks for {count} labelled images but the training split has {n}")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * count / n
    take = exact.floor().long()
    rest = count - int(take.sum())
    if rest > 0:
        order = torch.argsort(exact - take, descending=True)
        take[order[:rest]] += 1
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(chosen).sort().values


@dataclass
class Setup:
    """The data and architecture of a downstream run."""

    splits: Splits
    labelled: ImageSet
    val: ImageSet
    model_cfg: ModelConfig
    pretrained_state: dict[str, torch.Tensor] | None
    mean: torch.Tensor
    std: torch.Tensor
    num_classes: int


def prepare_setup(cfg: DownstreamConfig) -> Setup:
    splits = load_splits(cfg.data)
    if splits.train.labels is None:
        raise MaekitError("downstream evaluation needs labels; the configured data have none")
    mean, std = splits.mean, splits.std
    state = None
    if cfg.pretrained:
        run = load_run(cfg.pretrained, "best")
        model_cfg = run.model_cfg
        state = {k[len("encoder.") :]: v for k, v in run.state.items() if k.startswith("encoder.")}
        if not state:
            raise MaekitError(f"{cfg.pretrained} holds no encoder weights")
        mean, std = run.mean, run.std
        if not cfg.allow_test_overlap:
            check_test_not_pretrained(run, splits, cfg.data)
    elif getattr(cfg, "arch", "vit") == "cnn" or getattr(cfg, "features", "encoder") == "pixels":
        # no ViT to build: the patch grid need not fit the image
        model_cfg = dataclasses.replace(cfg.model, img_size=list(splits.image_size), in_chans=splits.channels)
    else:
        try:
            model_cfg = cfg.model.resolved(splits.image_size, splits.channels)
        except ValueError as e:
            raise MaekitError(str(e)) from None
    if model_cfg.in_chans != splits.channels or tuple(model_cfg.img_size) != tuple(splits.image_size):
        raise MaekitError(
            f"encoder {cfg.pretrained or '(model section)'} expects {model_cfg.in_chans} channels of "
            f"{model_cfg.img_size[0]}x{model_cfg.img_size[1]}, but data {splits.sources.get('train', cfg.data.path)} "
            f"have {splits.channels} of {splits.image_size[0]}x{splits.image_size[1]}"
        )
    if len(mean) != splits.channels:
        raise MaekitError(f"{cfg.pretrained} normalised {len(mean)} channels, the data have {splits.channels}")
    labelled = splits.train.subset(label_subset(splits.train.labels, cfg.labels, cfg.label_seed))
    val = splits.val
    if cfg.train.eval_samples < len(val):
        idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.data.split_seed + 101))[
            : cfg.train.eval_samples
        ]
        val = val.subset(idx.sort().values)
    return Setup(splits, labelled, val, model_cfg, state, mean, std, splits.num_classes)


def build_encoder(
    setup: Setup,
    num_classes: int = 0,
    pool: str = "cls",
    drop_path: float = 0.0,
    seed: int = 0,
    patch_dropout: float = 0.0,
) -> ViT:
    """The ViT encoder of the setup's architecture, with pretrained weights if any, else seeded random ones."""
    c = setup.model_cfg
    torch.manual_seed(seed)
    vit = ViT(
        img_size=(c.img_size[0], c.img_size[1]),
        patch_size=c.patch_size,
        in_chans=c.in_chans,
        embed_dim=c.embed_dim,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=c.mlp_ratio,
        qkv_bias=c.qkv_bias,
        drop_path=drop_path,
        norm_eps=c.norm_eps,
        global_pool=pool,
        patch_dropout=patch_dropout,
    )
    if setup.pretrained_state is not None:
        checkpoint.load_weights(vit, setup.pretrained_state, "pretrained encoder")
    vit.reset_head(num_classes)
    return vit


def open_run(cfg: DownstreamConfig, out: Path, kind: str, dist, splits: Splits | None = None) -> RunDir:
    """The run directory, with its config, split rows and run.json."""
    if dist.is_main:
        prepare(out, cfg.resume, kind)
    run = RunDir(out, active=dist.is_main)
    if dist.is_main:
        save_yaml(to_dict(cfg) | {"out": str(out)}, out / "config.yaml")
        if splits is not None:
            splits.save_rows(out / "splits.npz")
        run.write_info(kind)
    return run


def finish(
    run: RunDir, kind: str, logits: torch.Tensor, labels: torch.Tensor, class_names: list[str] | None, extra: dict
) -> dict:
    """Test metrics, confusion matrix PNG and result.json; returns the result dict."""
    rep = classification_report(logits, labels)
    # undefined metrics are null in result.json (with the reason), never NaN (not JSON)
    defined = lambda v: v if math.isfinite(v) else None  # noqa: E731
    result = {
        "method": kind,
        "test_accuracy": defined(rep["accuracy"]),
        "test_roc_auc": defined(rep["roc_auc"]),
        "test_images": len(labels),
        **extra,
    }
    if result["test_roc_auc"] is None:
        result["test_roc_auc_note"] = AUC_UNDEFINED
    if run.active:
        k = logits.shape[1]
        cm = confusion_matrix(logits.argmax(1), labels, k).numpy()
        plots.confusion(
            cm, class_names, run.path / "confusion_matrix.png", f"{kind}: test accuracy {100 * rep['accuracy']:.2f}%"
        )
        save_json(run.path / "result.json", result)
        run.close()
        acc = text_or_na(rep["accuracy"], f"{100 * rep['accuracy']:.2f}%", "no test images")
        auc = text_or_na(rep["roc_auc"], f"{rep['roc_auc']:.4f}", AUC_UNDEFINED)
        print(f"{kind}: test accuracy {acc}, ROC-AUC {auc} ({len(labels)} test images) -> {run.path}")
    return result


def finish_trained(
    run: RunDir, kind: str, logits: torch.Tensor, setup: Setup, cfg: DownstreamConfig, state, t_start: float, **extra
) -> dict:
    """`finish` for a classifier trained on the label subset (finetune, linprobe): what every such result records
    (labels, seeds, the selected validation accuracy and epoch, the encoder it started from, the time taken)."""
    return finish(
        run,
        kind,
        logits,
        setup.splits.test.labels,
        setup.splits.class_names,
        {
            "labels": len(setup.labelled),
            "seed": cfg.train.seed,
            "label_seed": cfg.label_seed,
            "val_accuracy": state.best,
            "best_epoch": state.best_epoch + 1,
            "pretrained": cfg.pretrained,
            **extra,
            "time_s": time.perf_counter() - t_start,
        },
    )


def redraw_curves(out: Path, title: str):
    """An epoch-end hook that redraws curves.png after each evaluation (the last epoch has one), not every epoch:
    a drawing costs ~0.5 s."""

    def draw(epoch: int, metrics: dict) -> None:
        if metrics:
            plots.training_curves(out, out / "curves.png", title)

    return draw


def stopped_early(run: RunDir, kind: str, step: int, total: int) -> dict:
    """A run ended by train.stop_after: no test yet (it is read once, by the finished run)."""
    if run.active:
        run.close()
        print(f"{kind}: stopped at step {step} of {total}; continue with resume=true out={run.path}", flush=True)
    return {"method": kind, "stopped_at_step": step, "steps": total}
