"""Our metrics against scikit-learn and against a case worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from vision_studies.metrics import classification_metrics, headline, results_record, write_results


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
