"""fastai's `Recorder` and its two metrics, recording the same values with fewer operations a batch.

Timed inside LeNet-5 fits on this project's 2-core CPU (the benchmark's training section), fastai's
`Recorder.after_batch` took 195 us a batch where a training step takes about 3.5 ms: the largest share of
what fastai adds. Timed alone, a validation batch's `after_batch` took 164 us, 114 of them in `accuracy`,
whose `flatten_check` wraps both tensors in fastai's `TensorBase`, so its comparison, conversion and mean
each went through a Python `__torch_function__`; and each training batch rebuilt its list of metrics
twice (`L` objects), and worked out the smoothed loss twice. Here `accuracy` and `accuracy_multi` compute the same from
plain tensors, and `Recorder.after_batch` does fastai's work once: the same values, as the same types,
land in the same places (`tests/test_recorder.py` compares whole fits with fastai's own recorder).
"""

from __future__ import annotations

from fastai.learner import Recorder as FastaiRecorder
from fastai.torch_core import maybe_gather
from fastcore.test import test_eq

__all__ = ["Recorder", "accuracy", "accuracy_multi", "use_recorder"]


def _flatten_check(inp, targ):
    """fastai's `flatten_check` without wrapping either tensor in `TensorBase`."""
    inp, targ = inp.contiguous().view(-1), targ.contiguous().view(-1)
    test_eq(len(inp), len(targ))
    return inp, targ


def accuracy(inp, targ, axis=-1):
    """fastai's `accuracy`: the share of rows whose highest score is the target class."""
    pred, targ = _flatten_check(inp.argmax(dim=axis), targ)
    return (pred == targ).float().mean()


def accuracy_multi(inp, targ, thresh=0.5, sigmoid=True):
    """fastai's `accuracy_multi`: the share of (image, label) decisions above `thresh` that match the targets."""
    inp, targ = _flatten_check(inp, targ)
    if sigmoid:
        inp = inp.sigmoid()
    return ((inp > thresh) == targ.bool()).float().mean()


class Recorder(FastaiRecorder):
    """fastai's `Recorder`; `after_batch` does its work once per batch, with the same results."""

    def after_batch(self):
        learn = self.learn
        if len(learn.yb) == 0:
            return
        if not learn.training:
            if not getattr(self, "cancel_valid", False) and self.valid_metrics:
                self.loss.accumulate(learn)
                for met in learn.metrics:
                    met.accumulate(learn)
            return
        smooth = self.smooth_loss
        if not getattr(self, "cancel_train", False):
            # AvgSmoothLoss.accumulate, with fastai's to_detach of one tensor written out
            smooth.count += 1
            smooth.val = maybe_gather(learn.loss.mean().detach()).cpu().lerp(smooth.val, smooth.beta)
            if self.train_metrics:
                for met in learn.metrics:
                    met.accumulate(learn)
        self.lrs.append(learn.opt.hypers[-1]["lr"])
        value = smooth.value  # fastai works it out twice; it is one tensor either way
        self.losses.append(value)
        learn.smooth_loss = value


def use_recorder(learn) -> None:
    """Put our `Recorder` in the place of fastai's in `learn`, with its settings, where the callbacks list has it."""
    stock = learn.recorder
    if isinstance(stock, Recorder):
        return
    ours = Recorder(add_time=stock.add_time, train_metrics=stock.train_metrics, valid_metrics=stock.valid_metrics,
                    beta=stock.smooth_loss.beta)
    ours.learn = learn
    learn.cbs[learn.cbs.items.index(stock)] = ours  # the same place: callbacks of one order run in list order
    learn.recorder = ours
