"""Tiny, deterministic, learnable fixture datasets, each in its real dataset's own layout.

A fixture lets CI run a notebook's real code path (the same loader, model and training) in seconds on a
CPU. Each one is written under ``<root>/<spec.archive_root>`` exactly where the real archive would unpack,
with the same file names and label scheme, and classes that differ in a way a pretrained body (the
fine-tuned EfficientNet-Lite0 of every transfer study's fixture run) or a small network from scratch learns
in a few CPU epochs, so tests can demand far better than chance. The images are photo-like, views of real
photographs (fixture_images.py), because ImageNet features make little of flat colour blobs on noise.
A fixture is rewritten when the code that writes it changes (`writers_digest`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
import inspect
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .fixture_images import paste_view, road, scene_view, sky
from .fixtures_small_sets import SMALL_SET_WRITERS
from .idx import write_fixture as write_fashion_mnist_fixture
from .registry import DatasetSpec, get_spec

__all__ = ["make_fixture", "FIXTURE_MAKERS", "without_jfif", "write_layout", "CLOUD_MISLABELS", "writers_digest"]


def _write_mnist(spec: DatasetSpec, folder: Path) -> None:
    """Real handwritten digits: scikit-learn's bundled 8x8 `digits` (1,797 images), drawn as MNIST draws them.

    MNIST centres each digit in a 20x20 box inside a 28x28 frame, white ink on black; we upsample the
    8x8 scans to 20x20 and pad them the same way. A stratified 80/20 split with seed 0 becomes
    ``training/`` and ``testing/``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=0)
    for split, indices in ((spec.train_folder, train), (spec.valid_folder, test)):
        for i in indices:
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            digit = Image.fromarray(pixels).resize((20, 20), Image.Resampling.BILINEAR)
            frame = Image.new("L", (28, 28))
            frame.paste(digit, (4, 4))
            out = folder / split / str(digits.target[i]) / f"{i}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            frame.save(out)


def _noise(rng: np.random.Generator, tone: int | tuple, size: tuple[int, int], sd: float = 20) -> Image.Image:
    w, h = size
    return Image.fromarray(rng.normal(tone, sd, size=(h, w, 3)).clip(0, 255).astype(np.uint8))


def _photo_classes(folder: Path, classes, per_class: int, size, name, seed: int, fmt: str = "jpg") -> None:
    """Class k's images: random views of scene k, a real photograph or a part of one (fixture_images.py), at
    `folder`/name(label, n), so a pretrained body tells the classes apart as it tells photographs apart."""
    rng = np.random.default_rng(seed)
    for k, label in enumerate(classes):
        for n in range(1, per_class + 1):
            img = scene_view(k, size, rng)
            out = folder / name(label, n)
            out.parent.mkdir(parents=True, exist_ok=True)
            img.save(out, quality=90) if fmt == "jpg" else img.save(out)


def _write_pets(spec: DatasetSpec, folder: Path, per_class: int = 8) -> None:
    """Oxford-IIIT Pets' layout: ``images/<Breed>_<n>.jpg``, the label only in the file name, and the split in
    ``annotations/trainval.txt`` and ``annotations/test.txt``.

    Each breed is views of its own photograph or part of one (`_photo_classes`), saved as 96x72 JPEGs
    like shrunken photos. As in the real set: the lists' lines are ``<image> <class id> <species> <breed id>``
    (class ids alphabetical, species 1 cat / 2 dog), ``list.txt`` has both with ``#`` comments on top, one
    image is in neither list, and ``images/`` holds three ``.mat`` files that are not images.
    """
    _photo_classes(folder / spec.images_folder, spec.classes, per_class, (96, 72), lambda c, n: f"{c}_{n}.jpg", 0)
    _write_pets_annotations(spec, folder, per_class)


