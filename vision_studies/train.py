"""Training: the device, precision, seeding and callbacks around fastai's one-cycle fit and fine-tune.

Every epoch ends with a checkpoint (weights, optimizer state, random generators, history) in the
learner's model folder, so a run killed mid-training (a Colab session that dies, a kill -9) continues
with `fit(..., resume=True)` to the same numbers an uninterrupted run gets (on the same device): see
checkpoints.py, which writes them beside the next epoch, whole or not at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import fastai.callback.channelslast  # noqa: F401  (adds Learner.to_channelslast)
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.fp16 import AMPMode, MixedPrecision
import torch
from fastai.callback.core import Callback
from fastai.callback.tracker import EarlyStoppingCallback, TrackerCallback
from fastai.learner import Learner, Recorder
from fastai.torch_core import set_seed
from fastcore.foundation import L

from .checkpoints import BEST, CHECKPOINT, CheckpointError, Checkpoints, load_weights, read_checkpoint, write, writable
from .models import body_pretrained, depthwise
from .one_cycle import fit_one_cycle

__all__ = ["pick_device", "amp_mode", "AutocastPrecision", "seed_everything", "fit", "TrainingRun", "CheckpointError", "CHECKPOINT", "BEST"]


def pick_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_mode(capability: tuple[int, int] | None) -> str | None:
    """The mixed precision for a CUDA GPU of compute `capability` (major, minor): "bf16", "fp16", or None (no GPU).

    bf16 only from compute capability 8.0 (Ampere: A100, L4, RTX 30xx) on, where cuDNN and the tensor cores
    do bf16 convolutions. Below (Colab's free T4 is 7.5, a V100 7.0) ``torch.cuda.is_bf16_supported()``
    still says True, because bf16 tensors can be made there (its ``including_emulation=True`` check), yet
    convolutions crawl or fail; fp16 is what those tensor cores run, with a gradient scaler against underflow.
    """
    if capability is None:
        return None
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


class AutocastPrecision(MixedPrecision):
    """fastai's `MixedPrecision` on any device type autocast supports, not CUDA alone.

    The same callback, so the fp16 step with its gradient scaler and our fused AdamW runs (and is tested)
    on a CPU too: ``torch.autocast("cpu", float16)`` and ``GradScaler("cpu")``. fp16 scales the loss;
    bf16 has fp32's range and needs no scaler (the scaler is then disabled, as in fastai).
    """

    def __init__(self, amp_mode: str = "fp16", device_type: str = "cuda", **kwargs):
        super().__init__(amp_mode, **kwargs)
        self.device_type = device_type

    def before_fit(self):
        dtype = torch.float16 if self.amp_mode == AMPMode.FP16 else torch.bfloat16
        self.kwargs["enabled"] = dtype == torch.float16
        self.autocast = torch.autocast(self.device_type, dtype=dtype)
        self.learn.scaler, self.scales = torch.amp.GradScaler(self.device_type, **self.kwargs), L()


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (every device), so a rerun with the same seed draws the same numbers.

    On a CPU that makes the same model. On a GPU, cuDNN may pick convolution algorithms whose backward pass
    adds in a varying order, so reruns drift apart. `deterministic=True` holds cuDNN to deterministic
    algorithms and turns its benchmark mode (timing candidates, keeping the fastest) off: reruns repeat,
    and convolutions run slower. Both are process-wide ``torch.backends.cudnn`` switches, so they change
    only when asked for (fastai's ``set_seed(reproducible=True)`` flips them without saying so).
    """
    set_seed(seed, reproducible=False)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


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

    def __init__(self, rows: list[dict[str, float]] | None = None):
        self.rows: list[dict[str, float]] = rows or []
        self.skip = 0  # epochs of this fit done before a resume: fastai still calls after_epoch for them

    def before_fit(self):
        self.phase_start = len(self.rows) - self.skip

    def after_epoch(self):
        if self.epoch < self.skip:
            return
        names = [n for n in self.recorder.metric_names if n not in ("epoch", "time")]
        self.rows.append(dict(zip(names, map(float, self.recorder.values[-1]))))


class _EarlyStopping(EarlyStoppingCallback):
    """fastai's early stopping, counting on from where a resumed fit left off."""

    def __init__(self, monitor: str, patience: int, skip: int = 0, best: float | None = None, wait: int = 0):
        super().__init__(monitor=monitor, patience=patience, reset_on_fit=best is None)
        self.skip, self.best, self.resumed_wait = skip, best, wait

    def before_fit(self):
        super().before_fit()
        self.wait = self.resumed_wait

    def after_epoch(self):
        if self.epoch >= self.skip:
            super().after_epoch()


def _phases(epochs: int, lr: float, fine_tune: bool, freeze_epochs: int) -> list[tuple[int, dict, str | None]]:
    """(epochs, fit_one_cycle arguments, freeze or unfreeze first) for each fit of the run."""
    if not fine_tune:
        return [(epochs, dict(lr_max=lr), None)]
    # as fastai's Learner.fine_tune: the new head alone, then everything at half the rate, early layers
    # 100 times lower than the last ones
    return [
        (freeze_epochs, dict(lr_max=slice(lr), pct_start=0.99), "freeze"),
        (epochs, dict(lr_max=slice(lr / 2 / 100, lr / 2), pct_start=0.3, div=5.0), "unfreeze"),
    ]


def fit(
    learn: Learner,
    epochs: int,
    lr: float = 1e-3,
    *,
    freeze_epochs: int = 1,
    patience: int | None = None,
    monitor: str = "valid_loss",
    mixed_precision: bool = True,
    resume: bool = False,
) -> TrainingRun:
    """Train `learn` with the one-cycle policy and keep the best epoch's weights.

    A body that starts from pretrained weights (`models.body_pretrained`: pretrained=True or a weights
    file) is fine-tuned: the new head trains alone for `freeze_epochs`, then the whole network with lower
    rates for the early layers (fastai's `fine_tune`); a body that starts from random weights trains every
    layer from the start. That one rule decides it; there is no argument to get it wrong.
    On a GPU it runs in mixed precision (`amp_mode`: bf16 from compute capability 8.0, fp16 with a gradient
    scaler below, a T4) and channels-last, tensor cores' fast path; on a CPU, channels-last where `depthwise`.
    `patience` stops early after that many epochs without improvement of `monitor`.

    Each epoch saves ``checkpoint.pth`` (and ``best.pth`` when it is the best) in ``learn.path/learn.model_dir``;
    `resume` continues from the checkpoint a killed run left there, with the same arguments, and the
    returned history covers every epoch (``extra["resumed_at_epoch"]`` says where it picked up). Without a
    checkpoint, `resume` trains from the start. A finished fit removes its checkpoint. A folder that cannot
    be written (permissions, full disk) is a `CheckpointError` naming it, before the first epoch if it can be.
    """
    device = torch.device(learn.dls.device or pick_device())
    precision = None
    if mixed_precision and device.type == "cuda":
        precision = amp_mode(torch.cuda.get_device_capability(device))
        if not any(isinstance(cb, MixedPrecision) for cb in learn.cbs):  # a second fit keeps the first's
            learn.add_cbs([ChannelsLast(), AutocastPrecision(precision, "cuda")])
    elif device.type == "cpu" and depthwise(learn.model) and not any(isinstance(c, ChannelsLast) for c in learn.cbs):
        learn.add_cb(ChannelsLast())
    folder = Path(learn.path) / learn.model_dir
    writable(folder)
    fine_tune = body_pretrained(learn)
    config = dict(epochs=epochs, lr=lr, fine_tune=fine_tune, freeze_epochs=freeze_epochs, patience=patience,
                  monitor=monitor)
    checkpoint = folder / CHECKPOINT
    meta: dict = {"config": config, "phase": 0, "phase_epochs_done": 0, "history": [], "best": None,
                  "best_epoch": None, "seconds": 0.0}
    opt_state = random_state = None
    if resume and checkpoint.exists():
        state = read_checkpoint(checkpoint, learn, config)
        meta, opt_state, random_state = state["meta"], state["opt"], state["random"]
        if meta["best_epoch"] == meta["phase_epochs_done"] - 1:  # the run may have died before writing best.pth
            write(state["model"], folder / BEST)
        print(f"resuming from {checkpoint}: {len(meta['history'])} epoch(s) done")
    elif resume:
        print(f"no checkpoint at {checkpoint}: training from the start")
    elif checkpoint.exists():
        print(f"starting over; {checkpoint} from an earlier run is replaced (fit(..., resume=True) continues one)")
    resumed_at = len(meta["history"])
    log = _EpochLog(list(meta["history"]))
    start = time.perf_counter()
    clock = lambda: meta["seconds"] + time.perf_counter() - start  # noqa: E731  training time over all runs
    phases = _phases(epochs, lr, fine_tune, freeze_epochs)
    for phase in range(meta["phase"], len(phases)):
        n, kwargs, freezing = phases[phase]
        resuming = phase == meta["phase"] and meta["phase_epochs_done"] > 0
        skip, best, best_epoch = (
            (meta["phase_epochs_done"], meta["best"], meta["best_epoch"]) if resuming else (0, None, None)
        )
        wait = skip - 1 - best_epoch if resuming and best_epoch is not None else 0
        if patience is not None and wait >= patience:  # the run had stopped early when it died
            skip = n
        if freezing:
            getattr(learn, freezing)()  # clears the optimizer state, as fastai's fine_tune does
        if skip == n:  # this fit had finished when the run died: on from its best epoch
            log.phase_start = meta.get("phase_start", len(log.rows))
            if best_epoch is not None:
                load_weights(learn, folder / BEST)
            if random_state is not None:  # the next fit draws on from here, with a running loss of its own
                random_state = random_state | {"smooth_loss": None}
            continue
        if resuming:
            if learn.opt is None:
                learn.create_opt()
            learn.opt.load_state_dict(opt_state | {"hypers": L(opt_state["hypers"])})
        log.skip = skip
        checkpoints = Checkpoints(folder, log, meta | {"phase": phase}, clock, skip, best, best_epoch, random_state,
                                  last_fit=phase == len(phases) - 1)
        cbs = [log, checkpoints]
        random_state = None  # restored once, at the start of the first fit run after the resume
        if patience is not None:
            cbs.append(_EarlyStopping(monitor, patience, skip, best, wait))
        try:
            fit_one_cycle(learn, n, cbs=cbs, start_epoch=skip, **kwargs)
        except BaseException:  # stopped (Jupyter's stop button, an error): the last epoch's files are whole first
            checkpoints.wait(raise_error=False)
            raise
    seconds = clock()
    checkpoint.unlink(missing_ok=True)
    # the best epoch of the last fit (fine-tune's unfrozen phase) is the one now in the model
    values = [row[monitor] for row in log.rows[log.phase_start :]]
    better = TrackerCallback(monitor=monitor).comp  # fastai's rule: np.less when it holds 'loss' or 'error'
    best = next(i for i, v in enumerate(values) if not any(better(w, v) for w in values))  # first of equals, too
    return TrainingRun(
        history=log.rows,
        best_epoch=log.phase_start + best,
        monitor=monitor,
        seconds=seconds,
        device=str(device),
        mixed_precision=precision,
        extra={"resumed_at_epoch": resumed_at} if resume and resumed_at else {},
    )
