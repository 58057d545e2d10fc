"""fastai's events, sent only to the callbacks that handle them: the per-batch cost of a fit on a small model.

fastai's `Learner` sends each of a batch's eight events or more to every callback, in order, sorted again
for each event; a callback without a method for the event still pays the call and a lookup that goes
through its delegation to the learner: 60 to 100 us an event on this project's 2-core machine (under load), 7 to
14 us with the table below; against a LeNet-5 step on 32 digits those microseconds are most of what fastai adds.
"""

from __future__ import annotations

import contextlib

from fastai.callback.core import event
from fastai.learner import Learner

__all__ = ["EventTable", "quick_events"]


class EventTable:
    """`Learner._call_one` for the length of a fit: each event goes only to the callbacks that handle it.

    fastai sorts every callback by order and calls each on every event, including the many that define no
    method for it (a call that looks the method up through the callback's delegation to the learner and
    finds nothing). Here the sorted list of callbacks that define each
    event is kept until the learner's callbacks change, and each is called as fastai calls it (its run
    flags, its exceptions); `after_fit` still reaches every callback, since fastai resets `run` there.
    """

    def __init__(self, learn: Learner):
        self.learn, self.key, self.table = learn, None, {}

    def __call__(self, event_name: str) -> None:
        cbs = self.learn.cbs
        key = tuple(map(id, cbs))
        if key != self.key:
            self.key, self.table = key, {}
        handlers = self.table.get(event_name)
        if handlers is None:
            if not hasattr(event, event_name):
                raise Exception(f"missing {event_name}")  # what fastai raises
            ordered = cbs.sorted("order")
            handlers = self.table[event_name] = [cb for cb in ordered if event_name == "after_fit"
                                                 or event_name in vars(cb) or hasattr(type(cb), event_name)]
        for cb in handlers:
            cb(event_name)


@contextlib.contextmanager
def quick_events(learn: Learner):
    """`learn` dispatches through an `EventTable` inside the block, through fastai's own method after it."""
    learn._call_one = EventTable(learn)
    try:
        yield
    finally:
        del learn._call_one  # the learner's own method again: nothing of this is left to pickle or export
