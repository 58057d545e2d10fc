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
           "write_image_folders", "write_idx", "write_fixture"]

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


# ------------------------------------------------------------------------------------------------ fixture


def write_idx(path: Path, array: np.ndarray) -> None:
    """`array` (uint8) as a gzipped idx file: the inverse of `read_idx`."""
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime 0: the same bytes on every run
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _garment(draw, k: int, dx: int, dy: int, ink: int) -> None:
    """A rough silhouette of Fashion-MNIST class `k` on a 28x28 canvas, shifted by (dx, dy)."""
    def box(x0, y0, x1, y1):
        draw.rectangle((x0 + dx, y0 + dy, x1 + dx, y1 + dy), fill=ink)

    def poly(*points):
        draw.polygon([(x + dx, y + dy) for x, y in points], fill=ink)

    if k == 0:  # T-shirt/top: a body with short sleeves
        box(9, 6, 18, 23); box(4, 6, 23, 10)
    elif k == 1:  # trouser: two legs
        box(8, 3, 12, 25); box(15, 3, 19, 25); box(8, 3, 19, 7)
    elif k == 2:  # pullover: a body with long sleeves hanging down
        box(9, 5, 18, 23); box(4, 5, 8, 22); box(19, 5, 23, 22)
    elif k == 3:  # dress: narrow top, wide hem
        poly((11, 3), (16, 3), (22, 25), (5, 25))
    elif k == 4:  # coat: long sleeves, open front
        box(8, 4, 19, 25); box(3, 4, 7, 24); box(20, 4, 24, 24); draw.line((13 + dx, 4 + dy, 13 + dx, 25 + dy), fill=0)
    elif k == 5:  # sandal: thin straps
        for y in (12, 16, 20):
            box(3, y, 24, y + 1)
    elif k == 6:  # shirt: a body, short sleeves and a dark collar notch
        box(9, 5, 18, 24); box(5, 5, 22, 12); poly((11, 5), (16, 5), (13, 10))
    elif k == 7:  # sneaker: low and long
        poly((3, 16), (14, 13), (24, 18), (24, 21), (3, 21))
    elif k == 8:  # bag: a box with a handle
        box(5, 11, 22, 24); draw.arc((9 + dx, 4 + dy, 18 + dx, 15 + dy), 180, 360, fill=ink, width=2)
    else:  # ankle boot: a shaft and a foot
        box(12, 5, 19, 22); box(5, 17, 19, 23)


def write_fixture(spec: DatasetSpec, folder: Path, per_class: tuple[int, int] = (30, 10), seed: int = 0) -> None:
    """A tiny Fashion-MNIST made the way the real one is read: four gzipped idx files (generated garment
    silhouettes, jittered in place and tone, a fixed seed), turned into class folders by the same
    `write_image_folders`. The idx files stay in ``<folder>/idx/``, a local copy the tests can point at."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    idx_folder = folder / "idx"
    idx_folder.mkdir(parents=True, exist_ok=True)
    names = [name for name, _, _ in spec.files]
    for (images_name, labels_name), n in zip((names[0:2], names[2:4]), per_class):
        labels = np.repeat(np.arange(len(spec.classes), dtype=np.uint8), n)
        rng.shuffle(labels)
        images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            canvas = Image.new("L", (28, 28))
            _garment(ImageDraw.Draw(canvas), int(k), *rng.integers(-2, 3, size=2), int(rng.integers(120, 256)))
            noise = rng.normal(0, 12, size=(28, 28))
            images[i] = np.clip(np.asarray(canvas, dtype=float) + noise, 0, 255).astype(np.uint8)
        write_idx(idx_folder / f"{images_name}.gz", images)
        write_idx(idx_folder / f"{labels_name}.gz", labels)
    write_image_folders(spec, {n: idx_folder / f"{n}.gz" for n in names}, folder)
