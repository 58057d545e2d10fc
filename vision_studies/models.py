"""Models: timm backbones with a fastai head for transfer learning, and LeNet-5 for learning from scratch."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.metrics import accuracy, accuracy_multi
from fastai.vision.learner import vision_learner
from torch import nn

__all__ = ["LeNet5", "NaiveCNN", "ConvPoolCNN", "BatchNormDropoutCNN", "build_learner", "count_parameters",
           "PretrainedWeightsUnavailable", "SCRATCH_MODELS"]


class PretrainedWeightsUnavailable(RuntimeError):
    """timm could not fetch the pretrained weights (offline, or the Hub is unreachable)."""


class LeNet5(nn.Sequential):
    """LeNet-5 (LeCun et al., 1998) for 28x28 grayscale digits: 61,706 parameters.

    As LeCun built it: 5x5 convolutions C1 (6 maps) and C3 (16 maps), 2x2 average-pooling subsampling,
    tanh squashing, C5 (120 maps), F6 (84 units). The 28x28 input is padded by 2 to the paper's 32x32.
    Two modern simplifications, as in every textbook version: C3 sees all of S2's maps (the paper wired
    a hand-picked subset to break symmetry) and the output is a linear layer for cross-entropy instead of
    the paper's Euclidean RBF units.
    """

    def __init__(self, n_in: int = 1, n_out: int = 10):
        super().__init__(
            nn.Conv2d(n_in, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),  # C1, S2: 28 -> 14
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),  # C3, S4: 14 -> 10 -> 5
            nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),  # C5: 5 -> 1
            nn.Linear(120, 84), nn.Tanh(),  # F6
            nn.Linear(84, n_out),
        )


def _conv(n_in: int, n_out: int, bn: bool) -> list[nn.Module]:
    return [nn.Conv2d(n_in, n_out, 3, padding=1), *([nn.BatchNorm2d(n_out)] if bn else []), nn.ReLU()]


class NaiveCNN(nn.Sequential):
    """Step 1 of seed 002's CIFAR-10 story: one convolution, then a huge dense layer doing all the work.

    Most of its parameters sit in a layer that sees every pixel position separately, so it memorises
    where things are instead of learning what they look like: it overfits early.
    """

    def __init__(self, n_in: int = 3, n_out: int = 10):
        super().__init__(*_conv(n_in, 32, bn=False), nn.Flatten(), nn.LazyLinear(512), nn.ReLU(), nn.Linear(512, n_out))


class ConvPoolCNN(nn.Sequential):
    """Step 2: stacked 3x3 convolutions with max-pooling, so features are shared across positions."""

    def __init__(self, n_in: int = 3, n_out: int = 10, bn: bool = False, dropout: float = 0.0):
        blocks = []
        for a, b in ((n_in, 32), (32, 64), (64, 128)):
            blocks += [*_conv(a, b, bn), *_conv(b, b, bn), nn.MaxPool2d(2), nn.Dropout(dropout)]
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 256), nn.ReLU(),
                         nn.Dropout(2 * dropout), nn.Linear(256, n_out))


class BatchNormDropoutCNN(ConvPoolCNN):
    """Step 3: the same network with batch norm (steadier, faster training) and dropout (less overfitting)."""

    def __init__(self, n_in: int = 3, n_out: int = 10):
        super().__init__(n_in, n_out, bn=True, dropout=0.25)


SCRATCH_MODELS: dict[str, type[nn.Module]] = {
    "lenet5": LeNet5,
    "naive_cnn": NaiveCNN,
    "conv_pool_cnn": ConvPoolCNN,
    "bn_dropout_cnn": BatchNormDropoutCNN,
}


def build_learner(
    dls: DataLoaders,
    arch: str,
    pretrained: bool = True,
    weights: Path | str | None = None,
    path: Path | str = ".",
    model_kwargs: dict | None = None,
) -> Learner:
    """A fastai Learner for `arch`: a name in `SCRATCH_MODELS`, or any timm model name.

    For timm models, `pretrained=True` fetches the weights timm names for `arch` from the Hugging Face
    Hub; `weights` loads them from a local file instead (the offline path, and how tests exercise
    transfer learning without a network). The classifier head is new either way: it has this dataset's
    classes. `model_kwargs` go to timm (``img_size`` for a ViT at another resolution, say).
    A multi-label dataset gets binary cross-entropy per label and accuracy over labels at threshold 0.5.
    """
    xb = dls.one_batch()[0]
    n_in, n_out = xb.shape[1], len(dls.vocab)
    multi_label = isinstance(dls.loss_func, BCEWithLogitsLossFlat)
    common = dict(
        metrics=[partial(accuracy_multi, thresh=0.5)] if multi_label else [accuracy],
        loss_func=BCEWithLogitsLossFlat() if multi_label else CrossEntropyLossFlat(),
        path=path,
    )
    if arch in SCRATCH_MODELS:
        if pretrained or weights:
            raise ValueError(f"{arch} is trained from scratch here: pass pretrained=False and no weights")
        model = SCRATCH_MODELS[arch](n_in=n_in, n_out=n_out)
        with torch.no_grad():  # lazy layers learn their input size from one real batch
            model(xb[:2].cpu())
        return Learner(dls, model, **common)
    timm_args = dict(model_kwargs or {})
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"weights file {weights} does not exist (the WEIGHTS parameter)")
        timm_args["pretrained_cfg_overlay"] = dict(file=str(weights))
        pretrained = True
    try:
        return vision_learner(dls, arch, pretrained=pretrained, n_in=n_in, **timm_args, **common)
    except OSError as e:  # huggingface_hub's "not found locally and cannot reach the Hub" is an OSError
        if weights is not None or not pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f"could not fetch pretrained weights for {arch!r} ({e.__class__.__name__}). Connect to the internet, "
            f"or set PRETRAINED = False to train from scratch, or set WEIGHTS to a local weights file "
            f"(.safetensors or .pth) for {arch}."
        ) from e


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
