"""Prediction from an export: images prepared as fastai prepares a validation image, then the network's scores.

`Predictor` holds what every runtime shares (preprocessing, probabilities, the decision rule); a subclass
runs the network: `TorchPredictor` with PyTorch, `onnx_export.OnnxPredictor` with onnxruntime.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from scipy.special import expit
from torch import nn

from .errors import VisionStudiesError
from .images import load_image
from .metrics import decide

if TYPE_CHECKING:  # annotations only: export.py builds predictors, so importing it here would be a cycle
    from fastai.learner import Learner

    from .export import ExportConfig

__all__ = ["ImageInput", "ImageNotFound", "Predictions", "Predictor", "TorchPredictor", "preprocess"]

ImageInput = str | Path | Image.Image


class Predictions(NamedTuple):
    """`probs`: one row per image, one column per class. `labels`: the top class of each image, or for
    a multi-label model the list of classes `metrics.decide` keeps at the threshold."""

    probs: np.ndarray
    labels: list


class ImageNotFound(VisionStudiesError, FileNotFoundError):
    """An image to predict that is not there: the message names the path."""


def _open(image: ImageInput, mode: str = "RGB", draft: tuple[int, int] | None = None) -> Image.Image:
    """A picture as the training loader opens it (EXIF-upright), or a clear error naming the file.
    `draft`: decode a large JPEG at reduced scale, keeping both sides at least that size (`images.load_image`)."""
    if isinstance(image, Image.Image):
        return image
    if not Path(image).is_file():
        raise ImageNotFound(f"{image}: no such image file; check the path")
    return load_image(image, mode, draft=draft)


def preprocess(images: ImageInput | Sequence[ImageInput], config: ExportConfig) -> np.ndarray:
    """A float32 batch (N, C, H, W), prepared exactly as fastai prepares a validation image.

    PIL converts to the dataset's mode and squishes to `image_size` with bilinear resampling (fastai's
    ``Resize(size, method='squish')``), the pixels scale to [0, 1], and the pretrained model's
    normalisation applies when the learner had one.
    """
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    size = config.image_size

    def pixels_of(image: ImageInput) -> np.ndarray:
        # opened in the model's mode, a JPEG at least four times the input on each side decoded at reduced scale
        # (both sides still at least twice the input): as the training loader's presized copies were made
        # (presize.py), so a prediction sees the pixels validation saw
        im = _open(image, config.image_mode, draft=(2 * size, 2 * size))
        if im.mode != config.image_mode:  # a PIL image given as it is
            im = im.convert(config.image_mode)
        return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR)).reshape(size, size, config.n_in)

    if len(images) == 1:
        arrays = [pixels_of(images[0])]
    else:  # Pillow decodes and resizes without the GIL: several images at once, one thread a core. A pool of
        # this call's own, so that a process forked later (a loader's worker, a server's) inherits no threads.
        with ThreadPoolExecutor(min(len(images), os.cpu_count() or 1)) as pool:
            arrays = list(pool.map(pixels_of, images))
    # one float32 copy, in (N, C, H, W) order, then scaled and normalised in place: the same values as
    # out-of-place arithmetic, without four more arrays (a single prediction's cost beside a small network)
    pixels = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # one image: no stacked copy
    batch = pixels.transpose(0, 3, 1, 2).astype(np.float32, order="C")
    batch /= np.float32(255)
    if config.mean is not None:
        batch -= np.asarray(config.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        batch /= np.asarray(config.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return batch


class Predictor:
    """An exported model ready to predict: `config` prepares the images, `logits` runs the network."""

    def __init__(self, config: ExportConfig):
        self.config = config

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores (N, classes) for a batch from `preprocess`."""
        raise NotImplementedError

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        if self.config.multi_label:
            return expit(logits)
        # scipy's softmax, written out: scipy's goes through its array-API dispatch, 0.1 ms for one image
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def decode(self, probs: np.ndarray) -> list:
        classes = self.config.classes
        if self.config.multi_label:
            return [[classes[i] for i in np.flatnonzero(row)] for row in decide(probs, self.config.threshold)]
        return [classes[i] for i in probs.argmax(axis=1)]

    def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 64) -> Predictions:
        """Probabilities and labels for one image or many (paths or PIL images), `batch_size` at a time."""
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("predict() got no images")
        probs = np.concatenate([
            self.probabilities(self.logits(preprocess(images[i : i + batch_size], self.config)))
            for i in range(0, len(images), batch_size)
        ])
        return Predictions(probs, self.decode(probs))

    def scores(self, image: ImageInput, top_k: int = 5) -> dict[str, float]:
        """What a person wants to see for one image: the `top_k` classes with their probabilities, or for
        a multi-label model every class `metrics.decide` keeps, most likely first."""
        probs = self.predict(image).probs[0]
        order = np.argsort(-probs, kind="stable")
        if self.config.multi_label:
            kept = decide(probs, self.config.threshold)
            order = [i for i in order if kept[i]]
        else:
            order = order[:top_k]
        return {self.config.classes[i]: float(probs[i]) for i in order}


class TorchPredictor(Predictor):
    """A `Predictor` that runs the PyTorch network on the CPU."""

    def __init__(self, config: ExportConfig, model: nn.Module, learner: Learner | None = None):
        super().__init__(config)
        self.model = model.eval()
        self.learner = learner  # the fastai Learner, on the trusted pickle path only

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).float().numpy()
