"""The seed projects' shipped configs (configs/seeds/) run end to end on files in their public formats."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml

from maekit.cli import main
from maekit.engine import checkpoint

import formats
from conftest import TINY


def test_cifar10_seed_workflow_runs_on_cifar_python_batches(tmp_path, fmnist_full):
    """configs/seeds/cifar10_mae.yaml (pretrain, then a linear probe of the pretrained and of a random encoder) on
    CIFAR-10 'python version' batches written here: the seed's optimiser settings reach the pretraining run (absolute
    lr 1e-4 at batch 128, weight decay 1e-4, mask 0.75, norm_pix_loss), its classes come from batches.meta, and the
    table holds both probes for every seed."""
    images, labels = fmnist_full["train"]
    x = np.pad(images[:140], ((0, 0), (2, 2), (2, 2)))
    rgb = np.stack([x, (x * 0.7).astype(np.uint8), 255 - x], axis=1)  # real content in CIFAR's 3 x 32 x 32
    folder = tmp_path / "cifar-10-batches-py"
    formats.write_cifar(folder, rgb, labels[:140].astype(np.int64), per_batch=24, test=20)
    out = tmp_path / "cifar_mae"
    tiny = [f"pretrain.{o}" for o in TINY if "patch_size" not in o]
    speed = [f"{m}.train.{k}" for m in ("linprobe",) for k in ("progress=false", "batch_size=32")]
    args = [
        "compare",
        "-c",
        str(Path(__file__).parent.parent / "configs/seeds/cifar10_mae.yaml"),
        f"pretrain.data.path={folder}",
        f"out={out}",
        "pretrain.model.preset=null",
        *tiny,
        "pretrain.train.epochs=1",
        "pretrain.train.batch_size=32",
        "pretrain.train.eval_samples=16",
        "pretrain.train.progress=false",
        "linprobe.train.epochs=2",
        "seeds=[0, 1]",
        *speed,
    ]
    assert main(args) == 0
    pre = yaml.safe_load((out / "pretrain" / "config.yaml").read_text())
    assert pre["optim"]["lr"] == 1e-4 and pre["optim"]["weight_decay"] == 1e-4
    assert pre["model"]["mask_ratio"] == 0.75 and pre["model"]["norm_pix_loss"] is True
    assert pre["model"]["patch_size"] == 4 and pre["data"]["source"] == "cifar"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("linprobe", "0"),
        ("linprobe", "1"),
        ("linprobe_random", "0"),
        ("linprobe_random", "1"),
    ]
    _, meta = checkpoint.load(out / "pretrain" / "checkpoints" / "best.safetensors")
    assert meta["data"]["class_names"][:2] == ["airplane", "automobile"] and meta["data"]["image_size"] == [32, 32]
