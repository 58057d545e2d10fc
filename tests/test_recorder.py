"""Our Recorder and metrics (recorder.py) against fastai's own: whole fits record the same values, as the same types."""

from __future__ import annotations

import pickle
from functools import partial

import pytest
import torch
from fastai.callback.core import Callback, CancelTrainException
from fastai.callback.progress import ProgressCallback  # noqa: F401  (a learner's default callbacks, and no_bar)
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (Learner.fit_one_cycle)
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.learner import Recorder as FastaiRecorder
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.metrics import accuracy as fastai_accuracy
from fastai.metrics import accuracy_multi as fastai_accuracy_multi
from torch import nn

from vision_studies.recorder import Recorder, accuracy, accuracy_multi, use_recorder


class StopsTrainingAtBatch(Callback):
    """Cancels the training part of the first epoch at its third batch, as early stopping inside an epoch would."""

    def after_batch(self):
        if self.training and self.epoch == 0 and self.iter == 2:
            raise CancelTrainException()


def _learner(multi_label: bool, ours: bool, train_metrics: bool, cbs=()) -> Learner:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 8, generator=g)
    y = (torch.rand(100, 3, generator=g) > 0.5).float() if multi_label else torch.randint(0, 3, (100,), generator=g)
    pairs = list(zip(x, y))
    dls = DataLoaders.from_dsets(pairs[:70], pairs[70:], bs=16, shuffle=False, device="cpu")  # a short last batch
    if multi_label:
        metrics = [partial(accuracy_multi if ours else fastai_accuracy_multi, thresh=0.4)]
    else:
        metrics = [accuracy if ours else fastai_accuracy]
    torch.manual_seed(0)
    learn = Learner(dls, nn.Linear(8, 3), loss_func=BCEWithLogitsLossFlat() if multi_label else CrossEntropyLossFlat(),
                    metrics=metrics, cbs=list(cbs))
    learn.recorder.train_metrics = train_metrics
    if ours:
        use_recorder(learn)
    return learn


def _record(learn: Learner) -> list[dict]:
    """What the recorder holds after each of two fits (each fit starts its records again, as fastai's does)."""
    records = []
    for fit in (lambda: learn.fit_one_cycle(2, 1e-2), lambda: learn.fit(1, 1e-3)):
        with learn.no_bar(), learn.no_logging():
            fit()
        rec = learn.recorder
        records.append(dict(lrs=rec.lrs, losses=rec.losses, values=rec.values, iters=rec.iters,
                            names=list(rec.metric_names), smooth=learn.smooth_loss, final=list(learn.final_record)))
    return records


def _same(mine: dict, fastais: dict) -> None:
    assert mine["names"] == fastais["names"]
    assert mine["lrs"] == fastais["lrs"] and mine["iters"] == fastais["iters"]
    assert len(mine["losses"]) == len(fastais["losses"]) == mine["iters"][-1]
    for a, b in zip(mine["losses"] + [mine["smooth"]], fastais["losses"] + [fastais["smooth"]]):
        assert type(a) is type(b) and a.dtype == b.dtype and torch.equal(a, b)
    assert mine["values"] == fastais["values"] and mine["final"] == fastais["final"]
    assert all(type(v) is float for row in mine["values"] for v in row)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("train_metrics", [False, True])
def test_a_fit_records_what_fastais_recorder_and_metrics_record(multi_label, train_metrics):
    mine = _record(_learner(multi_label, True, train_metrics))
    fastais = _record(_learner(multi_label, False, train_metrics))
    assert [r["iters"] for r in mine] == [[4, 8], [4]]  # 70 training items in batches of 16, the last one dropped
    assert mine[0]["names"][-2] == ("valid_" if train_metrics else "") + ("accuracy_multi" if multi_label else "accuracy")
    for a, b in zip(mine, fastais):
        _same(a, b)


def test_a_training_part_cancelled_mid_epoch_records_as_fastais_does():
    mine = _record(_learner(False, True, True, cbs=[StopsTrainingAtBatch()]))
    fastais = _record(_learner(False, False, True, cbs=[StopsTrainingAtBatch()]))
    # each fit's first epoch stops at its third batch, before the recorder (order 50) has seen that batch
    assert [r["iters"] for r in mine] == [[2, 6], [2]]
    for a, b in zip(mine, fastais):
        _same(a, b)


def test_the_metrics_are_fastais_and_say_so_when_the_sizes_differ():
    g = torch.Generator().manual_seed(2)
    scores, targets = torch.randn(32, 5, generator=g), torch.randint(0, 5, (32,), generator=g)
    assert torch.equal(accuracy(scores, targets), fastai_accuracy(scores, targets).as_subclass(torch.Tensor))
    logits, labels = torch.randn(8, 4, generator=g), torch.randint(0, 2, (8, 4), generator=g)
    for kw in ({}, {"thresh": 0.7}, {"sigmoid": False, "thresh": 0.1}):
        assert torch.equal(accuracy_multi(logits, labels, **kw), fastai_accuracy_multi(logits, labels, **kw).as_subclass(torch.Tensor))
    assert accuracy.__name__ == "accuracy" and accuracy_multi.__name__ == "accuracy_multi"  # the recorder's names
    with pytest.raises(AssertionError) as mine:
        accuracy(scores, targets[:31])
    with pytest.raises(AssertionError) as fastais:
        fastai_accuracy(scores, targets[:31])
    assert str(mine.value) == str(fastais.value) == "==:\n32\n31"  # fastcore's test_eq names both lengths


def test_ours_takes_fastais_place_once_and_pickles():
    learn = _learner(False, True, False)
    assert isinstance(learn.recorder, Recorder) and isinstance(learn.recorder, FastaiRecorder)
    assert [type(cb).__name__ for cb in learn.cbs] == ["TrainEvalCallback", "Recorder", "CastToTensor", "ProgressCallback"]
    assert sum(isinstance(cb, FastaiRecorder) for cb in learn.cbs) == 1 and learn.recorder.learn is learn
    use_recorder(learn)  # a second call leaves it as it is
    assert sum(isinstance(cb, FastaiRecorder) for cb in learn.cbs) == 1
    again = pickle.loads(pickle.dumps(learn.recorder))
    assert type(again) is Recorder
