"""fastai's one-cycle fit, with its schedule worked out on Python numbers: the same rates and momenta, to the bit.

At every training batch fastai's `combine_scheds` finds where training is in the cycle with small torch
operations (a comparison, a nonzero, a max, a subtraction, a division, an item), once for the learning rate
and once for the momentum: 17.5 us each timed alone on this project's 2-core CPU (2.2 us here). Inside
LeNet-5 fits, whose training step takes about 2.5 ms, the scheduler's part of a batch went from 163 to 63 us
with this and `models.AdamW.set_hyper`, which no longer rebuilds every group to count them. The float32
arithmetic torch does there is done here on Python floats, rounded to float32 after each operation (exact:
float64 holds every float32 sum and quotient closely enough to round correctly), so every value is fastai's
(`tests/test_one_cycle.py` compares both at every step of fits).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from fastai.callback.schedule import ParamScheduler as FastaiParamScheduler
from fastai.callback.schedule import SchedCos
from fastai.learner import Learner
from fastcore.foundation import L

__all__ = ["combine_scheds", "combined_cos", "ParamScheduler", "fit_one_cycle"]


def _f32(x: float) -> float:
    return float(np.float32(x))


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Callable[[float], object]]) -> Callable[[float], object]:
    """fastai's `combine_scheds`: `scheds[i]` runs from 0 to 1 over the `pcts[i]` part of training."""
    if sum(pcts) != 1.0 or min(pcts) < 0:
        raise ValueError(f"pcts={list(pcts)}: the parts of training each schedule covers, none below 0, summing to 1")
    edges, total = [0.0], 0.0
    for pct in pcts:  # torch.cumsum of float32 parts: summed in double on a CPU, each sum rounded to float32
        total += _f32(pct)
        edges.append(_f32(total))
    last = len(edges) - 2

    def schedule(pos: float):
        p = _f32(pos)
        idx = min(max(i for i, edge in enumerate(edges) if p >= edge), last)
        return scheds[idx](_f32(_f32(p - edges[idx]) / _f32(edges[idx + 1] - edges[idx])))

    return schedule


def combined_cos(pct: float, start, middle, end) -> Callable[[float], object]:
    """fastai's `combined_cos`: cosine annealing from `start` to `middle` over `pct` of training, then to `end`."""
    return combine_scheds([pct, 1 - pct], [SchedCos(start, middle), SchedCos(middle, end)])


class ParamScheduler(FastaiParamScheduler):
    """fastai's `ParamScheduler`, reading the learner's position and optimizer directly (not through the
    callback's attribute lookup) and the optimizer's hyper-parameters once a batch to record them, not once per
    scheduled name: the same values set and recorded."""

    def before_batch(self):
        learn = self.learn
        pct, opt = learn.pct_train, learn.opt
        for name, schedule in self.scheds.items():
            opt.set_hyper(name, schedule(pct))

    def after_batch(self):
        last = self.learn.opt.hypers[-1]
        for name, values in self.hps.items():
            values.append(last[name])


def fit_one_cycle(learn: Learner, n_epoch: int, lr_max=None, div: float = 25.0, div_final: float = 1e5,
                  pct_start: float = 0.25, wd: float | None = None, moms: tuple | None = None, cbs=None,
                  reset_opt: bool = False, start_epoch: int = 0) -> None:
    """fastai's `Learner.fit_one_cycle`, line for line, with the schedule above."""
    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", learn.lr if lr_max is None else lr_max)
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    scheds = {"lr": combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final),
              "mom": combined_cos(pct_start, *(learn.moms if moms is None else moms))}
    learn.fit(n_epoch, cbs=ParamScheduler(scheds) + L(cbs), reset_opt=reset_opt, wd=wd, start_epoch=start_epoch)
