"""From a dataset folder on disk to fastai DataLoaders, whatever the dataset's layout.

Every layout in the registry is first read into one table, a row per image: its path, its label (or labels), and
whether it belongs to the validation set. One DataBlock then turns any such table into DataLoaders, so layouts
differ only in how the table is read, and the table can be checked against the disk (a test counts files) and
extended (extra training images, a user's own folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.data.block import CategoryBlock, DataBlock, MultiCategoryBlock, TransformBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import ColReader, ColSplitter, IntToFloatTensor, get_image_files
from fastai.vision.core import PILImage, PILImageBW

from .augment import augment_transforms
from .fixtures import make_fixture
from .images import channels, load_image
from .labels import check_class_folders
from .memory_data import fits_in_memory, memory_dataloaders
from .presized_loader import presized_dataloaders
from .registry import DatasetSpec, class_of, get_spec
from .sources import fetch_dataset

__all__ = ["prepare_dataset", "items_table", "holdout_test", "official_test_split", "has_official_split", "test_split",
           "dataloaders", "image_datablock", "user_folder_spec",
           "augment_on_for"]


def user_folder_spec(name: str, valid_pct: float = 0.2) -> DatasetSpec:
    """A spec for the learner's own images: one sub-folder per class, a random `valid_pct` held out."""
    return DatasetSpec(
        name=name, title=f"your own images ({name})", url="", archive_root="", layout="class_folders",
        train_folder="", classes=(), licence="yours", homepage="", valid_pct=valid_pct,
    )


def prepare_dataset(
    name: str, fixture: bool = False, root: Path | str = "data", folder: Path | str | None = None
) -> tuple[DatasetSpec, Path]:
    """The registry entry and local folder of dataset `name`: the tiny fixture, the real download, or
    (`folder`) the learner's own folder of ``<class>/<image>`` sub-folders, read like the dataset's classes."""
    spec = get_spec(name)
    if folder and spec.files and not fixture:  # a folder holding the dataset's idx files is a local copy of it
        from .idx import fetch_idx_dataset, has_idx_files

        if has_idx_files(spec, folder):
            return spec, fetch_idx_dataset(spec, Path(root), local_copy=folder)
    if folder:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"DATA_FOLDER {folder} does not exist; it should hold one sub-folder of images per class")
        check_class_folders(folder)  # a folder made by hand: empty classes, one class, imbalance
        return user_folder_spec(name, spec.valid_pct), folder
    root = Path(root)
    path = make_fixture(name, root / "fixtures") if fixture else fetch_dataset(spec, root)
    return spec, path


def _random_valid(n: int, valid_pct: float, seed: int) -> np.ndarray:
    valid = np.zeros(n, dtype=bool)
    valid[np.random.default_rng(seed).permutation(n)[: round(n * valid_pct)]] = True
    return valid


def _label_from(name: str, regex: str, where: Path) -> str:
    if not regex:
        return name
    match = re.match(regex, name)
    if match is None:
        raise ValueError(f"{where}: {name!r} does not match the label pattern {regex}")
    return match.group(1)


def _class_folder_table(spec: DatasetSpec, path: Path, seed: int) -> pd.DataFrame:
    roots = [path / spec.train_folder] + ([path / spec.valid_folder] if spec.valid_folder else [])
    files = [f for r in roots if r.is_dir() for f in get_image_files(r)]
    if spec.class_folders:
        files = [f for f in files if f.parent.name in spec.class_folders]
    table = pd.DataFrame({
        "path": [str(f) for f in files],
        "label": [class_of(spec, _label_from(f.parent.name, spec.label_regex, f)) for f in files],
    })
    if spec.split_lists:  # the dataset's own lists of "<class folder>/<image name>" lines (Food-101's meta/)
        chosen = (lambda entry: entry.split("/")[0] in spec.class_folders) if spec.class_folders else None
        return _split_by_lists(spec, path, table, [f"{f.parent.name}/{f.stem}" for f in files], restrict=chosen)
    if spec.valid_folder:
        table["is_valid"] = [f.relative_to(path).parts[0] == spec.valid_folder for f in files]
    else:
        table["is_valid"] = _random_valid(len(table), spec.valid_pct, seed)
    return table


