"""Training: the device, precision, seeding and callbacks around fastai's one-cycle fit and fine-tune.

Every epoch ends with a checkpoint (weights, optimizer state, random generators, history) in the
learner's model folder, so a run killed mid-training (a Colab session that dies, a kill -9) continues
with `fit(..., resume=True)` to the same numbers an uninterrupted run gets (on the same device). Files
are written whole or not at all, and read back without unpickling.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastai.callback.channelslast  # noqa: F401  (adds Learner.to_channelslast)
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.fp16 import AMPMode, MixedPrecision
import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.tracker import EarlyStoppingCallback, TrackerCallback
from fastai.learner import Learner, Recorder
from fastai.torch_core import get_model, set_seed
from fastcore.foundation import L

from .errors import VisionStudiesError
from .models import body_pretrained, depthwise
from .one_cycle import fit_one_cycle

__all__ = ["pick_device", "amp_mode", "AutocastPrecision", "seed_everything", "fit", "TrainingRun", "CheckpointError", "CHECKPOINT", "BEST"]

CHECKPOINT, BEST = "checkpoint.pth", "best.pth"  # in learn.path / learn.model_dir


class CheckpointError(VisionStudiesError, OSError):
    """The model folder cannot hold a checkpoint (full disk, no permission), or holds one we cannot use."""


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


def _write(obj: Any, path: Path) -> None:
    """torch.save to a temporary file renamed into place: a kill mid-write leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        # through a Python file object, so a full disk is an OSError and not torch's "unexpected pos"
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            e.errno, f"cannot save {path.name} in {path.parent} ({e.strerror}); free space there, or give the "
            "learner a folder you can write to: build_learner(..., path=...)"
        ) from e


def _writable(folder: Path) -> None:
    """Fail before the first epoch, not after it, when the checkpoint folder cannot be written."""
    probe = folder / ".write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(
            e.errno, f"cannot write checkpoints to {folder} ({e.strerror}); give the learner a folder you can "
            "write to: build_learner(..., path=...)"
        ) from e


