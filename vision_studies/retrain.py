"""Retraining on cleaned data, and both models scored on the same images: cleaned vs uncleaned, side by side.

Seed 000's cloud study cleaned its data by the model's top losses and saw the loss go down. Two things
lower it, and a fair table keeps them apart: the suspects leave the validation set (its hardest, often
wrongly labelled, images are no longer scored), and they leave the training set (the model no longer
learns from wrong labels). So each model is scored on the validation set as it was and as cleaned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from fastai.learner import Learner
from matplotlib.figure import Figure

from . import pipeline
from .clean import cleaned_table
from .pipeline import StudyData, StudyRun
from .studies import StudyConfig
from .train import seed_everything

__all__ = ["retrain_cleaned", "score", "cleaning_comparison", "plot_cleaning_comparison"]


def retrain_cleaned(config: StudyConfig, data: StudyData, report_rows: pd.DataFrame | Iterable[Mapping], *,
                    folder: str = "cleaned") -> StudyRun:
    """The study's steps again, from a new network, on `data` less the images the report lists.

    Nothing on disk moves (`clean.cleaned_table` drops the rows); the split is the same, so the two runs
    differ only by the suspects. Checkpoints go to OUTPUT_DIR/<study>/<folder>, beside the first model's.
    The same seed as the first run: the new network starts from the same random draw.
    """
    table = cleaned_table(data.table, report_rows, data.path)
    changed = replace(config, output_dir=f"{config.output_dir}/{config.study}/{folder}")
    seed_everything(config.seed, deterministic=config.deterministic)
    cleaned = pipeline.study_data(config, data.spec, data.path, table, data.test)
    learn = pipeline.learner(changed, cleaned)
    run = pipeline.train(changed, learn)
    evaluation = pipeline.evaluate(changed, learn, cleaned)
    record, _ = pipeline.record(changed, learn, run, evaluation, write=False)
    return StudyRun(changed, cleaned, learn, run, evaluation, record)


def score(learn: Learner, items: pd.DataFrame) -> dict[str, float]:
    """Mean loss and accuracy of a single-label `learn` on the images of `items` (rows of an items table),
    each scored as validation sees it, without augmentation."""
    if items.empty:
        raise ValueError("score needs at least one image: the items table given is empty")
    probs, targets, losses = learn.get_preds(dl=learn.dls.test_dl(items, with_labels=True), with_loss=True)
    if targets.ndim != 1:
        raise ValueError("score reads single-label predictions; this learner is multi-label")
    return dict(images=len(items), valid_loss=float(losses.mean()),
                accuracy=float((probs.argmax(dim=1) == targets).float().mean()))


def cleaning_comparison(uncleaned: Learner, data: StudyData, cleaned: StudyRun) -> pd.DataFrame:
    """Four rows: the model trained on everything (`uncleaned`, on `data`) and the one trained on the cleaned
    data (`cleaned`, from `retrain_cleaned`), each scored on all of the validation images and on the cleaned ones.

    Columns: model, its training images, the validation set, its images, mean loss and accuracy. On the
    cleaned validation set the two models meet on the same images: the difference there is what training
    without the suspects did.
    """
    trained_on = {"uncleaned": int((~data.table["is_valid"]).sum()), "cleaned": int((~cleaned.data.table["is_valid"]).sum())}
    sets = {"all validation images": data.table[data.table["is_valid"]],
            "cleaned validation images": cleaned.data.table[cleaned.data.table["is_valid"]]}
    rows = []
    for name, learn in (("uncleaned", uncleaned), ("cleaned", cleaned.learn)):
        for set_name, items in sets.items():
            rows.append(dict(model=name, training_images=trained_on[name], validated_on=set_name, **score(learn, items)))
    table = pd.DataFrame(rows)
    return table.round({"valid_loss": 4, "accuracy": 4})


def plot_cleaning_comparison(table: pd.DataFrame) -> Figure:
    """`cleaning_comparison`'s table as bars: validation loss (left) and accuracy (right), uncleaned beside
    cleaned, for each validation set."""
    sets, models = list(dict.fromkeys(table["validated_on"])), list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    x, width = np.arange(len(sets)), 0.8 / len(models)
    for ax, column in zip(axes, ("valid_loss", "accuracy")):
        for i, model in enumerate(models):
            values = [float(table[(table["model"] == model) & (table["validated_on"] == s)][column].iloc[0]) for s in sets]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=f"trained {model}")
        ax.set_xticks(x, sets, fontsize=8)
        ax.set(title=column.replace("_", " "), **({"ylim": (0, 1)} if column == "accuracy" else {}))
        ax.legend(fontsize=8)
    fig.suptitle("cleaned vs uncleaned training data, scored on the same validation images", fontsize=10)
    fig.tight_layout()
    return fig
