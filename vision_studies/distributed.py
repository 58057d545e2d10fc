"""Data-parallel training over several processes (GPUs, nodes, or CPU processes) with accelerate under fastai.

A launcher (`accelerate launch`, `torchrun`, SLURM's `srun` through either) starts one process per GPU, or
per CPU share, and tells each its rank in environment variables. accelerate's `PartialState` reads them and
joins the processes (NCCL between GPUs, gloo between CPU processes); fastai's `DistributedTrainer` wraps
the model in `DistributedDataParallel` and gives each process its share of every epoch's batches. A plain
`python` run is one process, and everything here then does what a single-process run does.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.learner import Learner
from fastai.torch_core import find_bs

from .train import BEST, CHECKPOINT

__all__ = ["process_state", "process_device", "in_turn", "per_process_batch_size", "data_parallel",
           "ItemCounter", "items_per_process", "close"]

T = TypeVar("T")


def process_state() -> PartialState:
    """This process's place among those a launcher started: rank, count, device; one process without a launcher.

    On a machine without a GPU, accelerate joins several processes only when told they are CPU
    processes; they then talk through gloo.
    """
    return PartialState(cpu=not torch.cuda.is_available())


def process_device(state: PartialState) -> torch.device:
    """The device this process trains on: its own GPU, or the CPU.

    accelerate names a CPU process's device ``cpu:0``, which torch.load cannot map checkpoints to: plain ``cpu``.
    """
    return torch.device("cpu") if state.device.type == "cpu" else state.device


def in_turn(work: Callable[[], T], state: PartialState, *, everyone: bool = True) -> T | None:
    """`work()` in process 0 first, then in the first process of each other node, then in all the rest.

    For work that downloads or writes a shared folder (datasets, fixtures, pretrained weights): process 0
    does it alone, and the others find it done. On nodes that do not share the folder, each node's first
    process does it once for its node before that node's other processes look. `everyone=False` leaves
    those others out (they get None), for work whose result is only the files it leaves.
    """
    result = None
    if state.is_main_process:
        result = work()
    state.wait_for_everyone()
    if state.is_local_main_process and not state.is_main_process:
        result = work()
    state.wait_for_everyone()
    if everyone and not state.is_local_main_process:
        result = work()
    return result


def per_process_batch_size(batch_size: int, processes: int) -> int:
    """Each process's share of a batch: BATCH_SIZE stays the batch one optimizer step sees, however many
    processes share it, so a run on N processes takes the same steps with the same learning rate."""
    if batch_size % processes:
        raise ValueError(
            f"BATCH_SIZE {batch_size} does not split evenly across {processes} processes; pass a multiple of "
            f"{processes}, e.g. --batch-size {max(processes, batch_size // processes * processes)}"
        )
    return batch_size // processes


class _DistributedDL(DistributedDL):
    """fastai's sharding DataLoader, whose rank-0 shuffle is shared with every process.

    fastai moves that index list to CUDA before broadcasting it, as NCCL requires; gloo, the backend
    between CPU processes, broadcasts it from the CPU, so it goes from the process's own device. And the
    wrapped loader's random generator is reachable as `rng`, as on any fastai DataLoader.
    """

    def _broadcast(self, t, rank):
        t = torch.tensor(t, dtype=torch.long, device=process_device(PartialState()))
        torch.distributed.broadcast(t, rank)
        return t.cpu().tolist()

    # The shuffle is drawn from the wrapped loader's generator; `train.fit` saves and restores it by this name.
    @property
    def rng(self):
        return self.dl.rng

    @rng.setter
    def rng(self, value):
        self.dl.rng = value


class _DataParallel(DistributedTrainer):
    """fastai's `DistributedTrainer` (the model in DistributedDataParallel), sharding with `_DistributedDL`."""

    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else _DistributedDL(dl, device=self.learn.model.device)


class ItemCounter(Callback):
    """Counts the images this process trained on in its last training epoch and predicted in its last
    validation pass: the evidence that each process had its own share, and that the shares add up."""

    order = 12  # after DistributedTrainer has handed this process its shard

    def before_train(self):
        self.train_items = 0

    def before_validate(self):
        self.valid_items = 0

    def after_batch(self):
        n = find_bs(self.learn.yb)
        if self.training:
            self.train_items += n
        else:
            self.valid_items += n


@contextmanager
def _checkpoints_of_own(learn: Learner, state: PartialState, resume: bool) -> Iterator[None]:
    """Processes other than 0 keep their per-epoch checkpoints in a folder of their own, deleted after.

    `train.fit` checkpoints from every process; in one shared folder their temporary files would collide.
    The weights are the same in every process (DistributedDataParallel keeps them so), so process 0's
    checkpoints are the run's, and a resumed run starts every process from a copy of them.
    """
    if state.is_main_process:
        yield
        return
    shared, model_dir = Path(learn.path) / learn.model_dir, learn.model_dir
    with tempfile.TemporaryDirectory(prefix=f"checkpoints-process{state.process_index}-") as folder:
        if resume:  # copied before fit starts: process 0 cannot overwrite them before every process has begun
            for name in (CHECKPOINT, BEST):
                if (shared / name).is_file():
                    shutil.copy2(shared / name, folder)
        learn.model_dir = Path(folder)
        try:
            yield
        finally:
            learn.model_dir = model_dir


@contextmanager
def data_parallel(learn: Learner, state: PartialState, resume: bool = False) -> Iterator[Learner]:
    """Within it, `learn` trains data-parallel across the launched processes, and `learn.get_preds`
    predicts each process's share of the images and returns all of them to every process, in one piece.
    `resume` when `train.fit` will resume: every process then starts from process 0's checkpoint.

    fastai's `Learner.distrib_ctx`, with the two changes gloo needs (see `_DistributedDL`, and no
    `SyncBatchNorm`, which runs on GPUs only). With one process it changes nothing.
    """
    if state.num_processes == 1:
        yield learn
        return
    trainer = _DataParallel(sync_bn=state.device.type == "cuda", cpu=state.device.type == "cpu")
    progress = [cb for cb in learn.cbs if isinstance(cb, ProgressCallback)]
    learn.add_cb(trainer)
    if not state.is_main_process:  # one progress bar for the run, not one per process
        learn.remove_cbs(progress)
    try:
        with _checkpoints_of_own(learn, state, resume):
            yield learn
    finally:
        learn.remove_cb(trainer)
        if not state.is_main_process:
            learn.add_cbs(progress)


def items_per_process(counter: ItemCounter, state: PartialState) -> dict[str, list[int]]:
    """Every process's counts from `counter`, in process order (the same answer in every process)."""
    counts = [(counter.train_items, counter.valid_items)]
    if state.num_processes > 1:
        counts = gather_object(counts)
    return {"train": [c[0] for c in counts], "valid": [c[1] for c in counts]}


def close() -> None:
    """Leave the process group, if this process joined one, so that the launcher sees it end cleanly."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
