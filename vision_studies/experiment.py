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
from .pipeline import StudyRun, run_study
from .studies import StudyConfig

__all__ = ["compare", "compare_runs", "plot_comparison", "native_size", "backbone_settings", "set_splits", "ready_sets"]


def compare(config: StudyConfig, settings: Sequence[dict[str, Any]], *, folder: str = "compare") -> pd.DataFrame:
    """`pipeline.run_study` for `config` changed by each setting (field names: ``dict(arch="resnet18")``),
    nothing written but checkpoints, under OUTPUT_DIR/<study>/<folder>; a row per setting.

    Columns: the setting's own keys, then accuracy, macro F1, the kept epoch, parameters and seconds. With
    TEST_PCT the figures are the held-out test set's, which took no part in training or in choosing the epoch.
    """
    return compare_runs(config, settings, folder=folder)[0]


def compare_runs(config: StudyConfig, settings: Sequence[dict[str, Any]], *,
                 folder: str = "compare") -> tuple[pd.DataFrame, list[StudyRun]]:
    """`compare`'s table and the finished runs behind its rows, in the same order: each run's learner,
    history and evaluation, so the next cells draw its curves or train it on instead of training it again."""
    rows, runs = [], []
    for setting in tqdm(settings, desc="settings", unit="run"):
        changed = replace(config, output_dir=f"{config.output_dir}/{config.study}/{folder}", **setting)
        done = run_study(changed, write=False, quiet=True)
        m = done.evaluation.metrics
        rows.append({**{k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()},
                     "accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "best_epoch": done.run.best_epoch,
                     "parameters": count_parameters(done.learn.model), "seconds": round(done.run.seconds, 1)})
        runs.append(done)
    return pd.DataFrame(rows), runs


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


def native_size(arch: str, default: int) -> int:
    """The input size `arch`'s pretrained weights learnt at, as timm's pretrained_cfg records it (``input_size``
    (3, 299, 299) for Inception V3 and Xception); `default` for a network from scratch or without a config."""
    from .models import SCRATCH_MODELS

    if arch in SCRATCH_MODELS:
        return default
    import timm

    cfg = timm.get_pretrained_cfg(arch)
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else default


def backbone_settings(config: StudyConfig) -> list[dict[str, Any]]:
    """One `compare` setting per backbone of ``config.archs``: pretrained as PRETRAINED says, but a CNN from
    scratch always from scratch; with NATIVE_SIZE each pretrained one at its own input size (a 299-px network
    shown 224-px images sees its objects smaller than it learnt them), else all at IMAGE_SIZE."""
    from .studies import arch_pretrained

    settings = []
    for arch in config.archs:
        pretrained = arch_pretrained(arch, config.pretrained)
        native = getattr(config, "native_size", False) and pretrained
        settings.append(dict(arch=arch, pretrained=pretrained,
                             image_size=native_size(arch, config.image_size) if native else config.image_size))
    return settings


def set_splits(config: StudyConfig) -> pd.DataFrame:
    """A row per set of ``config.datasets``: its source and how many images train, validate (pick the epoch)
    and test (touched once, at the end), split by the rule `pipeline.data` applies (`data.test_split`).

    A set whose source carries no labels and has not been sorted yet (``spec.sorting``: Caltech's leaves) is
    marked ``ready = False`` with what to do printed, rather than stopping a learner's run of the other four."""
    from .data import has_official_split, items_table, prepare_dataset, test_split

    from .labels import LabelError

    rows = []
    for name in config.datasets:
        spec, path = prepare_dataset(name, config.fixture, config.data_dir)
        try:
            table, test = test_split(spec, items_table(spec, path, config.seed), config.test_pct, config.seed)
        except LabelError as error:  # a source without labels (Caltech's leaves): the run goes on without it
            if not spec.sorting:
                raise
            print(f"{name} is left out of this run until its photos are sorted: {error}")
            rows.append({"dataset": name, "source": spec.title, "ready": False})
            continue
        rows.append({"dataset": name, "source": spec.title, "ready": True, "classes": table["label"].nunique(),
                     "train": int((~table["is_valid"]).sum()), "validate": int(table["is_valid"].sum()),
                     "test": len(test), "test images": "the dataset's own" if has_official_split(spec)
                     else f"{config.test_pct:.0%} of the training images, held out"})
    return pd.DataFrame(rows)


def ready_sets(splits: pd.DataFrame) -> list[str]:
    """The sets of `set_splits` that can train now: all but a set still waiting to be sorted by hand."""
    return list(splits.loc[splits["ready"], "dataset"])
