"""Training: the device, precision, seeding and callbacks around fastai's one-cycle fit and fine-tune."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import fastai.callback.channelslast  # noqa: F401  (adds Learner.to_channelslast)
import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle and fine_tune)
import torch
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from fastai.callback.core import Callback
from fastai.learner import Learner, Recorder
from fastai.torch_core import set_seed

__all__ = ["pick_device", "seed_everything", "fit", "TrainingRun"]


def pick_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a rerun with the same seed makes the same model on the same device."""
    set_seed(seed, reproducible=True)


@dataclass
class TrainingRun:
    """What a fit did: by-epoch history, the epoch that was kept, and how long it took."""

    history: list[dict[str, float]]
    best_epoch: int
    monitor: str
    seconds: float
    device: str
    mixed_precision: str | None = None
    extra: dict = field(default_factory=dict)


class _EpochLog(Callback):
    """Keeps every epoch's recorder row across fits: fastai's Recorder forgets the frozen phase of fine_tune."""

    order = Recorder.order + 1

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def before_fit(self):
        self.phase_start = len(self.rows)

    def after_epoch(self):
        names = [n for n in self.recorder.metric_names if n not in ("epoch", "time")]
        self.rows.append(dict(zip(names, map(float, self.recorder.values[-1]))))


def fit(
    learn: Learner,
    epochs: int,
    lr: float = 1e-3,
    *,
    fine_tune: bool = False,
    freeze_epochs: int = 1,
    patience: int | None = None,
    monitor: str = "valid_loss",
    mixed_precision: bool = True,
) -> TrainingRun:
    """Train `learn` with the one-cycle policy and keep the best epoch's weights.

    `fine_tune` trains the new head alone for `freeze_epochs` first, then the whole network with lower
    rates for the early layers (fastai's `fine_tune`); otherwise every layer trains from the start.
    On a GPU the forward and backward passes run in mixed precision (bf16 where the GPU has it, which needs
    no loss scaling) with channels-last memory layout, the fast path for convolutions on tensor cores.
    `patience` stops early after that many epochs without improvement of `monitor`.
    """
    device = torch.device(learn.dls.device or pick_device())
    precision = None
    if mixed_precision and device.type == "cuda":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        learn.to_channelslast(amp_mode=precision)
    log = _EpochLog()
    cbs = [log, SaveModelCallback(monitor=monitor, fname="best")]
    if patience is not None:
        cbs.append(EarlyStoppingCallback(monitor=monitor, patience=patience))
    start = time.perf_counter()
    if fine_tune:
        learn.fine_tune(epochs, base_lr=lr, freeze_epochs=freeze_epochs, cbs=cbs)
    else:
        learn.fit_one_cycle(epochs, lr, cbs=cbs)
    seconds = time.perf_counter() - start
    # SaveModelCallback restored the best epoch of the last fit (fine-tune's unfrozen phase).
    values = [row[monitor] for row in log.rows[log.phase_start :]]
    best = min(values) if "loss" in monitor else max(values)
    return TrainingRun(
        history=log.rows,
        best_epoch=log.phase_start + values.index(best),
        monitor=monitor,
        seconds=seconds,
        device=str(device),
        mixed_precision=precision,
    )
