"""Our losses against fastai's: the same values and gradients, decoding and activation, as plain tensors."""

from __future__ import annotations

import pickle

import torch
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.torch_core import TensorBase, TensorMultiCategory

from vision_studies.losses import BCEWithLogitsLoss, CrossEntropyLoss


def _both(ours, theirs, pred, targ):
    a, b = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    mine, fastais = ours(a, targ), theirs(b, targ)
    mine.backward(), fastais.backward()
    return mine, fastais, a.grad, b.grad


def test_cross_entropy_is_fastais_as_a_plain_tensor():
    """In a fit the loss gets plain tensors (fastai's CastToTensor); fastai's loss made a TensorBase of them."""
    g = torch.Generator().manual_seed(0)
    pred, targ = torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)
    for kwargs in ({}, {"label_smoothing": 0.1}):
        ours, theirs = CrossEntropyLoss(**kwargs), CrossEntropyLossFlat(**kwargs)
        mine, fastais, grad, fastais_grad = _both(ours, theirs, pred, targ)
        assert type(mine) is torch.Tensor and isinstance(fastais, TensorBase)  # what fastai gives, and ours
        assert torch.equal(mine, fastais.as_subclass(torch.Tensor)), kwargs
        assert torch.equal(grad, fastais_grad), kwargs
    per_item = CrossEntropyLoss(reduction="none")(pred, targ)  # what get_preds(with_loss=True) asks for
    assert per_item.shape == (16,) and torch.equal(per_item, CrossEntropyLossFlat(reduction="none")(pred, targ).as_subclass(torch.Tensor))
    assert torch.equal(ours.decodes(pred), theirs.decodes(pred)) and torch.equal(ours.activation(pred), theirs.activation(pred))
    # segmentation-style class axis 1, which _contiguous moves last
    pixels, masks = torch.randn(2, 5, 4, 4, generator=g), torch.randint(0, 5, (2, 4, 4), generator=g)
    assert torch.equal(CrossEntropyLoss(axis=1)(pixels, masks), CrossEntropyLossFlat(axis=1)(pixels, masks).as_subclass(torch.Tensor))


def test_binary_cross_entropy_is_fastais_as_a_plain_tensor_and_pickles():
    g = torch.Generator().manual_seed(1)
    pred, targ = torch.randn(8, 3, generator=g), torch.randint(0, 2, (8, 3), generator=g)
    ours, theirs = BCEWithLogitsLoss(thresh=0.3), BCEWithLogitsLossFlat(thresh=0.3)
    mine, fastais, grad, fastais_grad = _both(ours, theirs, pred, targ)
    assert type(mine) is torch.Tensor and torch.equal(mine, fastais.as_subclass(torch.Tensor))
    assert torch.equal(grad, fastais_grad)
    assert torch.equal(ours.decodes(pred), theirs.decodes(pred)) and ours.thresh == 0.3
    typed = ours(TensorBase(pred), TensorMultiCategory(targ))  # fastai's types in, as get_preds may give them
    assert torch.equal(typed.as_subclass(torch.Tensor), mine.detach())
    assert isinstance(ours, BCEWithLogitsLossFlat)  # what build_learner and predict_one ask to tell multi-label sets
    again = pickle.loads(pickle.dumps(ours))  # as learn.export pickles a learner's loss
    assert type(again) is BCEWithLogitsLoss and again.thresh == 0.3 and torch.equal(again(pred, targ), mine.detach())
