"""Small image sets held in memory as one uint8 tensor, so an epoch gathers batches instead of decoding files.

At 28 px the per-item path (open a PNG, make a PIL image, a tensor, collate a batch) costs as much CPU as
a small network's training step: on Fashion-MNIST, one thread, the loading alone ran at 1,050 images per
CPU-second and `small_bn_cnn`'s forward and backward passes at 1,200. Decoding every image once and gathering
each batch by index leaves the CPU to the network. The batches are the ones the per-item loaders give: the
same images (each opened by the same opener, the same item transforms), the same labels (the same vocab),
the same batch transforms (scaling to [0, 1], augmentation), and the same fastai `Datasets` behind them, so
`show_batch`, `test_dl` (which reads new items one by one again), `get_preds` and the interpretation
plots work as before. Only single-label image sets whose images all have one size fit this path.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from fastai.data.core import DataLoaders, TfmdDL
from fastai.data.transforms import Categorize
from fastai.torch_core import TensorCategory, TensorImage, TensorImageBW, to_device
from fasttransform import DisplayedTransform
from tqdm.auto import tqdm

from .errors import VisionStudiesError
from .images import load_image

__all__ = ["MemoryDL", "memory_dataloaders", "decode_all", "fits_in_memory", "single_label", "class_indices",
           "MEMORY_BUDGET", "RandomShiftFlip", "NotInMemory"]


# The most a set decoded into memory may take (uint8 pixels): well inside Colab's 12.7 GB of RAM
MEMORY_BUDGET = 2 * 2**30
# Sets larger than this show a progress bar while they are decoded (Fashion-MNIST's 70,000: about a minute)
PROGRESS_FROM = 10_000


def fits_in_memory(name: str, n_images: int, channels: int, image_size: int, explain: bool = True) -> bool:
    """Whether `n_images` decoded at `image_size` fit `MEMORY_BUDGET`; when not, it says so (unless `explain` is
    False: the T4 estimate asks the same question) and what happens."""
    needed = n_images * channels * image_size * image_size
    if needed <= MEMORY_BUDGET:
        return True
    if not explain:
        return False
    print(f"{name}: {n_images:,} images at {image_size} px would take {needed / 2**30:.1f} GB decoded, more than "
          f"the {MEMORY_BUDGET / 2**30:.0f} GB held in memory (memory_data.MEMORY_BUDGET): read item by item instead")
    return False


class NotInMemory(VisionStudiesError, ValueError):
    """The DataLoaders cannot be held in memory this way (a multi-label set, images of several sizes)."""


def _item_pixels(dl: TfmdDL, i: int) -> torch.Tensor:
    """Item `i` of `dl`'s dataset as the per-item path makes it: opened, item-transformed, a uint8 tensor."""
    return dl.after_item(dl.dataset[i])[0]


def decode_all(dl: TfmdDL) -> torch.Tensor:
    """Every image of `dl`'s dataset as one uint8 tensor (N, C, H, W), each the per-item path's pixels.

    A file already at the loader's size is read with the loader's own `images.load_image` (PIL decoding, no
    fastai pipeline: 30 times cheaper); any other goes through the loader's opener and item transforms."""
    ds = dl.dataset
    random = [type(t).__name__ for t in dl.after_item.fs if getattr(t, "split_idx", None) == 0]
    if random:  # decoded once, one random draw would be every epoch's
        raise NotInMemory(f"the loader changes items at random ({', '.join(random)}); build it with augment='none' "
                          "or augment_on='batches' and give the random changes as batch transforms")
    first = _item_pixels(dl, 0)
    c, h, w = first.shape
    mode = "L" if c == 1 else "RGB"
    out = torch.empty((len(ds), c, h, w), dtype=torch.uint8)
    paths = tqdm(ds.items["path"], desc=f"decoding {len(ds):,} images into memory", unit="img",
                 disable=len(ds) < PROGRESS_FROM)
    for i, path in enumerate(paths):
        # an original at the final size, with no presized copy: the loader would open it as it is and leave it
        pixels = None if _opened_elsewhere(dl, path) else np.array(load_image(path, mode))
        if pixels is not None and pixels.shape[:2] == (h, w):
            out[i] = torch.from_numpy(pixels.reshape(h, w, c)).permute(2, 0, 1)
        else:
            item = _item_pixels(dl, i)
            if item.shape != first.shape:
                raise NotInMemory(f"{path} comes out {tuple(item.shape)}, the first image {tuple(first.shape)}: "
                                  "the images of an in-memory set need one size (set an item transform that resizes)")
            out[i] = item
    return out


def _opened_elsewhere(dl: TfmdDL, path: str) -> bool:
    """Whether the loader's opener reads `path` from a presized copy (presize.OpenPresized) instead."""
    opener = dl.dataset.tls[0].tfms.fs[0]
    return str(path) in getattr(opener, "cached", {})


