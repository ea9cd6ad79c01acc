"""Pictures: loss curves (read from metrics.jsonl) and reconstruction grids. matplotlib, Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .engine.rundir import read_metrics  # noqa: E402
from .files import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def loss_curves(
    run_dir: Path,
    out: Path,
    keys: tuple[str, ...] = ("train_recon_loss", "val_recon_loss", "test_recon_loss"),
    title: str = "MAE reconstruction loss",
) -> None:
    """Per-step training loss and per-epoch evaluation losses against optimiser step."""
    rows = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = [r for r in rows if "train_loss" in r]
    if steps:
        ax.plot(
            [r["step"] for r in steps],
            [r["train_loss"] for r in steps],
            lw=0.8,
            alpha=0.6,
            label="train loss (augmented, per step)",
        )
    for k in keys:
        pts = [r for r in rows if k in r]
        if pts:
            ax.plot(
                [r["step"] for r in pts],
                [r[k] for r in pts],
                marker="o",
                ms=3,
                label=k.replace("_", " ") + " (fixed masks)",
            )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)


def _display(img: np.ndarray) -> np.ndarray:
    """[C, H, W] on a 0-1 scale -> something imshow can draw: gray for 1 channel, RGB for 3, mean otherwise."""
    img = np.clip(img, 0.0, 1.0)
    if img.shape[0] == 3:
        return img.transpose(1, 2, 0)
    return img.mean(axis=0)


def recon_grid(columns: dict[str, np.ndarray], out: Path, title: str = "") -> None:
    """columns: name -> images [N, C, H, W] on a 0-1 scale; one row per image, one column per name."""
    names = list(columns)
    n = columns[names[0]].shape[0]
    # constrained layout puts the suptitle right above the images (the default left a band of ~1/8 of the height)
    fig, axes = plt.subplots(n, len(names), figsize=(1.6 * len(names), 1.6 * n), squeeze=False, layout="constrained")
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i, j]
            img = _display(columns[name][i])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, out)


def confusion(cm: np.ndarray, class_names: list[str] | None, out: Path, title: str = "") -> None:
    """Confusion matrix [K, K] (rows true, columns predicted), row-normalised colours, counts written in."""
    k = cm.shape[0]
    names = class_names or [str(i) for i in range(k)]
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if frac[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    save_figure(fig, out)


def training_curves(run_dir: Path, out: Path, title: str = "") -> None:
    """Train loss per logged step, and validation loss / accuracy per evaluated epoch."""
    rows = read_metrics(run_dir)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    tr = [r for r in rows if "train_loss" in r]
    ev = [r for r in rows if "val_loss" in r]
    if tr:
        a1.plot([r["step"] for r in tr], [r["train_loss"] for r in tr], label="train loss")
    if ev:
        a1.plot([r["step"] for r in ev], [r["val_loss"] for r in ev], marker="o", ms=3, label="val loss")
        a2.plot([r["epoch"] + 1 for r in ev], [r["val_accuracy"] for r in ev], marker="o", ms=3, label="val accuracy")
        if "train_accuracy" in ev[0]:
            a2.plot(
                [r["epoch"] + 1 for r in ev],
                [r["train_accuracy"] for r in ev],
                marker="o",
                ms=3,
                label="train accuracy",
            )
    a1.set_xlabel("optimiser step")
    a1.set_ylabel("cross-entropy")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, out)


def accuracy_vs_labels(rows: list[dict], out: Path, title: str = "") -> None:
    """rows: {method, labels, mean, std}; one line per method, x = labelled images (log scale)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in sorted({r["method"] for r in rows}):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["labels"])
        ax.errorbar(
            [r["labels"] for r in pts],
            [100 * r["mean"] for r in pts],
            yerr=[100 * r["std"] for r in pts],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, out)


def heatmap(
    values: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    out: Path,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    fmt: str = "{:.4g}",
) -> None:
    """values [R, C] (NaN = not run yet) as a coloured grid with the numbers written in."""
    r, c = values.shape
    fig, ax = plt.subplots(figsize=(1.8 + 1.1 * c, 1.0 + 0.55 * r))
    finite = values[np.isfinite(values)]
    ax.imshow(
        np.ma.masked_invalid(values),
        cmap="viridis",
        aspect="auto",
        vmin=finite.min() if finite.size else 0,
        vmax=finite.max() if finite.size else 1,
    )
    lo, hi = (finite.min(), finite.max()) if finite.size else (0, 1)
    for i in range(r):
        for j in range(c):
            v = values[i, j]
            text = fmt.format(v) if np.isfinite(v) else "-"
            dark = np.isfinite(v) and (v - lo) < 0.5 * (hi - lo)
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(c), col_labels, fontsize=8)
    ax.set_yticks(range(r), row_labels, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    save_figure(fig, out)


def overlaid_loss_curves(
    runs: list[tuple[str, Path]], out: Path, eval_key: str = "test_recon_loss", title: str = ""
) -> None:
    """Several pretraining runs on one figure: training loss per logged step (left) and `eval_key` per epoch
    (right), against epochs so that runs with different steps per epoch line up."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, run_dir in runs:
        rows = read_metrics(run_dir)
        ev = [r for r in rows if eval_key in r]
        if not ev:
            continue
        spe = ev[0]["step"] / (ev[0]["epoch"] + 1)
        tr = [r for r in rows if "train_loss" in r]
        line = a2.plot([r["epoch"] + 1 for r in ev], [r[eval_key] for r in ev], marker="o", ms=3, label=label)[0]
        if tr:
            a1.plot(
                [r["step"] / spe for r in tr],
                [r["train_loss"] for r in tr],
                lw=0.9,
                color=line.get_color(),
                label=label,
            )
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (augmented, per logged step)")
    a2.set_xlabel("epoch")
    a2.set_ylabel(eval_key.replace("_", " ") + " (fixed masks)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, out)


def sample_grid(images, out: Path, title: str = "", channel_names: list[str] | None = None, log: bool = False) -> None:
    """A grid of samples [N, C, H, W] (uint8 or float). Gray or RGB images: a grid of thumbnails; other
    multi-channel images (detector data): one row per sample, one panel per channel with its own colour scale
    (log scale with `log`, for sparse images)."""
    from matplotlib.colors import LogNorm

    x = np.asarray(images, dtype=np.float64)
    n, c = x.shape[:2]
    photo = c in (1, 3) and np.asarray(images).dtype == np.uint8
    if photo:
        cols = min(8, n)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.5 * rows + 0.4), squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k < n:
                img = x[k] / 255.0
                ax.imshow(img.transpose(1, 2, 0) if c == 3 else img[0], cmap=None if c == 3 else "gray", vmin=0, vmax=1)
    else:
        names = channel_names or [f"channel {i}" for i in range(c)]
        fig, axes = plt.subplots(n, c, figsize=(1.9 * c, 1.9 * n + 0.4), squeeze=False)
        for j in range(c):
            ch = x[:, j]
            positive = ch[ch > 0]
            for i in range(n):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if log and positive.size:
                    im = ax.imshow(
                        np.where(ch[i] > 0, ch[i], np.nan),
                        cmap="viridis",
                        norm=LogNorm(vmin=max(positive.min(), positive.max() * 1e-6), vmax=positive.max()),
                    )
                    ax.set_facecolor("black")
                else:
                    im = ax.imshow(ch[i], cmap="viridis", vmin=ch.min(), vmax=max(ch.max(), ch.min() + 1e-12))
                if i == 0:
                    ax.set_title(names[j], fontsize=8)
            fig.colorbar(im, ax=axes[:, j].tolist(), shrink=0.6, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, out)
