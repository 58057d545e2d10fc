"""Our metrics against scikit-learn and against a case worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

import torch
from fastai.metrics import accuracy_multi

from vision_studies.export import ExportConfig
from vision_studies.interpret import multilabel_report
from vision_studies.metrics import (
    THRESHOLDS, best_threshold, classification_metrics, decide, headline, multilabel_metrics, results_record,
    threshold_sweep, write_results,
)
from vision_studies.predict import Predictor
from vision_studies.registry import get_spec


def test_hand_worked_example():
    # truth:      a a b b c ; prediction: a b b b a
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["error_rate"] == pytest.approx(2 / 5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # precision: a 1/2, b 2/3, c 0 (never predicted); recall: a 1/2, b 1, c 0
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 + 0) / 3)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scikit_learn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    n_classes = 7
    y_true = rng.integers(0, n_classes - 1, 200)  # the last class never occurs in the truth
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, n_classes, 200))
    m = classification_metrics(y_true, y_pred, [str(i) for i in range(n_classes)])
    labels = list(range(n_classes))
    kw = dict(labels=labels, average="macro", zero_division=0)
    assert m["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert m["precision_macro"] == pytest.approx(precision_score(y_true, y_pred, **kw))
    assert m["recall_macro"] == pytest.approx(recall_score(y_true, y_pred, **kw))
    assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, **kw))
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (n_classes, n_classes) and cm.sum() == 200
    assert np.trace(cm) == (y_true == y_pred).sum()


def test_results_record_round_trip(tmp_path):
    metrics = classification_metrics([0, 1], [0, 1], ["x", "y"])
    record = results_record("05_mnist", arch="lenet5", pretrained=False, epochs=2, image_size=28, fixture=True,
                            device="cpu", seconds=1.234, metrics=metrics, lr=0.01)
    path = write_results(record, tmp_path)
    assert path == tmp_path / "05_mnist" / "results.json"
    loaded = json.loads(path.read_text())
    assert loaded["metrics"]["accuracy"] == 1.0 and loaded["lr"] == 0.01 and loaded["fixture"] is True
    assert loaded["versions"]["torch"] and loaded["versions"]["fastai"]
    assert headline(metrics) == {"accuracy": 1.0, "error_rate": 0.0, "precision_macro": 1.0, "recall_macro": 1.0, "f1_macro": 1.0}


def test_one_multi_label_decision_everywhere_and_it_is_fastais():
    """A probability exactly at the threshold is a "no" for the metrics, the report, the exported model and
    fastai's own accuracy_multi alike (the ">=" of one and ">" of another once made them disagree)."""
    classes, threshold = ["a", "b", "c"], 0.5
    probs = np.array([[0.5, 0.7, 0.2], [0.3, 0.5, 0.9]], dtype=np.float32)
    y = np.array([[1, 1, 0], [0, 1, 1]])
    expected = np.array([[False, True, False], [False, False, True]])
    assert (decide(probs, threshold) == expected).all()
    theirs = accuracy_multi(torch.tensor(probs), torch.tensor(y), thresh=threshold, sigmoid=False)
    assert float(theirs) == pytest.approx((expected == y).mean())
    m = multilabel_metrics(y, probs, classes, threshold)
    assert m["hamming_loss"] == pytest.approx((expected != y).mean()) and m["subset_accuracy"] == 0.0
    assert multilabel_report(y, probs, classes, threshold).attrs["hamming_loss"] == pytest.approx(m["hamming_loss"])
    config = ExportConfig(arch="resnet10t", classes=tuple(classes), image_size=8, image_mode="RGB", multi_label=True,
                          threshold=threshold)
    assert Predictor(config).decode(probs) == [["b"], ["c"]]


def test_best_threshold_is_the_sweeps_best():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 4)) < 0.3).astype(int)
    probs = np.clip(0.5 * y + rng.normal(0.25, 0.2, y.shape), 0, 1)
    sweep = threshold_sweep(y, probs)
    assert tuple(sweep["threshold"]) == THRESHOLDS
    best = best_threshold(y, probs)
    assert sweep.set_index("threshold")["f1_micro"][best] == sweep["f1_micro"].max()
    assert best == min(t for t, f in zip(sweep["threshold"], sweep["f1_micro"]) if f == sweep["f1_micro"].max())
    assert best_threshold(y, probs, [0.9]) == 0.9


def test_results_record_names_the_dataset_and_its_licence():
    record = results_record("04_multilabel", arch="resnet10t", pretrained=True, epochs=1, image_size=32, fixture=True,
                            device="cpu", seconds=1.0, metrics={}, dataset="pascal_2007")
    spec = get_spec("pascal_2007")
    assert (record["dataset"], record["licence"]) == ("pascal_2007", spec.licence)
    assert "PASCAL VOC 2007" in record["dataset_title"]
