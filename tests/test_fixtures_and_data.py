"""Fixtures in their real dataset's layout, and the loaders that read them, checked against the disk."""

from __future__ import annotations

import hashlib
import re

import pytest

from vision_studies.data import dataloaders, prepare_dataset
from vision_studies.fixtures import make_fixture
from vision_studies.registry import DATASETS, PET_BREEDS, get_spec


def _digest_tree(folder):
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_registry_entries_are_complete():
    for spec in DATASETS.values():
        assert spec.url.startswith("https://") and spec.licence and spec.homepage
        assert spec.md5 or spec.sha256, f"{spec.name} has no checksum"
        assert len(set(spec.classes)) == len(spec.classes)


def test_unknown_dataset_error_lists_the_known_ones():
    with pytest.raises(KeyError, match="mnist.*pets"):
        get_spec("imagenet")


@pytest.mark.parametrize("name", ["mnist", "pets"])
def test_fixtures_are_deterministic_and_small(name, tmp_path):
    a, b = make_fixture(name, tmp_path / "a"), make_fixture(name, tmp_path / "b")
    assert _digest_tree(a) == _digest_tree(b)
    assert sum(p.stat().st_size for p in a.rglob("*") if p.is_file()) < 2_000_000


def test_mnist_fixture_has_mnist_layout(mnist):
    spec, path = mnist
    assert {p.name for p in path.iterdir()} == {"training", "testing"}
    for split in ("training", "testing"):
        assert sorted(p.name for p in (path / split).iterdir()) == list(spec.classes)
    assert len(list(path.rglob("*.png"))) == 1797  # every digit scikit-learn ships


def test_pets_fixture_names_every_breed_as_the_real_set_does(pets):
    spec, path = pets
    names = [p.name for p in (path / "images").iterdir()]
    labels = {re.match(spec.label_regex, n).group(1) for n in names}
    assert labels == set(PET_BREEDS) and len(labels) == 37
    assert "Abyssinian_1.jpg" in names and "great_pyrenees_3.jpg" in names


def test_mnist_loader_uses_the_official_split(mnist):
    spec, path = mnist
    dls = dataloaders(spec, path, 28, batch_size=32, augment="digits")
    assert len(dls.train_ds) == len(list((path / "training").rglob("*.png")))
    assert len(dls.valid_ds) == len(list((path / "testing").rglob("*.png")))
    x, y = dls.one_batch()
    assert x.shape == (32, 1, 28, 28)  # grayscale stays one channel
    # the label of an item is its folder's name
    item = dls.valid_ds.items[0]
    assert dls.vocab[dls.valid_ds[0][1]] == item.parent.name


def test_pets_loader_reads_labels_from_file_names(pets):
    spec, path = pets
    dls = dataloaders(spec, path, 64, batch_size=16, augment="light", seed=1)
    assert len(dls.train_ds) + len(dls.valid_ds) == len(list((path / "images").glob("*.jpg")))
    assert len(dls.valid_ds) == round(0.2 * (len(dls.train_ds) + len(dls.valid_ds)))
    for i in range(5):
        assert dls.vocab[dls.train_ds[i][1]] == re.match(spec.label_regex, dls.train_ds.items[i].name).group(1)
    assert dls.one_batch()[0].shape == (16, 3, 64, 64)
    same_seed = dataloaders(spec, path, 64, batch_size=16, seed=1)
    assert list(same_seed.valid_ds.items) == list(dls.valid_ds.items)


def test_missing_dataset_folder_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_dataset"):
        dataloaders(get_spec("pets"), tmp_path / "nowhere", 64)


def test_wrong_layout_is_reported_not_loaded_empty(tmp_path):
    (tmp_path / "training").mkdir()
    with pytest.raises(ValueError, match="no images found.*training/<class>"):
        dataloaders(get_spec("mnist"), tmp_path, 28)


def test_a_missing_split_is_reported(mnist, tmp_path):
    import shutil

    shutil.copytree(mnist[1] / "training", tmp_path / "training")
    with pytest.raises(ValueError, match="1437 training and 0 validation"):
        dataloaders(get_spec("mnist"), tmp_path, 28)


def test_unknown_augmentation_preset_names_the_choices(mnist):
    spec, path = mnist
    with pytest.raises(ValueError, match="digits"):
        dataloaders(spec, path, 28, augment="wild")
