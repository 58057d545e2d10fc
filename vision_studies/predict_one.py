"""One new image, predicted as a user of the model would: the picture titled with the answer, and the table.

A notebook ends with what the model is for: a photo it never saw, its answer and how sure it is. The
learner predicts through fastai's own `Learner.predict` (the validation transforms, the learner's
activation); an export predicts through its `Predictor` (what the demo and the Hub card use). A multi-label
model's answer is the labels `metrics.decide` keeps at the threshold, as in every report of this package.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from fastai.learner import Learner
from matplotlib.axes import Axes
from PIL import Image

from .metrics import decide
from .predict import ImageInput, ImageNotFound, Predictor, _open

__all__ = ["show_prediction", "predict_image", "unseen_image", "evaluated_items"]


def _learner_probs(learn: Learner, image: ImageInput) -> np.ndarray:
    """fastai's `learn.predict` on a file: the probabilities after the loss's activation."""
    if isinstance(image, Image.Image):  # the DataBlock opens files (EXIF-upright, the set's mode): give it one
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "image.png"
            image.save(path)
            return _learner_probs(learn, path)
    if not Path(image).is_file():
        raise ImageNotFound(f"{image}: no such image file; check the path")
    with learn.no_bar():
        _, _, probs = learn.predict(Path(image))
    return probs.float().numpy()


def predict_image(model: Learner | Predictor, image: ImageInput, threshold: float | None = None
                  ) -> tuple[np.ndarray, list[str], float | None]:
    """(probabilities, classes, threshold) for one image; the threshold is None for a single-label model.

    `model` is a fastai Learner, or an export's Predictor (`export.load_exported`). A multi-label
    learner decides at `threshold`, by default its loss's own (fastai's ``BCEWithLogitsLossFlat.thresh``);
    a Predictor at its export's threshold unless `threshold` is given.
    """
    if isinstance(model, Predictor):
        probs = model.predict(image).probs[0]
        classes = list(model.config.classes)
        multi_label = model.config.multi_label
        default = model.config.threshold
    elif isinstance(model, Learner):
        probs = _learner_probs(model, image)
        classes = [str(c) for c in model.dls.vocab]
        default = getattr(model.loss_func, "thresh", None)  # only the multi-label loss has one
        multi_label = default is not None
    else:
        raise TypeError(f"show_prediction needs a fastai Learner or an export's Predictor, not {type(model).__name__}")
    return probs, classes, ((threshold if threshold is not None else default) if multi_label else None)


def show_prediction(model: Learner | Predictor, image: ImageInput, k: int = 3, *, threshold: float | None = None,
                    ax: Axes | None = None) -> pd.DataFrame:
    """Predict one image, show it titled with the answer, and return the table of the `k` likeliest labels.

    The table's rows, likeliest first: ``label``, ``probability`` and ``predicted`` (the model's answer: the
    top label, or for a multi-label model every label above the threshold, listed even beyond `k`).
    `ax`: where to draw (a new figure otherwise).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    probs, classes, threshold = predict_image(model, image, threshold)
    order = np.argsort(-probs, kind="stable")
    chosen = decide(probs, threshold) if threshold is not None else np.arange(len(probs)) == order[0]
    rows = [i for i in order if i in order[:k] or chosen[i]]
    table = pd.DataFrame({
        "label": [classes[i] for i in rows],
        "probability": [round(float(probs[i]), 4) for i in rows],
        "predicted": [bool(chosen[i]) for i in rows],
    })
    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 3.8))
    ax.imshow(np.asarray(_open(image).convert("RGB")))
    ax.axis("off")
    ax.set_title(_title(table, threshold), fontsize=9)
    return table


def _title(table: pd.DataFrame, threshold: float | None) -> str:
    """The answer first, then the runners-up: what a person reads off the picture."""
    answer = table[table.predicted]
    others = table[~table.predicted]
    if threshold is None:
        lines = [f"{answer.label.iloc[0]} ({answer.probability.iloc[0]:.2f})"]
    elif len(answer):
        lines = [", ".join(f"{r.label} ({r.probability:.2f})" for r in answer.itertuples())]
    else:
        lines = [f"no label above {threshold:.2f}"]
    if len(others):
        lines.append("then " + ", ".join(f"{r.label} {r.probability:.2f}" for r in others.itertuples()))
    return "\n".join(lines)


def evaluated_items(data: Any) -> pd.DataFrame:
    """The images `pipeline.evaluate` scores, in its order: the held-out test images if the study has them
    (TEST_PCT), else the validation set. `data`: `pipeline.StudyData`."""
    return data.test if getattr(data, "test", None) is not None else data.dls.valid_ds.items


def unseen_image(data: Any) -> tuple[Path, Any]:
    """An image the model never trained on, and its true label: the first of `evaluated_items`."""
    table = evaluated_items(data)
    if not len(table):
        raise ValueError("the study holds out no images: every one was trained on")
    row = table.iloc[0]
    return Path(row["path"]), row["label"]
