"""Tiny, deterministic, learnable fixture datasets, each in its real dataset's own layout.

A fixture lets CI run a notebook's real code path (the same loader, model and training) in seconds on a
CPU. Each one is written under ``<root>/<spec.archive_root>`` exactly where the real archive would unpack,
with the same file names and label scheme, and classes that differ in a way a small network learns in a
few CPU epochs, so tests can demand better than chance.
"""

from __future__ import annotations

import colorsys
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .registry import DatasetSpec, get_spec

__all__ = ["make_fixture", "FIXTURE_MAKERS"]


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


def _pet_look(breed_index: int) -> tuple[tuple[int, int, int], int]:
    """A breed's colour and background tone: 13 hues times 3 tones tell the 37 breeds apart."""
    hue, tone = breed_index % 13, breed_index // 13
    r, g, b = colorsys.hsv_to_rgb(hue / 13, 0.85, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255)), (40, 128, 215)[tone]


def _write_pets(spec: DatasetSpec, folder: Path, per_class: int = 8) -> None:
    """Oxford-IIIT Pets' layout: ``images/<Breed>_<n>.jpg``, the label only in the file name.

    Each image is a noisy background of the breed's tone with an ellipse ("the pet") of the breed's
    colour at a random place and size, saved as JPEG at 96x72 like a shrunken photo.
    """
    rng = np.random.default_rng(0)
    images = folder / spec.images_folder
    images.mkdir(parents=True, exist_ok=True)
    for k, breed in enumerate(spec.classes):
        colour, tone = _pet_look(k)
        for n in range(1, per_class + 1):
            noise = rng.normal(tone, 20, size=(72, 96, 3)).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(noise)
            w, h = rng.integers(30, 60), rng.integers(25, 50)
            x, y = rng.integers(0, 96 - w), rng.integers(0, 72 - h)
            ImageDraw.Draw(img).ellipse((x, y, x + w, y + h), fill=colour)
            img.save(images / f"{breed}_{n}.jpg", quality=90)
    # The real archive also carries annotations/; the classification studies do not read it.


FIXTURE_MAKERS: dict[str, Callable[[DatasetSpec, Path], None]] = {
    "mnist": _write_mnist,
    "pets": _write_pets,
}


def make_fixture(name: str, root: Path | str = "data/fixtures") -> Path:
    """Write the fixture for dataset `name` under `root` (once) and return its folder.

    The folder is built beside its final place and renamed into it when complete, so an interrupted
    run never leaves a half fixture that a later run would mistake for a whole one.
    """
    spec = get_spec(name)
    if name not in FIXTURE_MAKERS:
        raise KeyError(f"no fixture for {name!r}; there are fixtures for: {', '.join(sorted(FIXTURE_MAKERS))}")
    folder = Path(root) / spec.archive_root
    if folder.is_dir():
        return folder
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    FIXTURE_MAKERS[name](spec, building)
    try:
        building.rename(folder)
    except OSError:  # another process finished the same fixture first: theirs is as good as ours
        shutil.rmtree(building, ignore_errors=True)
        if not folder.is_dir():
            raise
    return folder
