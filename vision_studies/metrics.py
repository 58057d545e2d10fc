"""Metrics for single-label classification, and the results record every run writes."""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.learner import Learner
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

__all__ = ["classification_metrics", "headline", "predict_validation", "evaluate", "results_record", "write_results"]


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict[str, Any]:
    """Accuracy, error rate, macro precision/recall/F1 and the confusion matrix (rows: truth, columns: prediction).

    Labels are class indices into `classes`; a class absent from both truth and prediction still gets
    its row and column, so matrices from different runs line up. Macro averages count such a class as 0.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    acc = float(accuracy_score(y_true, y_pred))
    return {
        "accuracy": acc,
        "error_rate": 1.0 - acc,
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "n": int(len(y_true)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }


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
    **extra: Any,
) -> dict[str, Any]:
    """One run's record, as DESIGN.md lays it out; `extra` holds study-specific settings (lr, batch size...)."""
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
