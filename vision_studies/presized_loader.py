"""Batches read straight from the presized copies, past fastai's per-item pipeline.

fastai's per-item path reads an image's row of the items table through pandas, makes it a PIL image, sends
it through each item transform by type dispatch and collates tuples of tensor subclasses: on this project's
2-core machine that bookkeeping cost about 1.5 ms a 224 px image, twice what the work itself does (reading
the copy, 0.15 ms; the training image's warp and lighting, 0.3 ms). Here a batch is its rows' copies read as
raw pixels (a Netpbm header, then the bytes presize.py wrote), each training image changed by the per-item
path's own `item_augment.ItemAugment`, stacked into one uint8 tensor. The pixels and labels are the per-item
path's (the same draws in the same order from torch's generator), the batch transforms after are the
loader's own, and the fastai `Datasets` behind it is unchanged, so `show_batch`, `test_dl`, `get_preds` and
the interpretation plots work as before. An image with no usable copy (too small to presize, a damaged copy)
is read by the per-item path, which also names a file that does not decode. One difference: fastai's loader
opens and changes the images of a last, short batch that `drop_last` then throws away; this one does not, so
a training run draws fewer random numbers from the second epoch on (the same seed, another stream).
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from fastai.data.core import DataLoaders, TfmdDL
from fastai.data.transforms import ToTensor
from fastai.torch_core import TensorCategory, TensorImage, TensorImageBW, to_device

from .augment import SquishResize
from .item_augment import ItemAugment
from .memory_data import class_indices, single_label
from .presize import OpenPresized

__all__ = ["PresizedDL", "BatchReader", "presized_dataloaders", "read_copy"]

_PER_ITEM = (SquishResize, ItemAugment, ToTensor)  # the item transforms this path does itself


def read_copy(path: str, size: int) -> np.ndarray | None:
    """A presized copy's pixels (size, size, channels) uint8, read without PIL; None when the file is not a
    whole copy of that size as presize.py writes them (PIL's Netpbm header ``P6`` or ``P5``, then the bytes)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    for magic, channels in ((b"P6", 3), (b"P5", 1)):
        header = b"%s\n%d %d\n255\n" % (magic, size, size)  # PIL's PpmImagePlugin writes exactly this
        if data.startswith(header) and len(data) == len(header) + size * size * channels:
            return np.frombuffer(data, np.uint8, offset=len(header)).reshape(size, size, channels)
    return None


class PresizedDL(TfmdDL):
    """A fastai `TfmdDL` whose batches are read from `copies` (one path, or None, per item of `dataset`) at
    `size` px, with `labels` (N,) long and, for a training loader, `augment` (the loader's ItemAugment).

    With `num_workers`, its worker processes start with its first epoch and serve every later one (torch's
    ``persistent_workers``): fastai starts new ones each epoch, 0.1 to 0.15 s a loader on this project's 2-core
    machine, a fifth of an epoch of 739 photos. Each epoch's order is still drawn here, in the main process.
    `new` on another dataset (`dls.test_dl(...)`) gives an ordinary per-item `TfmdDL`: new items are read
    from their own files, as any prediction reads them."""

    def __init__(self, dataset=None, copies: list[str | None] | None = None, labels: torch.Tensor | None = None,
                 size: int = 0, augment: ItemAugment | None = None, **kwargs):
        if copies is None or labels is None or not len(copies) == len(labels) == len(dataset):
            raise ValueError(f"PresizedDL needs a copy (or None) and a label for each of the dataset's {len(dataset)} items")
        self.copies, self.labels, self.size, self.augment = copies, labels, size, augment
        super().__init__(dataset, **kwargs)
        self.reader = BatchReader(self.dataset, self.after_item, copies, labels, size, augment)
        self._workers, self._epoch = None, _EpochBatches()

    def do_item(self, s):  # the index itself: the batch reads its items together
        return 0 if s is None else s

    def do_batch(self, b):
        return self.reader.__getitems__(list(b))

    def __iter__(self):
        if self.fake_l.num_workers == 0:  # fastai's own loop (also `one_batch`'s, which turns workers off)
            yield from super().__iter__()
            return
        self.randomize()
        self.before_iter()
        self._epoch.batches = list(self.chunkify(self.get_idxs()))  # what the workers' sampler hands out
        if self._workers is None:
            self._workers = torch.utils.data.DataLoader(
                self.reader, batch_sampler=self._epoch, collate_fn=_as_read,
                num_workers=self.fake_l.num_workers, persistent_workers=True, pin_memory=self.pin_memory,
                timeout=self.timeout)
            # A fastai loader is garbage only as part of a cycle (it and its `fake_l`); torch's loader, if collected
            # with it, waits 5 s a worker for queues already torn down. Held here instead (neither the reader nor
            # the sampler refers back to this loader), it is let go after this one, and stops its workers at once.
            weakref.finalize(self, _let_go, self._workers)
        for b in self._workers:
            b = tuple(b)  # pinned memory turns the tuple into a list (as fastai's loop also mends)
            yield self.after_batch(b if self.device is None else to_device(b, self.device))
        self.after_iter()

    def __getstate__(self):  # a pickled loader (an export, a spawned process) starts workers of its own
        return {k: v for k, v in self.__dict__.items() if k != "_workers"} | {"_workers": None}

    def new(self, dataset=None, cls=None, **kwargs):
        if dataset is not None and dataset is not self.dataset:
            return super().new(dataset, cls or TfmdDL, **kwargs)
        if cls is None or issubclass(cls, PresizedDL):
            kwargs = dict(copies=self.copies, labels=self.labels, size=self.size, augment=self.augment) | kwargs
        return super().new(dataset, cls, **kwargs)


class BatchReader(torch.utils.data.Dataset):
    """A batch of a presized loader's items, read at once (torch's workers call ``__getitems__``): each item's
    copy, changed by `augment` when given, or, without a usable copy, the per-item path's pixels."""

    def __init__(self, dataset, after_item, copies: list[str | None], labels: torch.Tensor, size: int,
                 augment: ItemAugment | None):
        self.dataset, self.after_item = dataset, after_item
        self.copies, self.labels, self.size, self.augment = copies, labels, size, augment

    def __len__(self) -> int:
        return len(self.copies)

    def _pixels(self, i: int) -> np.ndarray:
        copy = self.copies[i]
        pixels = None if copy is None else read_copy(copy, self.size)
        if pixels is None:  # the per-item path, its own random change included
            return self.after_item(self.dataset[i])[0].permute(1, 2, 0).numpy()
        return pixels if self.augment is None else self.augment.apply(pixels)

    def __getitems__(self, indices: list[int]):
        first = self._pixels(indices[0])
        out = np.empty((len(indices), first.shape[2], *first.shape[:2]), np.uint8)  # (N, C, H, W), as ToTensor's
        for k, i in enumerate(indices):
            out[k] = (first if k == 0 else self._pixels(i)).transpose(2, 0, 1)  # numpy: 4x torch's permute-copy
        pixels = torch.from_numpy(out)
        return (TensorImageBW if len(out[0]) == 1 else TensorImage)(pixels), TensorCategory(self.labels[indices])


class _EpochBatches(torch.utils.data.Sampler):
    """The batches of a loader's current epoch, as its `__iter__` drew them."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _as_read(batch):
    return batch


def _let_go(workers: torch.utils.data.DataLoader) -> None:
    """Nothing to do: returning drops the last reference to `workers`, whose iterator then stops them."""


def presized_dataloaders(dls: DataLoaders, size: int) -> DataLoaders:
    """`dls` (per-item fastai DataLoaders, as `data.dataloaders` builds them, opened by `presize.OpenPresized`)
    with each loader reading its batches from the copies; `dls` itself when its items do not fit this path
    (a multi-label set, an opener or item transform of another kind)."""
    opener = next((t for t in dls.train_ds.tls[0].tfms.fs if isinstance(t, OpenPresized)), None)
    if (opener is None or not single_label(dls)
            or any(not isinstance(t, _PER_ITEM) for dl in dls.loaders for t in dl.after_item.fs)):
        return dls
    loaders = []
    for dl in dls.loaders:
        labels = class_indices(dls, dl)
        copies = [opener.cached.get(str(path)) for path in dl.dataset.items["path"]]
        augment = next((t for t in dl.after_item.fs if isinstance(t, ItemAugment) and dl.dataset.split_idx == 0), None)
        loaders.append(dl.new(cls=PresizedDL, copies=copies, labels=labels, size=size, augment=augment))
    return DataLoaders(*loaders, path=dls.path, device=dls.device)
