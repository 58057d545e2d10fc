"""Datasets published as idx files (MNIST's format; Fashion-MNIST): fetched or found, checked, and written
once as PNGs in MNIST's folder layout, so the one loader in `data.py` reads them like any class folders.

Zalando publishes Fashion-MNIST as four gzipped idx files with an md5 of each ``.gz``. Distributions
re-compress them (Debian's ``dataset-fashion-mnist`` did), which changes the ``.gz`` md5 but not the
bytes inside, so a local copy is checked by the sha256 of each decompressed file, and a download by
both: the publisher's md5 first, then the same raw sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .download import ChecksumError, download_file
from .errors import VisionStudiesError
from .registry import DatasetSpec

__all__ = ["read_idx", "IdxFormatError", "find_local_copy", "has_idx_files", "fetch_idx_dataset",
           "write_image_folders"]

# idx magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions
_UBYTE = 0x08


class IdxFormatError(VisionStudiesError, ValueError):
    """A file is not the idx file it should be (magic number, dimensions or length)."""


def read_idx(path: Path | str) -> np.ndarray:
    """An idx file (``.gz`` or raw) as a uint8 array of the shape its header gives."""
    path = Path(path)
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or not 1 <= data[3] <= 4:
        raise IdxFormatError(f"{path}: not an unsigned-byte idx file (its first bytes are {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise IdxFormatError(f"{path}: header says shape {shape} ({expected} bytes), the file has {len(data)} bytes; "
                             "it is truncated or damaged: fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _raw_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _member(folder: Path, name: str) -> Path | None:
    """``name.gz`` or the decompressed ``name`` in `folder`."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def has_idx_files(spec: DatasetSpec, folder: Path | str) -> bool:
    """Whether `folder` holds every file of `spec` (gzipped or not)."""
    return all(_member(Path(folder), name) for name, _, _ in spec.files)


def find_local_copy(spec: DatasetSpec) -> Path | None:
    """The first of the spec's known local-copy folders (a distribution's package) that holds every file."""
    return next((Path(f) for f in spec.local_copies if has_idx_files(spec, f)), None)


def _check_raw(path: Path, sha256: str) -> None:
    found = _raw_sha256(path)
    if found != sha256:
        raise ChecksumError(f"{path}: the decompressed file has sha256 {found}, not the published data's {sha256}; "
                            "this copy differs from the publisher's: delete it and fetch it again")


def write_image_folders(spec: DatasetSpec, sources: dict[str, Path], dest: Path) -> None:
    """Each (images, labels) pair of idx files as ``<dest>/<split>/<class>/<index>.png``.

    `spec.files` lists train images, train labels, test images, test labels in that order; the training
    pair goes to `spec.train_folder`, the test pair to `spec.valid_folder`, as MNIST's PNG archive lays them out.
    """
    names = [name for name, _, _ in spec.files]
    for split, (images_name, labels_name) in ((spec.train_folder, names[0:2]), (spec.valid_folder, names[2:4])):
        images, labels = read_idx(sources[images_name]), read_idx(sources[labels_name])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IdxFormatError(f"{sources[images_name]} holds {images.shape} images and {sources[labels_name]} "
                                 f"{labels.shape} labels: they should pair up one to one")
        if labels.max() >= len(spec.classes):
            raise IdxFormatError(f"{sources[labels_name]}: label {labels.max()} is beyond the {len(spec.classes)} classes")
        folders = [dest / split / c for c in spec.classes]  # label k is the k-th class, as the publisher numbers them
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for i, (pixels, label) in enumerate(zip(images, labels)):
            Image.fromarray(pixels, mode="L").save(folders[label] / f"{i}.png")


def fetch_idx_dataset(spec: DatasetSpec, root: Path | str = "data", local_copy: Path | str | None = None,
                      progress: bool = True) -> Path:
    """The dataset's image folders under `root`, made once from the idx files.

    The files come from `local_copy` (any folder holding them), else from a local copy the spec knows
    (``/usr/share/datasets/fashion-mnist`` once Debian's package is installed), else from the publisher's
    URLs (``spec.url`` + file name), checked by the published md5. Either way each decompressed file must
    have the raw sha256 the spec records.
    """
    root = Path(root)
    folder = root / spec.archive_root
    done = folder / ".complete"
    if done.exists():
        return folder
    where = Path(local_copy) if local_copy else find_local_copy(spec)
    if where is not None and not has_idx_files(spec, where):
        missing = [n for n, _, _ in spec.files if _member(where, n) is None]
        raise FileNotFoundError(f"{where} lacks {', '.join(missing)} (or their .gz); it should hold all four idx files "
                                f"of {spec.title}")
    sources: dict[str, Path] = {}
    for name, md5, sha256 in spec.files:
        if where is not None:
            path = _member(where, name)
        else:
            path = download_file(f"{spec.url}{name}.gz", root / "archives" / spec.name / f"{name}.gz", md5=md5,
                                 progress=progress)
        _check_raw(path, sha256)
        sources[name] = path
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    write_image_folders(spec, sources, staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    done.touch()
    return folder
