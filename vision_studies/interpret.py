"""Pictures of what the model learned and where it errs: training curves, confusion matrix, top losses."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from fastai.learner import Learner
from matplotlib.figure import Figure

__all__ = ["plot_training_curves", "plot_confusion_matrix", "plot_top_losses"]


def plot_training_curves(history: Sequence[dict[str, float]], best_epoch: int | None = None) -> Figure:
    """Losses (left) and metrics (right) by epoch, from `TrainingRun.history`; the kept epoch is marked."""
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name in history[0] if history else []:
        ax = ax_loss if "loss" in name else ax_metric
        ax.plot(epochs, [row[name] for row in history], marker="o", label=name)
    for ax, title in ((ax_loss, "loss"), (ax_metric, "validation metrics")):
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="grey", linestyle="--", linewidth=1, label="kept epoch")
        ax.set(xlabel="epoch", title=title)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix, classes: Sequence[str], normalize: bool = False) -> Figure:
    """Rows are the true class, columns the prediction; `normalize` shows each row as fractions of its class."""
    cm = np.asarray(matrix, dtype=float)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = max(4.0, 0.28 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="actual", title="confusion matrix" + (" (row-normalised)" if normalize else ""))
    if n <= 20:  # numbers in the cells stay readable up to about 20 classes
        for i in range(n):
            for j in range(n):
                value = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, value, ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    return fig


def plot_top_losses(learn: Learner, probs: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor, k: int = 9) -> Figure:
    """The `k` validation images the model got most wrong, titled predicted / actual / loss / prob of actual."""
    k = min(k, len(losses))
    top = losses.argsort(descending=True)[:k]
    vocab = learn.dls.vocab
    cols = min(k, 3)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, top.tolist()):
        image, _ = learn.dls.valid_ds[i]
        ax.imshow(image, cmap="gray" if image.mode == "L" else None)
        predicted, actual = int(probs[i].argmax()), int(targets[i])
        ax.set_title(f"{vocab[predicted]} / {vocab[actual]}\n{float(losses[i]):.2f} / {float(probs[i, actual]):.2f}", fontsize=9)
    fig.suptitle("top losses: predicted / actual, loss / probability of actual", fontsize=10)
    fig.tight_layout()
    return fig