def _listed(file: Path) -> list[str]:
    """The image names (first word of each line, ``#`` comments skipped) of a split list such as Pets' test.txt."""
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; the dataset's own split is read from it")
    return [line.split()[0] for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _filename_table(spec: DatasetSpec, path: Path, seed: int) -> pd.DataFrame:
    files = get_image_files(path / spec.images_folder)
    table = pd.DataFrame({
        "path": [str(f) for f in files],
        "label": [class_of(spec, _label_from(f.name, spec.label_regex, f)) for f in files],
    })
    if not spec.split_lists:
        table["is_valid"] = _random_valid(len(table), spec.valid_pct, seed)
        return table
    # the dataset's own split (Pets: annotations/trainval.txt and test.txt)
    return _split_by_lists(spec, path, table, [Path(p).stem for p in table["path"]])


def _split_by_lists(spec: DatasetSpec, path: Path, table: pd.DataFrame, keys: list[str], restrict=None) -> pd.DataFrame:
    """`table` split by the dataset's own (training, validation) lists, each row known by its `keys` entry
    as the lists name it; images in neither list are left out, and listed images that are missing named."""
    train_file, valid_file = (path / f for f in spec.split_lists)
    train, valid = set(_listed(train_file)), set(_listed(valid_file))
    both = sorted(train & valid)
    if both:
        raise ValueError(f"{valid_file}: {both[0]} (and {len(both) - 1} more) is also in {train_file.name}")
    missing = sorted(e for e in (train | valid) - set(keys) if restrict is None or restrict(e))
    if missing:
        raise ValueError(f"{path}: {len(missing)} images named in {train_file.name}/{valid_file.name} are missing, "
                         f"{missing[0]} first; the download is incomplete: delete {path} and prepare the dataset again")
    table["is_valid"] = [key in valid for key in keys]
    return table[[key in train or key in valid for key in keys]].reset_index(drop=True)


def _folder_class(spec: DatasetSpec, folder: str) -> str:
    """The class a folder of extra images stands for: named as the dataset names its own folders, else as is."""
    match = re.match(spec.label_regex, folder) if spec.label_regex else None
    return match.group(1) if match else folder


def _class_names(spec: DatasetSpec, path: Path) -> dict[str, str]:
    """{class id: class name} from the dataset's own classes file (CUB's ``1 001.Black_footed_Albatross``),
    named as `label_regex` says (``Black_footed_Albatross``)."""
    file = path / spec.classes_file
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; {spec.title} names its classes there")
    names = {}
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if line.strip():
            class_id, _, folder = line.strip().partition(" ")
            if not folder:
                raise ValueError(f"{file}, line {number}: expected '<id> <class folder>', got {line!r}")
            names[class_id] = _label_from(folder, spec.label_regex, file)
    return names


def _label_csv_table(spec: DatasetSpec, path: Path, seed: int) -> pd.DataFrame:
    from .labels import read_label_csv

    rows = read_label_csv(
        path / spec.csv_file, path / spec.images_folder, valid_col="is_valid", label_delim=spec.label_delim,
        classes=list(spec.classes) or None,
    )
    return pd.DataFrame({
        "path": [str(path / spec.images_folder / f) for f in rows["fname"]],
        "label": [labels.split(spec.label_delim) if labels else [] for labels in rows["labels"]],
        "is_valid": rows["is_valid"].astype(bool).to_numpy(),
    })


def _official_split_table(spec: DatasetSpec, path: Path, seed: int) -> pd.DataFrame:
    """CUB-200-2011: ids to paths in images.txt, ids to 1 (train) or 0 (test) in train_test_split.txt."""
    read = lambda name: pd.read_csv(path / name, sep=" ", header=None, dtype=str)  # noqa: E731
    images = read("images.txt").set_axis(["id", "relpath"], axis=1)
    split = read("train_test_split.txt").set_axis(["id", "is_train"], axis=1)
    table = images.merge(split, on="id", how="left", validate="one_to_one")
    if table["is_train"].isna().any():
        missing = table.loc[table["is_train"].isna(), "id"].iloc[0]
        raise ValueError(f"{path / 'train_test_split.txt'}: image id {missing} from images.txt has no split")
    folders = table["relpath"].str.split("/").str[0]
    if spec.class_folders:
        keep = folders.isin(spec.class_folders)
        table, folders = table[keep], folders[keep]
    if spec.classes_file:  # the label is the class the dataset's own files give the image id
        names = _class_names(spec, path)
        labels_of = dict(line.split() for line in (path / "image_class_labels.txt").read_text().splitlines() if line.strip())
        labels = [names[labels_of[i]] for i in table["id"]]
    else:
        labels = [_label_from(f, spec.label_regex, path / "images.txt") for f in folders]
    return pd.DataFrame({
        "path": [str(path / spec.images_folder / p) for p in table["relpath"]],
        "label": labels,
        "is_valid": (table["is_train"] == "0").to_numpy(),
    })


_READERS = {
    "class_folders": _class_folder_table,
    "filename_regex": _filename_table,
    "label_csv": _label_csv_table,
    "official_split": _official_split_table,
}


def _layout_hint(spec: DatasetSpec) -> str:
    if spec.layout == "class_folders":
        base = f"{spec.train_folder}/" if spec.train_folder else ""
        split = f" and {spec.valid_folder}/<class>/<image>" if spec.valid_folder else ""
        return f"{base}<class>/<image>{split}"
    if spec.layout == "filename_regex":
        return f"{spec.images_folder}/<image> with the label in the file name (pattern {spec.label_regex})"
    if spec.layout == "label_csv":
        return f"{spec.csv_file} (fname, labels, is_valid) and {spec.images_folder}/<image>"
    return "images/<class>/<image> with images.txt and train_test_split.txt"


def items_table(
    spec: DatasetSpec, path: Path | str, seed: int = 42, extra_train_folder: Path | str | None = None
) -> pd.DataFrame:
    """One row per image: ``path``, ``label`` (a list of labels for multi-label sets) and ``is_valid``.

    `extra_train_folder` adds ``<folder>/<class>/<image>`` rows to the training side only (seed 001 added
    photos from eBird to CUB's training set this way); the validation set stays the dataset's own.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset folder {path} does not exist; prepare_dataset({spec.name!r}) makes it")
    if spec.layout not in _READERS:
        raise ValueError(f"dataset {spec.name!r} has layout {spec.layout!r}; data.py reads {', '.join(_READERS)}")
    table = _READERS[spec.layout](spec, path, seed)
    if extra_train_folder:
        extra = Path(extra_train_folder)
        files = get_image_files(extra)
        if not files:
            raise ValueError(f"extra training folder {extra} holds no images; it should hold <class>/<image> files")
        # folders may carry the dataset's own folder names (CUB's "001.Black_footed_Albatross"): the class is
        # read from them as from the dataset's, so the extra images join the same classes
        labels = [_folder_class(spec, f.parent.name) for f in files]
        table = pd.concat([table, pd.DataFrame({"path": [str(f) for f in files], "label": labels, "is_valid": False})],
                          ignore_index=True)
    if table.empty:
        raise ValueError(f"{path}: no images found; {spec.title} is laid out as {_layout_hint(spec)}")
    n_valid = int(table["is_valid"].sum())
    if n_valid == 0 or n_valid == len(table):
        raise ValueError(
            f"{path}: found {len(table) - n_valid} training and {n_valid} validation images; "
            f"both splits need images, laid out as {_layout_hint(spec)}"
        )
    labels = {l for ls in table["label"] for l in (ls if isinstance(ls, list) else [ls])}
    classes = spec.classes or (tuple(_class_names(spec, path).values()) if spec.classes_file else ())
    unknown = sorted(labels - set(classes)) if classes else []
    if unknown and spec.sorting and not extra_train_folder:  # a source without labels: say how to sort it
        from .labels import LabelError

        raise LabelError(f"{path}: found images labelled {unknown[:3]} by their folders, not {list(classes)}. "
                         + spec.sorting.format(path=path))
    if unknown:
        where = f" (extra training folder {extra_train_folder})" if extra_train_folder else ""
        raise ValueError(
            f"{path}{where}: labels {unknown[:5]} are not among {spec.name}'s classes ({len(classes)}, "
            f"{'from ' + spec.classes_file if not spec.classes else 'in the registry'}); check the folder names, "
            "or use DATA_FOLDER for a dataset of your own"
        )
    if spec.screen_images:
        from .images import drop_bad_images

        # the record lets a second reading of the same files (notebook 10 trains two models) skip the decoding
        good = {str(p) for p in drop_bad_images([Path(p) for p in table["path"]], path / "bad_images.csv",
                                                record=path / "screened_images.json")}
        table = table[table["path"].isin(good)].reset_index(drop=True)
    return table


def holdout_test(table: pd.DataFrame, pct: float, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a seeded `pct` of the training rows off as a test set that training and model selection never see."""
    train = np.flatnonzero(~table["is_valid"].to_numpy())
    test = np.random.default_rng(seed + 1).permutation(train)[: max(1, round(len(train) * pct))]
    mask = np.zeros(len(table), dtype=bool)
    mask[test] = True
    return table[~mask].reset_index(drop=True), table[mask].reset_index(drop=True)


def has_official_split(spec: DatasetSpec) -> bool:
    """Whether the dataset's own files say which images are held out (CUB's train_test_split.txt, Food-101's
    meta/test.txt, MNIST's testing/ folder), rather than a seeded random share."""
    return bool(spec.valid_folder or spec.split_lists or spec.layout in ("official_split", "label_csv"))


def official_test_split(table: pd.DataFrame, valid_pct: float, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dataset's own held-out images (``is_valid`` as read) become the test set, touched once at the end;
    a seeded `valid_pct` of its training images becomes the validation set that picks the epoch."""
    own_test = table["is_valid"].to_numpy()
    train = table[~own_test].reset_index(drop=True)
    train["is_valid"] = _random_valid(len(train), valid_pct, seed + 1)
    return train, table[own_test].reset_index(drop=True)


def test_split(spec: DatasetSpec, table: pd.DataFrame, test_pct: float, seed: int = 42,
               valid_pct: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The one rule for a test set touched once, at the end: the dataset's own test images where it has them,
    validation then `valid_pct` (default the registry's) of its training images (`official_test_split`); else a
    seeded `test_pct` of its training images, validation as the dataset's (`holdout_test`)."""
    if has_official_split(spec):
        return official_test_split(table, spec.valid_pct if valid_pct is None else valid_pct, seed)
    return holdout_test(table, test_pct, seed)


def _open_rgb(path: Path | str) -> PILImage:
    return PILImage.create(load_image(path, "RGB"))


def _open_gray(path: Path | str) -> PILImageBW:
    return PILImageBW.create(load_image(path, "L"))


def _image_block(spec: DatasetSpec, opener=None) -> TransformBlock:
    """How image files become model inputs: fastai's ImageBlock, but opened by `images.load_image`, which
    turns EXIF-rotated photos upright and reads CMYK, 16-bit and palette files right, and refuses
    decompression bombs with an error naming the file. (Annotated functions, not a partial: fastai reads
    the accepted input types from the annotation, so `dls.test_dl([path])` takes paths.)"""
    opener = opener or (_open_gray if spec.image_mode == "L" else _open_rgb)  # opener: presize.OpenPresized
    return TransformBlock(type_tfms=opener, batch_tfms=IntToFloatTensor)


def dataloaders(
    spec: DatasetSpec,
    path: Path | str,
    image_size: int,
    batch_size: int = 64,
    augment: str = "light",
    seed: int = 42,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
    extra_train_folder: Path | str | None = None,
    table: pd.DataFrame | None = None,
    presize: bool | Path | str = True,
    augment_on: str | None = None,
    in_memory: bool = False,
) -> DataLoaders:
    """Training and validation DataLoaders for the dataset at `path`, laid out as `spec` says.

    On a CPU the loading runs in the main process (`num_workers=0`): worker processes would only compete
    with training for the same cores. With a GPU, workers decode JPEGs while the GPU trains.
    `table` is an `items_table` already read (and perhaps trimmed by `holdout_test`).
    `presize` keeps every image larger than `image_size`, squished to it, in a cache written once
    (presize.py), whose batches read it directly (presized_loader.py): True puts it beside the dataset folder, a
    path puts it there, False reads the originals every epoch. The table keeps the originals' paths.
    `augment_on` says where the preset's random changes run: "batches" (fastai's batch transforms, on the
    device: the GPU's way) or "items" (item_augment.py: image by image on the 8-bit pixels, in the loader's
    workers: the CPU's way, eight times cheaper there); None picks by `device`.
    `in_memory`: decoded once, batches gathered by index, random changes on batches (memory_data.py), if it fits.
    """
    if table is None:
        table = items_table(spec, path, seed, extra_train_folder)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    vocab = sorted({l for ls in table["label"] for l in (ls if isinstance(ls, list) else [ls])})
    opener = None
    if presize:
        from .presize import OpenPresized, default_cache_dir, presize_images

        cache = default_cache_dir(path) if presize is True else Path(presize)
        opener = OpenPresized(presize_images(table["path"], image_size, cache, spec.image_mode), spec.image_mode)
    in_memory = in_memory and fits_in_memory(spec.name, len(table), channels(spec.image_mode), image_size)
    augment_on = "batches" if in_memory else augment_on or augment_on_for(device)
    block = image_datablock(spec, vocab, image_size, augment, opener=opener, augment_on=augment_on)
    dls = block.dataloaders(table, bs=batch_size, num_workers=num_workers, device=device, seed=seed)
    return memory_dataloaders(dls) if in_memory else presized_dataloaders(dls, image_size)  # as they are without copies


def augment_on_for(device: torch.device | str) -> str:
    """Where a loader on `device` makes its random changes: "batches" on a GPU (fastai's batch transforms on
    the device), "items" elsewhere (item_augment.py, image by image on the CPU)."""
    return "batches" if device is not None and torch.device(device).type == "cuda" else "items"


def image_datablock(spec: DatasetSpec, vocab: list[str], image_size: int, augment: str = "light", opener=None,
                    augment_on: str = "batches") -> DataBlock:
    """fastai's `DataBlock` for an `items_table`: images from its ``path`` column, labels from ``label``
    (one, or a list for a multi-label set), the split from ``is_valid``, the augmentation preset's transforms."""
    if augment_on not in ("batches", "items"):
        raise ValueError(f"augment_on={augment_on!r}: the random changes run on 'batches' (the device) or 'items' (CPU workers)")
    if augment_on == "items":
        from .item_augment import item_augment_transforms

        item_tfms, batch_tfms = item_augment_transforms(augment, image_size)
    else:
        item_tfms, batch_tfms = augment_transforms(augment, image_size)
    target = MultiCategoryBlock(vocab=vocab) if spec.multi_label else CategoryBlock(vocab=vocab)
    return DataBlock(
        blocks=(_image_block(spec, opener), target),
        get_x=ColReader("path"),
        get_y=ColReader("label"),
        splitter=ColSplitter("is_valid"),
        item_tfms=item_tfms,
        batch_tfms=batch_tfms,
    )
