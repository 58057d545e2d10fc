"""The planned callback dispatch (dispatch.py) against fastai's own: the same callbacks, called with the same
events in the same order, over a whole fit with fastai's own callbacks and ours; and the batches handed on
where fastai would have moved them."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback, CancelBatchException
from fastai.callback.progress import ProgressCallback  # noqa: F401  (a learner's default callbacks, and no_bar)
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (its ParamScheduler)
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from torch import nn

from vision_studies import dispatch


@pytest.fixture
def fastais_dispatch():
    """Runs its test with fastai's own `Learner.__call__`, `_call_one` and `_set_device`, then puts ours back."""
    Learner.__call__, Learner._call_one = dispatch.FASTAI_CALL, dispatch.FASTAI_CALL_ONE
    Learner._set_device = dispatch.FASTAI_SET_DEVICE
    yield
    dispatch.install()


class Tracer(Callback):
    """Records every event it has a method for, with its own name, into one list shared by its kind."""

    def __init__(self, calls: list, name: str, order: int, events: str, **flags):
        self.calls, self.label, self.order = calls, name, order
        for event_name in events.split():
            setattr(self, event_name, lambda e=event_name: self.calls.append((self.label, e, self.training)))
        for flag, value in flags.items():
            setattr(self, flag, value)


class SwitchesItselfOff(Callback):
    """Asks not to be run after the first batch; `after_fit` must still reach it to switch it back on."""
    order = 5

    def __init__(self, calls: list):
        self.calls = calls

    def after_batch(self):
        self.calls.append(("off", "after_batch", self.training))
        self.run = False


class SkipsEveryThirdBatch(Callback):
    order = -5

    def before_batch(self):
        if self.iter % 3 == 2:
            raise CancelBatchException()


def _learner(calls: list) -> Learner:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    pairs = list(zip(x, y))
    dls = DataLoaders.from_dsets(pairs[:64], pairs[64:], bs=16, shuffle=False, device="cpu")
    cbs = [Tracer(calls, "early", -20, "before_fit before_batch after_loss after_batch after_fit"),
           Tracer(calls, "late", 60, "before_epoch after_pred before_step after_cancel_batch after_validate"),
           Tracer(calls, "train-only", 10, "before_batch after_batch", run_valid=False),
           SwitchesItselfOff(calls), SkipsEveryThirdBatch()]
    torch.manual_seed(0)
    return Learner(dls, nn.Linear(8, 3), loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=cbs)


def _fit_twice(calls: list) -> tuple[list, dict]:
    learn = _learner(calls)
    with learn.no_bar():
        learn.fit(2, 1e-2)
        extra = Tracer(calls, "added", 0, "before_batch after_fit")
        learn.fit_one_cycle(1, 1e-2, cbs=[extra])  # added for one fit, then removed again
        learn.fit(1, 1e-2)
    return calls, {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def test_calls_are_fastais_in_number_and_order(fastais_dispatch):
    theirs, their_weights = _fit_twice([])
    dispatch.install()
    ours, our_weights = _fit_twice([])
    assert ours == theirs
    assert all(torch.equal(our_weights[k], their_weights[k]) for k in their_weights)
    labels = {label for label, _, _ in ours}
    assert labels == {"early", "late", "train-only", "off", "added"}
    # the flags hold: no validation batch reached the train-only callback, the one that switched itself off
    # ran again in every fit (after_fit reset it), and the callback added for one fit ran in that fit alone
    assert not [c for c in ours if c[0] == "train-only" and not c[2]]
    assert sum(1 for c in ours if c[0] == "off") == 3
    assert sum(1 for c in ours if c == ("added", "after_fit", False)) == 1


def test_a_plan_follows_the_learners_callbacks(fastais_dispatch):
    dispatch.install()
    calls: list = []
    learn = _learner(calls)
    with learn.no_bar():
        learn.fit(1, 1e-2)
        learn.remove_cb(learn.cbs.filter(lambda cb: getattr(cb, "label", "") == "late")[0])
        calls.clear()
        learn.fit(1, 1e-2)
    assert calls and not [c for c in calls if c[0] == "late"]


def test_an_unknown_event_is_refused_as_fastai_refuses_it():
    learn = _learner([])
    with pytest.raises(Exception, match="missing before_lunch"):
        learn("before_lunch")


def test_a_batch_already_on_the_models_device_is_handed_on_and_any_other_is_moved():
    learn = _learner([])
    learn.dl = learn.dls.train
    batch = learn.dl.one_batch()
    assert learn._set_device(batch) is batch  # the loader put it on the CPU, where the model is
    model, learn.model = learn.model, nn.Linear(8, 3, device="meta")  # a device the loader is not on
    moved = learn._set_device(batch)  # fastai's to_device moves the batch there
    assert [t.device.type for t in moved] == ["meta", "meta"]
    learn.model = model
    learn.dl = DataLoaders.from_dsets(list(zip(torch.randn(4, 8), torch.zeros(4, dtype=torch.long))), bs=2,
                                      device=None).train  # a loader that does not say where its batches are
    batch = (torch.randn(2, 8), torch.zeros(2, dtype=torch.long))
    assert learn._set_device(batch) is not batch


def test_a_loader_on_cuda_is_on_the_model_s_gpu_when_that_is_the_current_one(monkeypatch):
    # torch compares "cuda" and "cuda:0" as different devices, though `Module.to("cuda")` puts parameters on
    # "cuda:0" when GPU 0 is the current one: our loaders say "cuda" (data.dataloaders' default)
    assert torch.device("cuda") != torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # no GPU here: the current one is said, not found
    assert dispatch.same_device("cuda", torch.device("cuda", 1))
    assert not dispatch.same_device("cuda", torch.device("cuda", 0))
    assert not dispatch.same_device("cuda:0", torch.device("cuda", 1))
    assert not dispatch.same_device("cuda", torch.device("cpu"))
    assert dispatch.same_device(torch.device("cpu"), torch.device("cpu"))
    assert not dispatch.same_device("cpu", torch.device("meta"))
