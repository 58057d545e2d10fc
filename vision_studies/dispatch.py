"""fastai's callback dispatch, with the same calls in the same order, planned once per set of callbacks.

A fastai `Learner` raises eight events for every training batch, and for each one `Learner.__call__` wraps
the name in an `L`, sorts the callbacks by `order` and calls every one of them, each checking whether it
has a method for the event: about 100 microseconds an event with a fit's six callbacks on a 2-core CPU,
0.8 ms a batch, where a LeNet-5 step takes 4.4 ms (the benchmark's training section). Here the sorted
callbacks that have a method for an event are listed once, and listed again only when the learner's
callbacks change (added, removed or replaced); the ones left out would only have called fastcore's `noop`.
Every callback still runs through its own `Callback.__call__` (its `run`, `run_train` and `run_valid`
flags, fastai's error messages), and `after_fit` still reaches them all, since it resets their `run` flag.

Each batch also passes through `Learner._set_device`, which fastai's `to_device` rebuilds tensor by tensor (a
Python `__torch_function__` call for each of fastai's tensor types, then `retain_type`) even when nothing moves:
60 us a LeNet-5 batch, 2% of its fit. fastai's loaders (and this package's) put every batch on their own
`device` as they yield it, so a batch from a loader on the model's device is already where fastai would move it,
and `set_device` hands it on as it is (a loader's "cuda" is the model's "cuda:0" while GPU 0 is the current one);
any other batch goes through fastai's.

`install()` puts these methods on fastai's `Learner` itself, so every learner in the process (ours, and
those `vision_learner` or `load_learner` make) dispatches this way and pickles exactly as before.
"""

from __future__ import annotations

import weakref

import torch
from fastai.callback.core import event
from fastai.learner import Learner
from fastai.torch_core import defaults

__all__ = ["FASTAI_CALL", "FASTAI_CALL_ONE", "FASTAI_SET_DEVICE", "call", "call_one", "install", "same_device", "set_device"]

FASTAI_CALL = Learner.__call__
FASTAI_CALL_ONE = Learner._call_one
FASTAI_SET_DEVICE = Learner._set_device

# per learner: the callbacks its plans were made for (held, so their ids cannot be reused), and the plans
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan(learn: Learner, event_name: str) -> list:
    cbs = learn.cbs.items  # fastai keeps them in an L
    held = _plans.get(learn)
    if held is None or len(held[0]) != len(cbs) or any(a is not b for a, b in zip(held[0], cbs)):
        held = _plans[learn] = (list(cbs), {})
    plans = held[1]
    if event_name not in plans:
        ordered = sorted(cbs, key=lambda cb: cb.order)  # stable, as fastai's L.sorted('order')
        plans[event_name] = ordered if event_name == "after_fit" else [cb for cb in ordered if hasattr(cb, event_name)]
    return plans[event_name]


def call_one(self: Learner, event_name: str) -> None:
    """`Learner._call_one`: run `event_name` on the callbacks that have it, in fastai's order."""
    if not hasattr(event, event_name):
        raise Exception(f"missing {event_name}")
    for cb in _plan(self, event_name):
        cb(event_name)


def call(self: Learner, event_name) -> None:
    """`Learner.__call__`: one event name, or several in turn."""
    if isinstance(event_name, str):
        self._call_one(event_name)
    else:
        for name in event_name:
            self._call_one(name)


def same_device(loader_device: torch.device | str, model_device: torch.device) -> bool:
    """Whether a loader's batches are on the model's device. A loader says "cuda" (this package's default, and a
    user's) where a model's parameters say "cuda:0": the same GPU when it is the current one, which is where
    `Module.to("cuda")` put them, and `torch.device` compares the two as different."""
    device = torch.device(loader_device)
    if device.type == model_device.type == "cuda" and device.index is None:
        return model_device.index == torch.cuda.current_device()
    return device == model_device


def set_device(self: Learner, b):
    """`Learner._set_device`: the batch on the model's device. One from a loader on that device is there already
    (fastai's `to_device` would give back the same tensors); fastai's own moves any other."""
    device = getattr(getattr(self, "dl", None), "device", None)
    if device is not None and defaults.use_cuda is not False and same_device(device, next(self.model.parameters()).device):
        return b
    return FASTAI_SET_DEVICE(self, b)


def install() -> None:
    """Dispatch this way in every fastai `Learner` of the process (`vision_studies.models` calls it)."""
    Learner.__call__, Learner._call_one, Learner._set_device = call, call_one, set_device
