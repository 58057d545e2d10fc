"""Fixtures for study 11's small sets (small_sets.py) in their real layouts: Food-101's noodles, Caltech's
leaves, the Leeds butterflies. `fixtures.FIXTURE_MAKERS` takes these writers; the rehearsal mirror writes the
same layouts larger (`fixtures.write_layout`).

Every class is views of its own photograph or part of one (fixture_images.py), so a pretrained body tells the
classes apart as it tells photographs apart; each set starts at its own scene, so no two sets share a picture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .fixture_images import scene_view
from .registry import DatasetSpec

__all__ = ["SMALL_SET_WRITERS", "write_food101", "write_leaves", "write_leeds_butterflies"]


def _views(out: Path, k: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    img = scene_view(k, size, rng)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, quality=90) if out.suffix == ".jpg" else img.save(out)
    return img


# Two of Food-101's other classes: in the archive and its lists, left out of the noodles study
_OTHER_FOODS = ("apple_pie", "waffles")


def write_food101(spec: DatasetSpec, folder: Path, per_class: int = 16) -> None:
    """Food-101's layout: ``images/<class>/<id>.jpg``; ``meta/train.txt`` and ``meta/test.txt`` list
    ``<class>/<id>`` lines (a quarter of each class for testing, as 250 of the real 1,000), with
    ``meta/classes.txt``, ``meta/labels.txt`` and the same lists as ``meta/train.json``/``test.json``.

    The noodle classes the study reads (pad thai, pho, ramen) and two it leaves out; ids are 6-7 digit
    numbers as the real ones are. Pho and ramen are different scenes that the study names one class.
    """
    import json

    rng = np.random.default_rng(11)
    foods = sorted(_OTHER_FOODS + spec.class_folders)
    lists: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for k, food in enumerate(foods):
        ids = sorted(rng.choice(np.arange(100000, 4000000), size=per_class, replace=False).tolist())
        for n, image_id in enumerate(ids):
            _views(folder / "images" / food / f"{image_id}.jpg", 20 + k, (96, 72), rng)
            split = "test" if n % 4 == 3 else "train"
            lists[split].setdefault(food, []).append(f"{food}/{image_id}")
    meta = folder / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    for split, by_food in lists.items():
        (meta / f"{split}.txt").write_text("".join(f"{e}\n" for food in foods for e in by_food[food]))
        (meta / f"{split}.json").write_text(json.dumps(by_food))
    (meta / "classes.txt").write_text("".join(f"{f}\n" for f in foods))
    (meta / "labels.txt").write_text("".join(f"{f.replace('_', ' ').capitalize()}\n" for f in foods))
    (folder / "README.txt").write_text("Food-101 (Bossard, Guillaumin, Van Gool, ECCV 2014)\n")
    (folder / "license_agreement.txt").write_text("for non-commercial research purposes only\n")


def write_leaves(spec: DatasetSpec, folder: Path, per_class: int = 12, sorted_by_hand: int = 1,
                 width: int = 90) -> None:
    """Caltech's leaves, ``image_<nnnn>.jpg`` (3:2 photos, `width` px wide), in the three folders seed 003
    sorted them into (``Leaf_01/``, ``Leaf_02/``, ``Leaf_03/``); with ``sorted_by_hand=0``, unsorted in one
    folder as the archive holds them (the reader then says how to sort them)."""
    rng = np.random.default_rng(12)
    number = 0
    for k, label in enumerate(spec.classes):
        for _ in range(per_class):
            number += 1
            where = folder / label if sorted_by_hand else folder
            _views(where / f"image_{number:04d}.jpg", 40 + k, (width, width * 2 // 3), rng)


def write_leeds_butterflies(spec: DatasetSpec, folder: Path, per_class: int = 8) -> None:
    """The Leeds Butterfly Dataset's layout: ``images/<code><nnnn>.png`` (``0010001.png``), a palette PNG mask
    ``segmentations/<image>_seg0.png`` for each (index 1 and 3 the butterfly, as the dataset's README says),
    ``descriptions/<code>.txt`` naming each species, and a ``README.txt``."""
    rng = np.random.default_rng(13)
    for k, (code, species) in enumerate(spec.label_names):
        for n in range(1, per_class + 1):
            img = _views(folder / "images" / f"{code}{n:04d}.png", 60 + k, (64, 48), rng)
            mask = Image.new("P", img.size, 0)
            mask.paste(1, (img.width // 4, img.height // 4, 3 * img.width // 4, 3 * img.height // 4))
            (folder / "segmentations").mkdir(parents=True, exist_ok=True)
            mask.save(folder / "segmentations" / f"{code}{n:04d}_seg0.png")
        (folder / "descriptions").mkdir(parents=True, exist_ok=True)
        (folder / "descriptions" / f"{code}.txt").write_text(f"{species.replace('_', ' ')}\n")
    (folder / "README.txt").write_text("Leeds Butterfly Dataset v1.0 (Wang, Markert, Everingham, BMVC 2009)\n")


SMALL_SET_WRITERS: dict[str, Callable[..., None]] = {
    "noodles": write_food101,
    "leaves": write_leaves,
    "butterflies": write_leeds_butterflies,
}
