"""Classification metrics on tensors: accuracy, ROC-AUC (binary, macro one-vs-rest), confusion matrix."""

from __future__ import annotations

import math

import torch


def accuracy(logits_or_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy from logits [N, K] or predicted classes [N]."""
    pred = logits_or_pred.argmax(dim=1) if logits_or_pred.ndim == 2 else logits_or_pred
    return float((pred == labels).float().mean()) if len(labels) else float("nan")


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of x [N] with ties given their average rank."""
    x = x.double()
    order = torch.argsort(x)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    n = len(x)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def roc_auc_binary(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class is absent."""
    positive = positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Binary ROC-AUC for 2 classes (score = p(class 1)); otherwise the macro mean of one-vs-rest AUCs."""
    if probs.shape[1] == 2:
        return roc_auc_binary(probs[:, 1], labels == 1)
    aucs = [roc_auc_binary(probs[:, k], labels == k) for k in range(probs.shape[1])]
    aucs = [a for a in aucs if a == a]
    return float(sum(aucs) / len(aucs)) if aucs else float("nan")


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[K, K] counts, rows = true class, columns = predicted class."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


AUC_UNDEFINED = "one class in the test split"


def text_or_na(value: float, text: str, why: str) -> str:
    """`text` (the value, formatted) where the metric is defined, else "n/a (why)": never a bare nan in a table."""
    return text if math.isfinite(value) else f"n/a ({why})"


def classification_report(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    probs = torch.softmax(logits.float(), dim=1)
    return {"accuracy": accuracy(logits, labels), "roc_auc": roc_auc(probs, labels)}
