"""Metrics for single-label classification, and the results record every run writes."""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastai.learner import Learner
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
)

__all__ = ["decide", "THRESHOLDS", "classification_metrics", "multilabel_metrics", "threshold_sweep", "best_threshold",
           "headline", "predict_validation", "evaluate", "results_record", "write_results"]

# The thresholds every sweep tries: 0.05 to 0.95 in steps of 0.05.
THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


def decide(probs, threshold: float) -> np.ndarray:
    """The multi-label decision: a label is predicted when its probability is above `threshold`.

    fastai's own rule (``accuracy_multi`` and ``BCEWithLogitsLossFlat.decodes`` both compare with ``>``),
    so our metrics, reports, exported models and demo decide exactly as the learner's own metric does.
    Works on numpy arrays and torch tensors alike; returns a boolean numpy array of the same shape.
    """
    return np.asarray(probs) > threshold


def classification_metrics(y_true, y_pred, classes: list[str], positive: str | None = None) -> dict[str, Any]:
    """Accuracy, error rate, macro precision/recall/F1 and the confusion matrix (rows: truth, columns: prediction).

    Labels are class indices into `classes`; a class absent from both truth and prediction still gets
    its row and column, so matrices from different runs line up. Macro averages count such a class as 0.
    For a binary question ("is it a pothole?") name the `positive` class to get its own precision,
    recall and F1 as well.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    acc = float(accuracy_score(y_true, y_pred))
    binary = {}
    if positive is not None:
        if positive not in classes:
            raise ValueError(f"positive class {positive!r} is not one of {list(classes)}")
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=[list(classes).index(positive)], average=None, zero_division=0
        )
        binary = {"positive": positive, "precision": float(p[0]), "recall": float(r[0]), "f1": float(f[0])}
    return {
        "accuracy": acc,
        "error_rate": 1.0 - acc,
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "n": int(len(y_true)),
        **binary,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }


def multilabel_metrics(y_true, probs, classes: list[str], threshold: float = 0.5) -> dict[str, Any]:
    """Multi-label metrics at `threshold`: Hamming loss (the share of wrong label decisions), subset accuracy
    (images whose every label is right), micro and macro F1, and F1 per label.

    `y_true` is multi-hot (images x labels), `probs` the sigmoid outputs.
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = decide(probs, threshold).astype(int)
    per_label = f1_score(y_true, y_pred, average=None, zero_division=0)
    return {
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        # what a model that answers "no" to every label would score: the bar a real model must clear
        "hamming_loss_all_negative": float(y_true.mean()),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1_per_label": {c: float(f) for c, f in zip(classes, per_label)},
        "threshold": float(threshold),
        "n": int(len(y_true)),
        "classes": list(classes),
    }


def threshold_sweep(y_true, probs, thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Micro and macro F1, Hamming loss and subset accuracy at each threshold (default `THRESHOLDS`),
    each decided by `decide`: the one sweep behind `best_threshold` and interpret's threshold curve."""
    y_true = np.asarray(y_true).astype(int)
    probs = np.asarray(probs, dtype=float)
    rows = []
    for t in THRESHOLDS if thresholds is None else thresholds:
        predicted = decide(probs, t).astype(int)
        rows.append({
            "threshold": float(t),
            "f1_micro": float(f1_score(y_true, predicted, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(y_true, predicted, average="macro", zero_division=0)),
            "hamming_loss": float(hamming_loss(y_true, predicted)),
            "subset_accuracy": float(accuracy_score(y_true, predicted)),
        })
    return pd.DataFrame(rows)


def best_threshold(y_true, probs, thresholds: Sequence[float] | None = None) -> float:
    """The threshold of `threshold_sweep` with the best micro F1 (the lowest such, on a tie)."""
    sweep = threshold_sweep(y_true, probs, thresholds)
    return float(sweep["threshold"][sweep["f1_micro"].idxmax()])


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a `classification_metrics` result, rounded for printing."""
    return {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}


def predict_validation(learn: Learner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities, targets, per-item losses) on the validation set, without augmentation."""
    probs, targets, losses = learn.get_preds(ds_idx=1, with_loss=True)
    return probs, targets, losses


def evaluate(learn: Learner) -> dict[str, Any]:
    """`classification_metrics` of the learner's predictions on its validation set."""
    probs, targets, _ = predict_validation(learn)
    return classification_metrics(targets.numpy(), probs.argmax(dim=1).numpy(), list(learn.dls.vocab))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("vision-studies", "torch", "torchvision", "fastai", "timm"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def results_record(
    study: str,
    *,
    arch: str,
    pretrained: bool,
    epochs: int,
    image_size: int,
    fixture: bool,
    device: str,
    seconds: float,
    metrics: dict[str, Any],
    dataset: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One run's record, as DESIGN.md lays it out; `extra` holds study-specific settings (lr, batch size...).

    `dataset`, a registry name, is recorded with the title and licence the registry gives it, so the
    record says what the model learned from and on what terms, as the export's config and card do.
    """
    from .registry import DATASETS

    spec = DATASETS.get(dataset) if dataset else None
    about = {"dataset": dataset, "dataset_title": spec.title if spec else None, "licence": spec.licence if spec else None}
    return {
        "study": study,
        "arch": arch,
        "pretrained": pretrained,
        "epochs": epochs,
        "image_size": image_size,
        "fixture": fixture,
        "device": device,
        "seconds": round(seconds, 2),
        "metrics": metrics,
        **(about if dataset else {}),
        **extra,
        "versions": _versions(),
    }


def write_results(record: dict[str, Any], out_dir: Path | str = "models") -> Path:
    """Write `record` to ``<out_dir>/<study>/results.json`` (through a temporary file) and return the path."""
    path = Path(out_dir) / record["study"] / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path
