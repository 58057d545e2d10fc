"""Models: timm backbones with a fastai head for transfer learning, and LeNet-5 for learning from scratch."""

from __future__ import annotations

from pathlib import Path

import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.vision.learner import vision_learner
from torch import nn

__all__ = ["LeNet5", "build_learner", "PretrainedWeightsUnavailable", "SCRATCH_MODELS"]


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


SCRATCH_MODELS: dict[str, type[nn.Module]] = {"lenet5": LeNet5}


def build_learner(
    dls: DataLoaders,
    arch: str,
    pretrained: bool = True,
    weights: Path | str | None = None,
    path: Path | str = ".",
) -> Learner:
    """A fastai Learner for `arch`: a name in `SCRATCH_MODELS`, or any timm model name.

    For timm models, `pretrained=True` fetches the weights timm names for `arch` from the Hugging Face
    Hub; `weights` loads them from a local file instead (the offline path, and how tests exercise
    transfer learning without a network). The classifier head is new either way: it has this dataset's
    classes.
    """
    n_in, n_out = dls.one_batch()[0].shape[1], len(dls.vocab)
    common = dict(metrics=[accuracy], loss_func=CrossEntropyLossFlat(), path=path)
    if arch in SCRATCH_MODELS:
        if pretrained or weights:
            raise ValueError(f"{arch} is trained from scratch here: pass pretrained=False and no weights")
        return Learner(dls, SCRATCH_MODELS[arch](n_in=n_in, n_out=n_out), **common)
    timm_args = {}
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"weights file {weights} does not exist (the WEIGHTS parameter)")
        timm_args = dict(pretrained_cfg_overlay=dict(file=str(weights)))
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
