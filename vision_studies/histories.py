"""Reading training histories: several runs' curves side by side, where a run overfits, and a run stuck at chance.

A history is `train.TrainingRun.history`: one dict per epoch (``train_loss``, ``valid_loss``, metrics).
Two failures show in it before any other figure does. **Overfitting**: the training loss keeps falling
while the validation loss turns and rises; the model is learning its training images, not the classes
(seed 002's naive CNN on CIFAR-10). **A model stuck at chance**: a validation loss of exactly ln(n) for n
classes (0.6931 for two), the cross-entropy of answering 1/n for every image whatever it shows; seed 004's
cats-vs-dogs CNN sat there for epochs. Nothing here trains: these are functions of the histories.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

__all__ = ["History", "SEED_004_HISTORY", "chance_loss", "stuck_epochs", "answers_alike", "stuck_report",
           "overfitting_epoch", "overfitting_table", "plot_histories"]

History = Sequence[Mapping[str, float]]

# Seed 004's from-scratch cats-vs-dogs CNN, its 33 epochs as its README's Keras log prints them (the
# seed's own figures, quoted; Keras's "loss" is the training loss, "val_loss" the validation loss). From the
# fourth epoch the validation loss reads 0.6931 = ln 2 in 6 of 7 epochs, its accuracy about 0.50.
SEED_004_HISTORY: tuple[dict[str, float], ...] = tuple(
    dict(train_loss=t, valid_loss=v, accuracy=a) for t, v, a in (
        (2.8698, 4.0334, 0.5234), (2.5178, 3.4502, 0.4967), (2.0056, 1.5104, 0.5067), (2.0310, 0.6931, 0.5045),
        (1.8025, 0.6931, 0.4888), (1.6834, 0.6931, 0.4978), (1.4822, 0.6931, 0.4978), (1.7163, 0.6931, 0.5000),
        (1.8952, 0.8129, 0.4877), (1.6270, 0.6931, 0.4967), (1.7384, 0.7440, 0.5089), (1.5905, 0.7432, 0.5067),
        (1.4589, 0.7732, 0.5011), (1.5294, 0.7913, 0.4911), (1.5190, 0.7592, 0.4922), (1.3890, 0.8579, 0.4978),
        (1.3727, 1.7727, 0.5011), (1.3053, 1.0550, 0.5301), (1.3570, 1.1476, 0.5580), (1.5965, 1.2491, 0.5067),
        (1.4153, 1.3662, 0.5045), (1.4387, 1.3916, 0.5022), (1.5061, 2.2269, 0.5056), (1.5617, 2.5830, 0.5056),
        (1.8545, 2.3506, 0.5156), (1.9893, 2.0265, 0.5190), (1.9120, 2.1472, 0.5212), (1.8331, 2.2855, 0.5234),
        (1.9035, 2.1512, 0.5301), (1.6570, 1.4792, 0.5312), (1.4035, 1.1137, 0.5167), (1.4652, 1.0954, 0.5156),
        (1.5317, 1.0143, 0.5078),
    )
)


def chance_loss(n_classes: int) -> float:
    """ln(n): the cross-entropy of a model that gives each of `n_classes` classes probability 1/n, on any image.

    -log(1/n) per image, whatever its label, so also the mean over any validation set: 0.6931 for two
    classes, 2.3026 for ten. A validation loss that stays there, epoch after epoch, is a model answering alike for
    every image far more often than a coincidence.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes={n_classes}: a classifier needs at least 2 classes")
    return math.log(n_classes)


def stuck_epochs(history: History, n_classes: int, tolerance: float = 1e-3, monitor: str = "valid_loss") -> list[int]:
    """The epochs (from 0) whose `monitor` lies within `tolerance` of ln(`n_classes`).

    1e-3 because Keras and fastai print four decimals (seed 004's 0.6931) and because a model that answers
    p for one class on every image of a balanced two-class set scores -(ln p + ln(1 - p)) / 2, which leaves
    ln 2 by 1e-3 once p is 0.022 away from 0.5: within it, the answers are 50/50 give or take a coin's bias.
    A freshly initialised network starts near ln(n) too, so the first epoch of a run alone says little.
    """
    if any(monitor not in row for row in history):
        raise KeyError(f"every epoch of the history needs {monitor!r}; it has {sorted(history[0]) if history else 'no epochs'}")
    target = chance_loss(n_classes)
    return [i for i, row in enumerate(history) if abs(float(row[monitor]) - target) <= tolerance]


def answers_alike(probs: torch.Tensor | np.ndarray, tolerance: float = 0.02) -> bool:
    """Whether every image got (nearly) the same probabilities: the stuck model's outputs, seen directly.

    `probs` is (images, classes), as `pipeline.evaluate` returns them. True when no class's probability moves
    by more than `tolerance` from image to image, whatever the images show: the network has stopped looking.
    """
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"probs should be (images, classes), got shape {p.shape}")
    return bool((p.max(axis=0) - p.min(axis=0)).max() <= tolerance)


