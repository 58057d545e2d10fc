"""Checkpoints: what every epoch of a fit leaves on disk to resume from, written whole or not at all.

After each epoch `Checkpoints` copies the weights, the optimizer's state, every random generator and the
history into memory, then writes ``checkpoint.pth`` (and ``best.pth`` when the epoch is the best yet) from that
copy in a thread of its own while the next epoch trains; the run's last epoch writes only ``best.pth``, if it is
the best. Timed inside ResNet-18 fits on this project's 2-core CPU, writing the 140.7 MB checkpoint took 240 to
620 ms an epoch, most of what a fit spent outside its batches; copying it takes a tenth of that. The next
epoch's end, and the fit's, wait for the write before going on, so a write that fails (a full disk) is a
`CheckpointError` then, one epoch later than before. A kill while a write is under way leaves the previous
epoch's checkpoint, whole (each file is renamed into place when complete), and a resume from it trains that epoch
again to the same numbers (`tests/test_resume.py`). Files are read back without unpickling (``weights_only``).
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.callback.tracker import TrackerCallback
from fastai.learner import Learner
from fastai.torch_core import get_model
from fastcore.foundation import L

from .errors import VisionStudiesError

__all__ = ["CHECKPOINT", "BEST", "CheckpointError", "Checkpoints", "write", "writable", "random_state",
           "set_random_state", "load_weights", "read_checkpoint"]

CHECKPOINT, BEST = "checkpoint.pth", "best.pth"  # in learn.path / learn.model_dir


class CheckpointError(VisionStudiesError, OSError):
    """The model folder cannot hold a checkpoint (full disk, no permission), or holds one we cannot use."""


def write(obj: Any, path: Path) -> None:
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


def writable(folder: Path) -> None:
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
    """State with fastai's tensor and list types and numpy scalars made plain, so it loads without unpickling,
    and every tensor a copy in CPU memory: the checkpoint is written while the next epoch changes the originals."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, L)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().as_subclass(torch.Tensor)
        return obj.clone() if obj.device.type == "cpu" else obj.cpu()
    return obj.item() if isinstance(obj, np.generic) else obj


def random_state(learn: Learner) -> dict:
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


def set_random_state(learn: Learner, state: dict) -> None:
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


class Checkpoints(TrackerCallback):
    """After every epoch, the checkpoint to resume from; then, if the epoch is the best yet, its weights.

    fastai's SaveModelCallback, but with files written whole or not at all from a copy, beside the next epoch,
    best weights loaded back without unpickling, and the epochs a resumed fit skips ignored. The checkpoint goes
    first: should the run die between the two, a resume rewrites the best weights from it. `log` is the fit's
    epoch log (`train._EpochLog`: its rows, and where this fit's rows start).
    """

    order = TrackerCallback.order + 1

    def __init__(self, folder: Path, log, meta: dict, clock, skip: int = 0, best: float | None = None,
                 best_epoch: int | None = None, random_state: dict | None = None, last_fit: bool = False):
        super().__init__(monitor=meta["config"]["monitor"], reset_on_fit=best is None)
        self.folder, self.log, self.meta, self.clock, self.skip = folder, log, meta, clock, skip
        self.last_fit = last_fit  # the run's last fit: its last epoch leaves no checkpoint (train.fit removes it)
        self.best, self.best_epoch, self.random_state = best, best_epoch, random_state
        self._writing: threading.Thread | None = None
        self._failed: BaseException | None = None

    def before_fit(self):
        super().before_fit()
        if self.random_state is not None:  # after everything else is set up, right before the first epoch
            set_random_state(self.learn, self.random_state)

    def after_epoch(self):
        if self.epoch < self.skip:
            return
        super().after_epoch()
        if self.new_best:
            self.best_epoch = self.epoch
        # The run's very last epoch writes only its weights, and only if they are the best: its checkpoint would be
        # removed as soon as it was written (train.fit), and a kill before that resumes from the epoch before, to
        # the same numbers. A write saved each run: 44 MB for EfficientNet-Lite0, 140.7 MB for ResNet-18.
        last = self.last_fit and self.epoch == self.n_epoch - 1
        if last and not self.new_best:
            return
        state = {"model": get_model(self.learn.model).state_dict()}
        if not last:
            state |= {"opt": self.learn.opt.state_dict(), "random": random_state(self.learn), "meta": self.meta | {
                "phase_epochs_done": self.epoch + 1, "phase_start": self.log.phase_start, "history": self.log.rows,
                "best": float(self.best), "best_epoch": self.best_epoch, "seconds": self.clock(),
            }}
        state = _plain(state)
        self.wait()  # the last epoch's files first
        self._writing = threading.Thread(target=self._write, args=(state, self.new_best, not last), name="checkpoint")
        self._writing.start()

    def _write(self, state: dict, best: bool, checkpoint: bool = True) -> None:
        try:
            if checkpoint:
                write(state, self.folder / CHECKPOINT)
            if best:
                write(state["model"], self.folder / BEST)
        except BaseException as e:  # noqa: BLE001  raised in the training thread, by wait()
            self._failed = e

    def wait(self, *, raise_error: bool = True) -> None:
        """Until the files of the last epoch are written; their error, if writing them failed (unless
        `raise_error` is False: the fit is stopping for another reason, which is the one to report)."""
        if self._writing is not None:
            self._writing.join()
            self._writing = None
        failed, self._failed = self._failed, None
        if failed is not None and raise_error:
            raise failed

    def after_fit(self):
        self.wait()
        if self.best_epoch is not None:
            load_weights(self.learn, self.folder / BEST)


def load_weights(learn: Learner, path: Path) -> None:
    state = torch.load(path, map_location=learn.dls.device, weights_only=True)
    get_model(learn.model).load_state_dict(state)


def read_checkpoint(path: Path, learn: Learner, config: dict) -> dict:
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