def _plain(obj: Any) -> Any:
    """State with fastai's tensor and list types and numpy scalars made plain, so it loads without unpickling."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, L)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(torch.Tensor)
    return obj.item() if isinstance(obj, np.generic) else obj


def _random_state(learn: Learner) -> dict:
    """Every random generator training draws from, so a resumed run shuffles and drops out as the first would have."""
    # each Mersenne Twister's words as one int64 tensor: as lists, pickling their 2,500 ints one by one took a
    # third of a small model's checkpoint (LeNet-5's, profiled: 11.5 ms, 7.5 ms as tensors)
    packed = lambda s: [s[0], torch.tensor(s[1], dtype=torch.int64), s[2]]  # noqa: E731  random.Random's state
    np_state = np.random.get_state()
    return {
        "python": packed(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loaders": [packed(dl.rng.getstate()) for dl in learn.dls.loaders],
        "smooth_loss": [learn.recorder.smooth_loss.val, learn.recorder.smooth_loss.count],
    }


def _set_random_state(learn: Learner, state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for dl, dl_state in zip(learn.dls.loaders, state["loaders"]):
        dl.rng = random.Random()
        dl.rng.setstate(_tuples(dl_state))
    if state["smooth_loss"] is not None:  # the training loss is a running average over a fit: it goes on
        learn.recorder.smooth_loss.val, learn.recorder.smooth_loss.count = state["smooth_loss"]


def _tuples(obj: Any) -> Any:
    """random.setstate wants back the nested tuples that saving turned into lists (and the words into a tensor)."""
    if isinstance(obj, torch.Tensor):
        return tuple(obj.tolist())
    return tuple(_tuples(v) for v in obj) if isinstance(obj, (list, tuple)) else obj


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


class _Checkpoints(TrackerCallback):
    """After every epoch, the checkpoint to resume from; then, if the epoch is the best yet, its weights.

    fastai's SaveModelCallback, but with files written whole or not at all, best weights loaded back
    without unpickling, and the epochs a resumed fit skips ignored. The checkpoint goes first: should
    the run die between the two, a resume rewrites the best weights from it.
    """

    order = TrackerCallback.order + 1

    def __init__(self, folder: Path, log: _EpochLog, meta: dict, clock, skip: int = 0, best: float | None = None,
                 best_epoch: int | None = None, random_state: dict | None = None):
        super().__init__(monitor=meta["config"]["monitor"], reset_on_fit=best is None)
        self.folder, self.log, self.meta, self.clock, self.skip = folder, log, meta, clock, skip
        self.best, self.best_epoch, self.random_state = best, best_epoch, random_state

    def before_fit(self):
        super().before_fit()
        if self.random_state is not None:  # after everything else is set up, right before the first epoch
            _set_random_state(self.learn, self.random_state)

    def after_epoch(self):
        if self.epoch < self.skip:
            return
        super().after_epoch()
        if self.new_best:
            self.best_epoch = self.epoch
        model = get_model(self.learn.model).state_dict()
        meta = self.meta | {
            "phase_epochs_done": self.epoch + 1, "phase_start": self.log.phase_start, "history": self.log.rows,
            "best": float(self.best), "best_epoch": self.best_epoch, "seconds": self.clock(),
        }
        state = {"model": model, "opt": self.learn.opt.state_dict(), "random": _random_state(self.learn), "meta": meta}
        _write(_plain(state), self.folder / CHECKPOINT)
        if self.new_best:
            _write(model, self.folder / BEST)

    def after_fit(self):
        if self.best_epoch is not None:
            _load_weights(self.learn, self.folder / BEST)


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


def _load_weights(learn: Learner, path: Path) -> None:
    state = torch.load(path, map_location=learn.dls.device, weights_only=True)
    get_model(learn.model).load_state_dict(state)


def _read_checkpoint(path: Path, learn: Learner, config: dict) -> dict:
    try:
        state = torch.load(path, map_location=learn.dls.device, weights_only=True)
        meta = state["meta"]
    except Exception as e:  # noqa: BLE001  whatever is wrong with the file, the remedy is the same
        raise CheckpointError(
            f"cannot read the checkpoint {path} ({e.__class__.__name__}: {e}); delete it to start over"
        ) from e
    if meta["config"] != config:
        raise CheckpointError(
            f"the checkpoint {path} is from fit({meta['config']}), not fit({config}); call fit with the same "
            "arguments to resume, or delete the checkpoint to start over"
        )
    try:
        get_model(learn.model).load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint {path} is of another model ({e}); delete it to start over") from e
    return state


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
    _writable(folder)
    fine_tune = body_pretrained(learn)
    config = dict(epochs=epochs, lr=lr, fine_tune=fine_tune, freeze_epochs=freeze_epochs, patience=patience,
                  monitor=monitor)
    checkpoint = folder / CHECKPOINT
    meta: dict = {"config": config, "phase": 0, "phase_epochs_done": 0, "history": [], "best": None,
                  "best_epoch": None, "seconds": 0.0}
    opt_state = random_state = None
    if resume and checkpoint.exists():
        state = _read_checkpoint(checkpoint, learn, config)
        meta, opt_state, random_state = state["meta"], state["opt"], state["random"]
        if meta["best_epoch"] == meta["phase_epochs_done"] - 1:  # the run may have died before writing best.pth
            _write(state["model"], folder / BEST)
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
                _load_weights(learn, folder / BEST)
            if random_state is not None:  # the next fit draws on from here, with a running loss of its own
                random_state = random_state | {"smooth_loss": None}
            continue
        if resuming:
            if learn.opt is None:
                learn.create_opt()
            learn.opt.load_state_dict(opt_state | {"hypers": L(opt_state["hypers"])})
        log.skip = skip
        cbs = [log, _Checkpoints(folder, log, meta | {"phase": phase}, clock, skip, best, best_epoch, random_state)]
        random_state = None  # restored once, at the start of the first fit run after the resume
        if patience is not None:
            cbs.append(_EarlyStopping(monitor, patience, skip, best, wait))
        fit_one_cycle(learn, n, cbs=cbs, start_epoch=skip, **kwargs)
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
