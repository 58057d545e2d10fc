"""Whole runs in one call, for comparisons: several settings or backbones trained and scored alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from fastai.learner import Learner
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from .data import dataloaders, holdout_test, items_table
from .metrics import classification_metrics
from .models import build_learner, count_parameters
from .registry import DatasetSpec
from .train import TrainingRun, fit, seed_everything

__all__ = ["train_and_evaluate", "compare", "plot_comparison"]


def train_and_evaluate(
    spec: DatasetSpec,
    path: Path | str,
    arch: str,
    *,
    epochs: int,
    lr: float,
    image_size: int,
    batch_size: int = 64,
    augment: str = "light",
    pretrained: bool = True,
    weights: str | None = None,
    seed: int = 42,
    test_pct: float = 0.0,
    model_kwargs: dict | None = None,
    out_dir: Path | str = "models",
) -> tuple[Learner, TrainingRun, dict[str, Any]]:
    """Data, model, training and scores for one setting: the steps a study notebook takes, in one call.

    With `test_pct`, that share of the training images is held out before anything trains: it never
    takes part in training or in choosing the best epoch, and the returned metrics are measured on it.
    Otherwise they are measured on the validation set.
    """
    seed_everything(seed)
    table = items_table(spec, path, seed)
    table, test = holdout_test(table, test_pct, seed) if test_pct else (table, None)
    dls = dataloaders(spec, path, image_size, batch_size, augment=augment, seed=seed, table=table)
    learn = build_learner(dls, arch, pretrained=pretrained, weights=weights, path=out_dir, model_kwargs=model_kwargs)
    run = fit(learn, epochs, lr, fine_tune=pretrained or bool(weights))
    dl = learn.dls.test_dl(test, with_labels=True) if test is not None else learn.dls.valid
    probs, targets = learn.get_preds(dl=dl)
    metrics = classification_metrics(targets.numpy(), probs.argmax(dim=1).numpy(), list(learn.dls.vocab))
    metrics["parameters"] = count_parameters(learn.model)
    return learn, run, metrics


def compare(settings: Sequence[dict[str, Any]], **common: Any) -> pd.DataFrame:
    """`train_and_evaluate` for each setting (its keys override `common`); a row per setting.

    Columns: the setting's own keys, then accuracy, macro F1, the kept epoch, parameters and seconds.
    """
    rows = []
    for setting in tqdm(settings, desc="settings", unit="run"):
        _, run, m = train_and_evaluate(**{**common, **setting})
        rows.append({**{k: v for k, v in setting.items() if k not in ("spec", "path")},
                     "accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "best_epoch": run.best_epoch,
                     "parameters": m["parameters"], "seconds": round(run.seconds, 1)})
    return pd.DataFrame(rows)


def plot_comparison(table: pd.DataFrame, group: str, by: str, metric: str = "accuracy") -> Figure:
    """Grouped bars: `metric` for each `by` (backbones, say) within each `group` (datasets, say)."""
    groups, bars = list(dict.fromkeys(table[group])), list(dict.fromkeys(table[by]))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(groups) * len(bars) / 2), 3.5))
    x = np.arange(len(groups))
    for i, name in enumerate(bars):
        values = [table[(table[group] == g) & (table[by] == name)][metric].mean() for g in groups]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=str(name))
    ax.set_xticks(x, groups)
    ax.set(ylabel=metric, ylim=(0, 1), title=f"{metric} by {by} and {group}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
