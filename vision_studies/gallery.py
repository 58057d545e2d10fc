"""Pictures of predictions: validation photos with what the model said and what is true, wrong ones first.

Metrics say how often a model errs; the photos say how. Seed 000 showed its predictions on photos before it
deployed a demo; fastai's `show_results` does the same for one batch at fastai's own 0.5 threshold. Here the
images are the evaluation's own (the study's chosen threshold for a multi-label model), the ones it got
wrong come first, and the same rows come back as a table, so a reader (and a test) can check each picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .images import load_image

__all__ = ["prediction_table", "plot_predictions"]


def _names(row: np.ndarray, classes: Sequence[str]) -> str:
    return ", ".join(classes[i] for i in np.flatnonzero(row)) or "(nothing)"


def prediction_table(paths: Sequence[str | Path], probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                     *, threshold: float | None = None, k: int = 9) -> pd.DataFrame:
    """`k` rows (image, predicted, true, right, confidence), the wrong predictions first, the most confident
    wrong one at the top; then right ones, the least confident first. `threshold`: a multi-label model's
    (targets multi-hot), where "right" means every label decided exactly; else the top class against the label."""
    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets)
    if len(paths) != len(probs):
        raise ValueError(f"{len(paths)} image paths for {len(probs)} predictions: pass the evaluated images' paths")
    if threshold is not None:
        decided = probs >= threshold
        predicted = [_names(row, classes) for row in decided]
        true = [_names(row, classes) for row in targets.astype(bool)]
        right = (decided == targets.astype(bool)).all(axis=1)
        confidence = np.where(decided, probs, 1 - probs).min(axis=1)  # the least sure of its decisions
    else:
        top = probs.argmax(axis=1)
        predicted, true = [classes[i] for i in top], [classes[int(t)] for t in targets]
        right = top == targets
        confidence = probs.max(axis=1)
    order = sorted(range(len(probs)), key=lambda i: (bool(right[i]), -confidence[i] if not right[i] else confidence[i]))
    rows = [dict(image=str(paths[i]), predicted=predicted[i], true=true[i], right=bool(right[i]),
                 confidence=round(float(confidence[i]), 3)) for i in order[:k]]
    return pd.DataFrame(rows, columns=["image", "predicted", "true", "right", "confidence"])


def plot_predictions(table: pd.DataFrame, columns: int = 3) -> Figure:
    """The photos of `prediction_table`, each titled with the prediction (red when wrong) over the truth."""
    n = max(1, len(table))
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, table.itertuples()):
        ax.imshow(load_image(row.image, "RGB"))
        ax.set_title(f"said: {row.predicted}\ntrue: {row.true}", fontsize=8, color="green" if row.right else "red")
    fig.suptitle("Predictions on validation photos (wrong ones first)", fontsize=10)
    fig.tight_layout()
    return fig