def stuck_report(histories: Mapping[str, History], n_classes: int, probs: Mapping[str, torch.Tensor] | None = None,
                 tolerance: float = 1e-3, min_epochs: int = 2) -> pd.DataFrame:
    """A row per run: the epochs at chance loss (epoch numbers from 1, as a log prints them), and the verdict.

    A run counts as stuck when at least `min_epochs` of its epochs sit at ln(n), or its last one does: a
    single early epoch there is where every network starts, not a failure. Given a run's validation
    predictions (`probs`, by run name), it also counts as stuck when they are all alike (`answers_alike`):
    a model that settled on one constant answer other than 1/n (say 52/48, its training set's share) scores
    that answer's cross-entropy, near ln(n) but not on it, and only its predictions give it away.
    """
    rows = []
    for name, history in histories.items():
        at = stuck_epochs(history, n_classes, tolerance)
        alike = answers_alike(probs[name]) if probs is not None and name in probs else None
        stuck = len(at) >= min_epochs or (bool(history) and len(history) - 1 in at) or bool(alike)
        rows.append(dict(run=name, chance_loss=round(chance_loss(n_classes), 4), epochs=len(history),
                         epochs_at_chance=[i + 1 for i in at], answers_alike=alike,
                         last_valid_loss=round(float(history[-1]["valid_loss"]), 4) if history else None, stuck=stuck))
    return pd.DataFrame(rows)


def overfitting_epoch(history: History, rise: float = 0.1, min_rise: float = 0.05) -> int | None:
    """The epoch (from 0) after which the run overfits, or None: the epoch of its lowest validation loss, when
    the validation loss ends more than `rise` (10%) and `min_rise` above that low while the training loss fell
    below where it was then.

    Both halves matter: a validation loss that rises with the training loss is a learning rate too high, not
    overfitting; one that wobbles by a few percent, or from 0.01 to 0.03 on a few dozen images, is noise.
    """
    if len(history) < 2:
        return None
    valid = np.array([float(r["valid_loss"]) for r in history])
    train = np.array([float(r["train_loss"]) for r in history])
    low = int(valid.argmin())
    if low == len(history) - 1:
        return None
    risen = valid[-1] > valid[low] * (1 + rise) and valid[-1] - valid[low] > min_rise
    return low if risen and train[-1] < train[low] else None


def overfitting_table(histories: Mapping[str, History], rise: float = 0.1) -> pd.DataFrame:
    """A row per run: its lowest validation loss and when, where both losses ended, and whether it overfits."""
    rows = []
    for name, history in histories.items():
        valid = [float(r["valid_loss"]) for r in history]
        train = [float(r["train_loss"]) for r in history]
        onset = overfitting_epoch(history, rise)
        low = int(np.argmin(valid))
        rows.append(dict(run=name, epochs=len(history), lowest_valid_loss=round(valid[low], 4), at_epoch=low + 1,
                         last_train_loss=round(train[-1], 4), last_valid_loss=round(valid[-1], 4),
                         overfits=onset is not None, overfits_after_epoch=None if onset is None else onset + 1))
    return pd.DataFrame(rows)


def plot_histories(histories: Mapping[str, History], n_classes: int | None = None, metric: str = "accuracy",
                   rise: float = 0.1) -> Figure:
    """Runs side by side, a column each: training and validation loss above, `metric` below, on shared axes.

    The epoch after which a run overfits (`overfitting_epoch`) is marked; with `n_classes`, so is the chance
    loss ln(n), the line a stuck model's validation loss sits on.
    """
    if not histories:
        raise ValueError("plot_histories needs at least one run's history")
    names = list(histories)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 5.4), sharey="row", squeeze=False)
    for col, name in enumerate(names):
        history = histories[name]
        epochs = np.arange(1, len(history) + 1)
        ax_loss, ax_metric = axes[0, col], axes[1, col]
        for key, style in (("train_loss", "-o"), ("valid_loss", "-s")):
            ax_loss.plot(epochs, [float(r[key]) for r in history], style, markersize=3, label=key.replace("_", " "))
        if n_classes:
            ax_loss.axhline(chance_loss(n_classes), color="red", linestyle=":", linewidth=1,
                            label=f"ln {n_classes}: 1/{n_classes} for every image")
        onset = overfitting_epoch(history, rise)
        if onset is not None:
            ax_loss.axvline(onset + 1, color="grey", linestyle="--", linewidth=1, label="overfitting from here")
        ax_loss.set(title=name, xlabel="epoch")
        if metric in (history[0] if history else {}):
            ax_metric.plot(epochs, [float(r[metric]) for r in history], "-o", markersize=3, color="green")
        ax_metric.set(xlabel="epoch", ylim=(0, 1.02))
        ax_loss.legend(fontsize=7)
    axes[0, 0].set_ylabel("loss")
    axes[1, 0].set_ylabel(f"validation {metric}")
    fig.tight_layout()
    return fig