class MemoryDL(TfmdDL):
    """A fastai `TfmdDL` whose items are already decoded: `images` (N, C, H, W) uint8 and `labels` (N,) long,
    row i being item i of `dataset`. A batch is two index gathers, then the usual batch transforms.

    `new` on another dataset (`dls.test_dl(...)`) gives an ordinary per-item `TfmdDL`: new items are read
    from their files, as any prediction reads them."""

    def __init__(self, dataset=None, images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 **kwargs):
        if images is None or labels is None or len(images) != len(labels) or len(images) != len(dataset):
            raise NotInMemory(f"MemoryDL needs images and labels for each of the dataset's {len(dataset)} items")
        self.images, self.labels = images, labels
        self._image_type = TensorImageBW if images.shape[1] == 1 else TensorImage
        super().__init__(dataset, **kwargs)

    def do_item(self, s):  # the index itself: nothing is read per item
        return 0 if s is None else s

    def do_batch(self, b):
        i = b if isinstance(b, torch.Tensor) else torch.as_tensor(list(b), dtype=torch.long)
        # index_select: the same rows as indexing with `i`, a quarter of its time (4 against 17 us, a LeNet-5 batch)
        return self._image_type(self.images.index_select(0, i)), TensorCategory(self.labels.index_select(0, i))

    def __iter__(self):
        """fastai's `DataLoader.__iter__`, with the same order from the same random draws, each batch sliced
        from it and gathered here. Items in memory need none of the machinery that fastai's loader runs per
        batch for reading items (torch's loader iterator, a call per item, a move to the CPU they are already on):
        this takes a third of the time a batch that fastai's own iteration does, side by side (30 us a LeNet-5
        batch here, quiet). Workers are never started either: a gather is cheaper than sending a batch back."""
        self.randomize()
        self.before_iter()
        order = torch.as_tensor(list(self.get_idxs()), dtype=torch.long)
        torch.empty((), dtype=torch.int64).random_()  # the draw torch's loader iterator makes (its workers' seed)
        end = len(order) - len(order) % self.bs if self.drop_last else len(order)
        to_other_device = self.device is not None and torch.device(self.device).type != "cpu"
        for start in range(0, end, self.bs):
            b = self.do_batch(order[start : start + self.bs])
            yield self.after_batch(to_device(b, self.device) if to_other_device else b)
        self.after_iter()

    def new(self, dataset=None, cls=None, **kwargs):
        if dataset is not None and dataset is not self.dataset:
            return super().new(dataset, cls or TfmdDL, **kwargs)
        if cls is None or issubclass(cls, MemoryDL):
            kwargs = dict(images=self.images, labels=self.labels) | kwargs
        return super().new(dataset, cls, **kwargs)


def single_label(dls: DataLoaders) -> bool:
    """Whether `dls` label each image with one class (a CategoryBlock; not MultiCategorize, its subclass)."""
    return any(type(t) is Categorize for t in dls.train_ds.tls[-1].tfms.fs)


def class_indices(dls: DataLoaders, dl: TfmdDL) -> torch.Tensor:
    """The class index of each of `dl`'s items (N,) long, in `dls.vocab`'s order, as Categorize encodes them."""
    o2i = {v: i for i, v in enumerate(dls.vocab)}
    return torch.tensor([o2i[label] for label in dl.dataset.items["label"]], dtype=torch.long)


def memory_dataloaders(dls: DataLoaders, batch_tfms: list | None = None) -> DataLoaders:
    """`dls` (per-item fastai DataLoaders, as `data.dataloaders` builds them) with each loader held in memory.

    `batch_tfms` go to the training loader's batch transforms (training batches only, as fastai's random
    augmentations are), after the ones it has."""
    if not single_label(dls):
        raise NotInMemory("in-memory loaders take single-label image sets (a CategoryBlock); this one is not")
    loaders = []
    for k, dl in enumerate(dls.loaders):
        labels = class_indices(dls, dl)
        after_batch = list(dl.after_batch.fs) + (list(batch_tfms or []) if k == 0 else [])
        loaders.append(dl.new(cls=MemoryDL, images=decode_all(dl), labels=labels, after_batch=after_batch,
                              num_workers=0))
    for dl in loaders:
        dl.after_batch.setup(dl)
    return DataLoaders(*loaders, path=dls.path, device=dls.device)


class RandomShiftFlip(DisplayedTransform):
    """Training batches only: each image moved up to `pad` pixels each way (zero-padded, then cropped back to
    its size) and, with `flip`, mirrored left-right at random. The augmentation Zalando's strongest benchmark
    entries use (random crops with padding, flips); a mirrored shirt is still a shirt, a shifted one too."""

    split_idx, order = 0, 15  # after IntToFloatTensor (10)

    def __init__(self, pad: int = 2, flip: bool = True):
        super().__init__()
        if pad < 0:
            raise ValueError(f"pad={pad}: the most pixels an image moves, 0 or more")
        self.pad, self.flip = pad, flip

    def encodes(self, x: TensorImage):
        n, c, h, w = x.shape
        p = self.pad
        padded = F.pad(x, (p, p, p, p))
        rows = torch.randint(0, 2 * p + 1, (n, 1), device=x.device) + torch.arange(h, device=x.device)
        cols = torch.randint(0, 2 * p + 1, (n, 1), device=x.device) + torch.arange(w, device=x.device)
        if self.flip:
            cols = torch.where(torch.rand(n, 1, device=x.device) < 0.5, cols.flip(1), cols)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
