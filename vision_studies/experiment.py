"""Comparisons: several settings or backbones, each a whole `pipeline.run_study`, scored alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from .models import count_parameters
from .pipeline import run_study
from .studies import StudyConfig

__all__ = ["compare", "plot_comparison"]


def compare(config: StudyConfig, settings: Sequence[dict[str, Any]], *, folder: str = "compare") -> pd.DataFrame:
    """`pipeline.run_study` for `config` changed by each setting (field names: ``dict(arch="resnet18")``),
    nothing written but checkpoints, under OUTPUT_DIR/<study>/<folder>; a row per setting.

    Columns: the setting's own keys, then accuracy, macro F1, the kept epoch, parameters and seconds. With
    TEST_PCT the figures are the held-out test set's, which took no part in training or in choosing the epoch.
    """
    rows = []
    for setting in tqdm(settings, desc="settings", unit="run"):
        changed = replace(config, output_dir=f"{config.output_dir}/{config.study}/{folder}", **setting)
        done = run_study(changed, write=False, quiet=True)
        m = done.evaluation.metrics
        rows.append({**{k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()},
                     "accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "best_epoch": done.run.best_epoch,
                     "parameters": count_parameters(done.learn.model), "seconds": round(done.run.seconds, 1)})
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
