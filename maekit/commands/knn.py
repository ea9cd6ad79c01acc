"""maekit knn: weighted k-NN (votes exp(cos/T), as in Wu et al. 2018 and DINO) on L2-normalised encoder
features of the labelled images; no training."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import KnnConfig
from ..data.transforms import eval_batch_size, normalize
from ..engine.trainer import process
from ..metrics import accuracy
from ..runs import extract_features_sharded
from .downstream import build_encoder, finish, open_run, prepare_setup


def knn_scores(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    query: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class probabilities [Nq, K] from the k nearest (cosine) bank features, weighted by exp(sim / T)."""
    bank = F.normalize(bank, dim=1)
    query = F.normalize(query, dim=1)
    k = min(k, len(bank))
    out = []
    for i in range(0, len(query), chunk):
        sim = query[i : i + chunk] @ bank.T
        top, idx = sim.topk(k, dim=1)
        w = (top / temperature).exp()
        scores = torch.zeros(len(top), num_classes).scatter_add_(1, bank_labels[idx], w)
        out.append(scores / scores.sum(dim=1, keepdim=True))
    return torch.cat(out)


def pixel_features(images, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Images [N, C, H, W] -> normalised pixels [N, C*H*W] (the k-NN baseline that needs no model)."""
    b = eval_batch_size(images)
    parts = [normalize(images[i : i + b], mean, std).flatten(1) for i in range(0, images.shape[0], b)]
    return torch.cat(parts) if parts else torch.zeros(0, math.prod(images.shape[1:]))


def run(cfg: KnnConfig, out: Path, kind: str = "knn") -> dict:
    with process(cfg.train) as dist:
        t0 = time.perf_counter()
        setup = prepare_setup(cfg)
        run_dir = open_run(cfg, out, kind, dist, setup.splits)
        if cfg.features == "pixels":
            bank, val, test = (
                pixel_features(s.images, setup.mean, setup.std) for s in (setup.labelled, setup.val, setup.splits.test)
            )
        else:
            encoder = build_encoder(setup, 0, cfg.pool, 0.0, cfg.train.seed).to(dist.device)
            bank, val, test = (
                extract_features_sharded(encoder, s.images, setup.mean, setup.std, cfg.pool, dist)
                for s in (setup.labelled, setup.val, setup.splits.test)
            )
        if not dist.is_main:
            return {}  # features shared out under DDP; the neighbour search and outputs are rank 0's
        args = (setup.labelled.labels, setup.num_classes, cfg.knn_k, cfg.knn_temperature)
        val_acc = accuracy(knn_scores(bank, args[0], val, *args[1:]), setup.val.labels)
        probs = knn_scores(bank, args[0], test, *args[1:])
        return finish(
            run_dir,
            kind,
            probs.clamp_min(1e-12).log(),
            setup.splits.test.labels,
            setup.splits.class_names,
            {
                "labels": len(bank),
                "seed": cfg.train.seed,
                "label_seed": cfg.label_seed,
                "val_accuracy": val_acc,
                "k": cfg.knn_k,
                "pretrained": cfg.pretrained,
                "time_s": time.perf_counter() - t0,
            },
        )
