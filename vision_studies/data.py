"""From a dataset folder on disk to fastai DataLoaders, one reader per layout in the registry."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch
from fastai.data.block import CategoryBlock, DataBlock
from fastcore.basics import using_attr
from fastai.data.core import DataLoaders
from fastai.data.transforms import GrandparentSplitter, RandomSplitter, RegexLabeller, get_image_files, parent_label
from fastai.vision.core import PILImage, PILImageBW
from fastai.vision.data import ImageBlock

from .augment import augment_transforms
from .download import download_dataset
from .fixtures import make_fixture
from .registry import DatasetSpec, get_spec

__all__ = ["prepare_dataset", "dataloaders"]


def prepare_dataset(name: str, fixture: bool = False, root: Path | str = "data") -> tuple[DatasetSpec, Path]:
    """The registry entry and local folder of dataset `name`: the tiny fixture, or the real download."""
    spec = get_spec(name)
    root = Path(root)
    path = make_fixture(name, root / "fixtures") if fixture else download_dataset(spec, root)
    return spec, path


def _images_in(path: Path, folder: str) -> list[Path]:
    return get_image_files(Path(path) / folder)


def _layout_hint(spec: DatasetSpec) -> str:
    if spec.layout == "class_folders":
        return f"{spec.train_folder}/<class>/<image> and {spec.valid_folder}/<class>/<image>"
    return f"{spec.images_folder}/<image> with the label in the file name (pattern {spec.label_regex})"


def _image_block(spec: DatasetSpec):
    """How image files become model inputs: opened with PIL, converted to the dataset's mode."""
    return ImageBlock(PILImageBW if spec.image_mode == "L" else PILImage)


def _block(spec: DatasetSpec, seed: int, item_tfms: list, batch_tfms: list) -> DataBlock:
    common = dict(
        blocks=(_image_block(spec), CategoryBlock(vocab=list(spec.classes))),
        item_tfms=item_tfms,
        batch_tfms=batch_tfms,
    )
    if spec.layout == "class_folders":
        return DataBlock(
            get_items=partial(get_image_files, folders=[spec.train_folder, spec.valid_folder]),
            splitter=GrandparentSplitter(train_name=spec.train_folder, valid_name=spec.valid_folder),
            get_y=parent_label,
            **common,
        )
    if spec.layout == "filename_regex":
        return DataBlock(
            get_items=partial(_images_in, folder=spec.images_folder),
            splitter=RandomSplitter(valid_pct=spec.valid_pct, seed=seed),
            get_y=using_attr(RegexLabeller(spec.label_regex), "name"),
            **common,
        )
    raise ValueError(f"dataset {spec.name!r} has layout {spec.layout!r}, which no reader in data.py handles")


def dataloaders(
    spec: DatasetSpec,
    path: Path | str,
    image_size: int,
    batch_size: int = 64,
    augment: str = "light",
    seed: int = 42,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
) -> DataLoaders:
    """Training and validation DataLoaders for the dataset at `path`, laid out as `spec` says.

    On a CPU the loading runs in the main process (`num_workers=0`): worker processes would only compete
    with training for the same cores. With a GPU, workers decode JPEGs while the GPU trains.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset folder {path} does not exist; prepare_dataset({spec.name!r}) makes it")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    block = _block(spec, seed, *augment_transforms(augment, image_size))
    if not block.get_items(path):
        raise ValueError(f"{path}: no images found; {spec.title} is laid out as {_layout_hint(spec)}")
    dls = block.dataloaders(path, bs=batch_size, num_workers=num_workers, device=device, seed=seed)
    if len(dls.train_ds) == 0 or len(dls.valid_ds) == 0:
        raise ValueError(
            f"{path}: found {len(dls.train_ds)} training and {len(dls.valid_ds)} validation images; "
            f"both splits need images, laid out as {_layout_hint(spec)}"
        )
    return dls
