"""fastai's flattened losses, giving back a plain torch tensor.

fastai's `BaseLoss` wraps the predictions and targets in its `TensorBase` before computing the loss
(`_contiguous`), so the loss is a `TensorBase` too, and everything done with it afterwards (its clone, the
backward call, the recorder's running mean) goes through fastai's Python `__torch_function__`: timed inside
fits on this project's 2-core CPU, the loss took 0.16 ms a LeNet-5 batch instead of 0.06, and the recorder
0.21 instead of 0.14, where the whole training step takes about 2.5 ms. fastai's own
`CastToTensor` callback already hands the model plain tensors for the same reason. These classes compute the
same loss from the same tensors (their decoding and activation are fastai's), only without the wrapping.
"""

from __future__ import annotations

import torch
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat

__all__ = ["CrossEntropyLoss", "BCEWithLogitsLoss"]


class _PlainTensors:
    def _contiguous(self, x):
        """fastai's `BaseLoss._contiguous` without the `TensorBase` around the result."""
        return x.transpose(self.axis, -1).contiguous() if isinstance(x, torch.Tensor) else x


class CrossEntropyLoss(_PlainTensors, CrossEntropyLossFlat):
    """fastai's `CrossEntropyLossFlat` (single-label), giving a plain tensor."""


class BCEWithLogitsLoss(_PlainTensors, BCEWithLogitsLossFlat):
    """fastai's `BCEWithLogitsLossFlat` (multi-label: one sigmoid per label), giving a plain tensor."""
