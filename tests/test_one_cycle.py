"""Our one-cycle fit (one_cycle.py) against fastai's: the same schedule values, to the bit, and the same training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastai.callback.progress import ProgressCallback  # noqa: F401  (adds Learner.no_bar)
from fastai.callback.schedule import combined_cos as fastais_combined_cos
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from torch import nn

from vision_studies.losses import CrossEntropyLoss
from vision_studies.models import AdamW
from vision_studies.one_cycle import combine_scheds, combined_cos, fit_one_cycle


@pytest.mark.parametrize("pct", [0.25, 0.99, 0.3, 0.1])
def test_the_schedule_is_fastais_at_every_step_and_at_the_edges(pct):
    lr = np.array([1e-3, 3e-4])
    for args in ((lr / 25, lr, lr / 1e5), (0.95, 0.85, 0.95)):
        ours, fastais = combined_cos(pct, *args), fastais_combined_cos(pct, *args)
        for steps in (7, 90, 4321):  # pct_train as fastai's TrainEvalCallback adds it up
            pos = 0.0
            for _ in range(steps):
                assert np.array_equal(ours(pos), fastais(pos)), (pct, steps, pos)
                pos += 1.0 / steps
        for pos in (0.0, pct, np.nextafter(pct, 0), np.nextafter(pct, 1), 0.999999999, 1.0):
            assert np.array_equal(ours(float(pos)), fastais(float(pos))), (pct, pos)
    with pytest.raises(ValueError, match="summing to 1"):
        combine_scheds([0.5, 0.6], [lambda p: p, lambda p: p])


def _learner() -> Learner:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    pairs = list(zip(x, y))
    dls = DataLoaders.from_dsets(pairs[:64], pairs[64:], bs=16, shuffle=False, device="cpu")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    return Learner(dls, model, loss_func=CrossEntropyLoss(), opt_func=AdamW,
                   splitter=lambda m: [list(m[0].parameters()), list(m[2].parameters())])


@pytest.mark.parametrize("kwargs", [dict(lr_max=3e-3), dict(lr_max=slice(1e-4, 1e-2), pct_start=0.3, div=5.0),
                                    dict(lr_max=slice(2e-3), pct_start=0.99)])
def test_a_fit_is_fastais_fit_one_cycle(kwargs):
    runs = []
    for ours in (True, False):
        learn = _learner()
        with learn.no_bar(), learn.no_logging():
            fit_one_cycle(learn, 2, **kwargs) if ours else learn.fit_one_cycle(2, **kwargs)
        runs.append((learn.recorder.hps, [p.detach().clone() for p in learn.model.parameters()]))
    (hps, weights), (fastais_hps, fastais_weights) = runs
    assert len(hps["lr"]) == 8 and set(hps) == set(fastais_hps) == {"lr", "mom"}
    assert all(np.array_equal(a, b) for key in hps for a, b in zip(hps[key], fastais_hps[key]))
    assert all(torch.equal(a, b) for a, b in zip(weights, fastais_weights))