def _write_pets_annotations(spec: DatasetSpec, folder: Path, per_class: int) -> None:
    by_name = sorted(spec.classes, key=str.lower)
    cats = [c for c in by_name if c[0].isupper()]
    dogs = [c for c in by_name if c[0].islower()]
    trainval, test = [], []
    for breed in by_name:
        species, breed_id = (1, cats.index(breed) + 1) if breed in cats else (2, dogs.index(breed) + 1)
        for n in range(1, per_class + 1):
            if breed == by_name[0] and n == per_class:
                continue  # in neither list, as 41 of the real images are
            line = f"{breed}_{n} {by_name.index(breed) + 1} {species} {breed_id}"
            (trainval if n <= per_class * 5 // 8 else test).append(line)
    notes = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog",
             "#BREED ID: 1-25:Cat 1:12:Dog", "#All images with 1st letter as captial are cat images",
             "#images with small first letter are dog images"]
    annotations = folder / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    for name, lines in (("trainval.txt", trainval), ("test.txt", test), ("list.txt", notes + sorted(trainval + test))):
        (annotations / name).write_text("\n".join(lines) + "\n")
    for n in (100, 101, 102):  # MATLAB files among the real images: Abyssinian_100.mat ...
        (folder / spec.images_folder / f"Abyssinian_{n}.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(108))


def _write_potholes(spec: DatasetSpec, folder: Path, per_class: int = 40) -> None:
    """The Kaggle set's layout: ``normal/<n>.jpg`` and ``potholes/<n>.jpg``.

    A street's asphalt (a view of a gravel photograph); a pothole is a dark, soft-edged hollow in it, a
    normal street has only the road's grain (`fixture_images.road`).
    """
    rng = np.random.default_rng(1)
    for label in ("normal", "potholes"):
        for n in range(1, per_class + 1):
            out = folder / label / f"{n}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            road(label == "potholes", (96, 72), rng).save(out, quality=90)


STANFORD_DOGS_FIXTURE = (
    "n02085620-Chihuahua", "n02088364-beagle", "n02099601-golden_retriever", "n02106662-German_shepherd",
    "n02110063-malamute", "n02110185-Siberian_husky", "n02110958-pug",
)


def _write_stanford_dogs(spec: DatasetSpec, folder: Path, per_class: int = 30) -> None:
    """Stanford Dogs' layout: ``Images/<wnid>-<breed>/<wnid>_<n>.jpg``, seven of its 120 breeds.

    Both studies that use the set (two breeds; six breeds) read this one fixture, as they share the archive.
    """
    _photo_classes(folder, STANFORD_DOGS_FIXTURE, per_class, (96, 80),
                    lambda c, n: f"{c}/{c.split('-')[0]}_{n}.jpg", 2)


CLOUD_MISLABELS = {"Ci": "Cu", "Cu": "St", "St": "Ci"}  # the last two photos of each main genus show this one


def _write_clouds(spec: DatasetSpec, folder: Path, per_class: int = 30) -> None:
    """CCSN's layout: ``<genus>/<genus>-N<n>.jpg``, with the three main genera and one more (Cb) to leave out.

    Photo-like skies (`fixture_images.sky`): cirrus, thin white streaks on blue; cumulus, white heaps on
    blue; stratus, a flat grey layer; cumulonimbus, a dark tower. As in any hand-sorted set, a few photos sit
    in the wrong folder: the last two of Ci, Cu and St (``Ci-N29.jpg``, ``Ci-N30.jpg``, ...) show the genus
    `CLOUD_MISLABELS` names, so a cleaning report by top losses has real mistakes to find.
    """
    rng = np.random.default_rng(3)
    for genus in ("Ci", "Cu", "St", "Cb"):
        for n in range(1, per_class + 1):
            shown = CLOUD_MISLABELS[genus] if genus in CLOUD_MISLABELS and n > per_class - 2 else genus
            out = folder / genus / f"{genus}-N{n}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            sky(shown, (96, 72), rng).save(out, quality=90)


def _write_pascal(spec: DatasetSpec, folder: Path, n_images: int = 200) -> None:
    """fastai's PASCAL VOC 2007 layout: ``train/<id>.jpg`` and ``train.csv`` (fname, labels, is_valid).

    Each image holds one to three objects on a grey ground; an object of class k is a view of scene k, a
    photograph (fixture_images.py), pasted in a quarter of the image of its own, and the labels are the
    classes pasted.
    """
    rng = np.random.default_rng(4)
    images = folder / spec.images_folder
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        present = sorted(rng.choice(len(spec.classes), size=int(rng.integers(1, 4)), replace=False).tolist())
        img = _noise(rng, 128, (80, 80), sd=15)
        for k, cell in zip(present, rng.permutation(4)):  # each object in a quarter of its own: none hidden
            x, y = 40 * (cell % 2), 40 * (cell // 2)
            paste_view(img, k, rng, 0.4, 0.5, within=(x, y, x + 40, y + 40))
        name = f"{i:06d}.jpg"
        img.save(images / name, quality=90)
        rows.append(f"{name},{' '.join(spec.classes[k] for k in present)},{i % 5 == 0}")
    (folder / spec.csv_file).write_text("fname,labels,is_valid\n" + "\n".join(rows) + "\n")


def _write_cifar(spec: DatasetSpec, folder: Path, train: int, test: int) -> None:
    """fastai's CIFAR layout: ``train/<class>/<n>_<class>.png``, ``test/<class>/...`` and ``labels.txt``; 32x32."""
    _photo_classes(folder / spec.train_folder, spec.classes, train, (32, 32), lambda c, n: f"{c}/{n}_{c}.png", 5, "png")
    _photo_classes(folder / spec.valid_folder, spec.classes, test, (32, 32), lambda c, n: f"{c}/{n}_{c}.png", 6, "png")
    (folder / "labels.txt").write_text("\n".join(spec.classes) + "\n")


CUB_FIRST_TEN = (
    "Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani", "Crested_Auklet",
    "Least_Auklet", "Parakeet_Auklet", "Rhinoceros_Auklet", "Brewer_Blackbird", "Red_winged_Blackbird",
)


def _write_cub(spec: DatasetSpec, folder: Path, per_class: int = 4) -> None:
    """CUB-200-2011's layout: ``images/<NNN>.<Species>/<Species>_<n>.jpg`` with ``classes.txt``, ``images.txt``,
    ``image_class_labels.txt`` and ``train_test_split.txt``; the last image of each species is for testing.

    The first ten species carry their real names; the other 190 are named ``Species_<NNN>`` in the same scheme.
    """
    names = [f"{k + 1:03d}.{CUB_FIRST_TEN[k] if k < 10 else f'Species_{k + 1:03d}'}" for k in range(200)]
    _photo_classes(folder / "images", names, per_class, (48, 48), lambda c, n: f"{c}/{c.split('.')[1]}_{n:04d}.jpg", 7)
    images, labels, split = [], [], []
    for k, name in enumerate(names):
        for n in range(1, per_class + 1):
            image_id = k * per_class + n
            images.append(f"{image_id} {name}/{name.split('.')[1]}_{n:04d}.jpg")
            labels.append(f"{image_id} {k + 1}")
            split.append(f"{image_id} {int(n < per_class)}")
    boxes = [f"{i} 10.0 8.0 28.0 30.0" for i in range(1, len(images) + 1)]
    for file, lines in (("classes.txt", [f"{k + 1} {n}" for k, n in enumerate(names)]), ("images.txt", images),
                        ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("bounding_boxes.txt", boxes)):
        (folder / file).write_text("\n".join(lines) + "\n")


def without_jfif(jpeg: bytes) -> bytes:
    """The same JPEG with its JFIF (APP0) segment removed and an Exif (APP1) one in its place, as cameras write
    them: it decodes as before, but TFDS's "JFIF in the first bytes" rule calls it corrupt."""
    assert jpeg[:4] == b"\xff\xd8\xff\xe0", "expected a JFIF JPEG"
    app0_end = 4 + int.from_bytes(jpeg[4:6], "big")
    exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00"  # an empty big-endian TIFF directory
    return b"\xff\xd8\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + jpeg[app0_end:]


def _write_cats_vs_dogs(spec: DatasetSpec, folder: Path, per_class: int = 24) -> None:
    """The Microsoft archive's layout: ``PetImages/Cat/<n>.jpg`` and ``PetImages/Dog/<n>.jpg``, corrupt files included.

    As in the real archive, some files are not images: a zero-byte ``Cat/666.jpg``, a truncated JPEG, a text
    file with a .jpg name; and each folder has a ``Thumbs.db``. The loader must report and leave these out.
    Three good photos carry an Exif header and no JFIF one (``Cat/2.jpg``, ``Cat/3.jpg``, ``Dog/2.jpg``): they
    decode, and TFDS's rule counts them as corrupt, as it does many real ones.
    """
    _photo_classes(folder, ("Cat", "Dog"), per_class, (96, 72), lambda c, n: f"{c}/{n}.jpg", 8)
    (folder / "Cat" / "666.jpg").write_bytes(b"")
    whole = (folder / "Dog" / "1.jpg").read_bytes()
    (folder / "Dog" / "11702.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "Dog" / "9999.jpg").write_text("<html>this was a web page, not a photo</html>")
    for name in ("Cat/2.jpg", "Cat/3.jpg", "Dog/2.jpg"):
        (folder / name).write_bytes(without_jfif((folder / name).read_bytes()))
    for label in ("Cat", "Dog"):
        (folder / label / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 not an image")


FIXTURE_MAKERS: dict[str, Callable[[DatasetSpec, Path], None]] = {
    "mnist": _write_mnist,
    "pets": _write_pets,
    "potholes": _write_potholes,
    "huskies": _write_stanford_dogs,
    "dogs6": _write_stanford_dogs,
    "clouds": _write_clouds,
    "pascal_2007": _write_pascal,
    "cifar10": lambda spec, folder: _write_cifar(spec, folder, train=20, test=5),
    "cifar100": lambda spec, folder: _write_cifar(spec, folder, train=8, test=2),
    "cub200": _write_cub,
    "birds10": _write_cub,
    "cats_vs_dogs": _write_cats_vs_dogs,
    "fashion_mnist": write_fashion_mnist_fixture,  # idx files first, then the real reader's class folders
    **SMALL_SET_WRITERS,  # study 11's noodles, leaves and butterflies (fixtures_small_sets.py)
}


_CIFAR_SIZES = {"cifar10": dict(train=20, test=5), "cifar100": dict(train=8, test=2)}


def write_layout(name: str, folder: Path | str, **sizes: int) -> Path:
    """Write dataset `name`'s fixture into `folder` with other sizes (``per_class=``, ``n_images=``, or
    ``train=``/``test=`` for CIFAR): the rehearsal mirror's archives are the same layouts, made larger."""
    spec, folder = get_spec(name), Path(folder)
    if name in _CIFAR_SIZES:
        _write_cifar(spec, folder, **{**_CIFAR_SIZES[name], **sizes})
    else:
        FIXTURE_MAKERS[name](spec, folder, **sizes)
    return folder


def make_fixture(name: str, root: Path | str = "data/fixtures") -> Path:
    """Write the fixture for dataset `name` under `root` (once) and return its folder.

    The folder is built beside its final place and renamed into it when complete, so an interrupted
    run never leaves a half fixture that a later run would mistake for a whole one.
    """
    spec = get_spec(name)
    if name not in FIXTURE_MAKERS:
        raise KeyError(f"no fixture for {name!r}; there are fixtures for: {', '.join(sorted(FIXTURE_MAKERS))}")
    folder = Path(root) / spec.archive_root
    stamp = folder.with_name(f".{folder.name}.writers")  # beside the folder: the layout stays the real one's
    digest = writers_digest()
    if folder.is_dir() and stamp.is_file() and stamp.read_text() == digest:
        return folder
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    FIXTURE_MAKERS[name](spec, building)
    if not (folder.is_dir() and stamp.is_file() and stamp.read_text() == digest):  # no other process was quicker
        if folder.is_dir():  # written by other writers than these: set aside and replaced
            stale = folder.with_name(f"{folder.name}.stale-{os.getpid()}")
            try:
                folder.rename(stale)
            except OSError:
                pass
            shutil.rmtree(stale, ignore_errors=True)
        # stamped before it appears, so a process that finds the folder never takes it for an older writers' one
        # and removes it under its user (as one that came between the rename and a later stamp would)
        partial = stamp.with_name(f"{stamp.name}.{os.getpid()}")
        partial.write_text(digest)
        partial.replace(stamp)  # whole or not there: a reader never meets a half-written stamp
        try:
            building.rename(folder)
            return folder
        except OSError:  # another process finished the same fixture first: theirs is as good as ours
            if not folder.is_dir():
                raise
    shutil.rmtree(building, ignore_errors=True)
    return folder


@lru_cache(maxsize=1)  # the code cannot change under a running process: read and hash it once
def writers_digest() -> str:
    """A digest of the code that writes fixtures (the modules of every writer in `FIXTURE_MAKERS`, and
    fixture_images.py): `make_fixture` rewrites a cached fixture when it changes, so that no run reads
    images that older writers made."""
    from . import fixture_images

    sources = {Path(inspect.getsourcefile(f)) for f in FIXTURE_MAKERS.values()} | {Path(fixture_images.__file__)}
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(sources))).hexdigest()
