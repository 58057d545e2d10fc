"""Fixtures in their real dataset's layout, and the loaders that read them, checked against the disk."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from vision_studies.data import dataloaders, holdout_test, items_table, prepare_dataset
from vision_studies.fixtures import FIXTURE_MAKERS, make_fixture
from vision_studies.registry import DATASETS, PET_BREEDS, get_spec


def _digest_tree(folder):
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_registry_entries_are_complete():
    for spec in DATASETS.values():
        assert spec.url.startswith(("https://", "http://")) and spec.licence and spec.homepage, spec.name
        assert spec.layout in ("class_folders", "filename_regex", "label_csv", "official_split"), spec.name
        assert len(set(spec.classes)) == len(spec.classes), spec.name
    assert set(FIXTURE_MAKERS) == set(DATASETS)  # every dataset has a fixture


# The entries whose source publishes no checksum (trusted on first use, the reason in the registry's comment).
# Every other entry must carry one, so a checksum lost from the registry, or a new entry without one, fails here.
PUBLISHES_NO_CHECKSUM = {"potholes", "cats_vs_dogs", "leaves", "butterflies"}
DIGEST = {"md5": r"[0-9a-f]{32}", "sha256": r"[0-9a-f]{64}"}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registry_entry_carries_a_checksum_in_its_sources_scheme(name):
    spec = DATASETS[name]
    files = getattr(spec, "files", ())
    if files:  # several files, each with the md5 and sha256 their source publishes
        for file, md5, sha256 in files:
            assert re.fullmatch(DIGEST["md5"], md5) and re.fullmatch(DIGEST["sha256"], sha256), (name, file)
        return
    if name in PUBLISHES_NO_CHECKSUM:
        assert not (spec.md5 or spec.sha256 or spec.checksum_scheme), f"{name} has a checksum now: drop it from the list"
        return
    assert spec.checksum_scheme in ("fastai_first_mib", "md5", "sha256"), (name, spec.checksum_scheme)
    digest = spec.sha256 if spec.checksum_scheme == "sha256" else spec.md5
    assert re.fullmatch(DIGEST["sha256" if spec.checksum_scheme == "sha256" else "md5"], digest or ""), (name, digest)
    if spec.checksum_scheme == "fastai_first_mib":  # fastdownload's path_stats is the pair (size, md5 of 1 MiB)
        assert spec.size and spec.size > 2**20, name


def test_unknown_dataset_error_lists_the_known_ones():
    with pytest.raises(KeyError, match="mnist.*pets"):
        get_spec("imagenet")


@pytest.mark.parametrize("name", sorted(FIXTURE_MAKERS))
def test_fixtures_are_deterministic_and_small(name, tmp_path):
    a, b = make_fixture(name, tmp_path / "a"), make_fixture(name, tmp_path / "b")
    assert _digest_tree(a) == _digest_tree(b)
    # generated at test time, never committed; still small enough to make in about a second
    assert sum(p.stat().st_size for p in a.rglob("*") if p.is_file()) < 3_000_000


def test_mnist_fixture_has_mnist_layout(mnist):
    spec, path = mnist
    assert {p.name for p in path.iterdir()} == {"training", "testing"}
    for split in ("training", "testing"):
        assert sorted(p.name for p in (path / split).iterdir()) == list(spec.classes)
    assert len(list(path.rglob("*.png"))) == 1797  # every digit scikit-learn ships


def test_pets_fixture_names_every_breed_as_the_real_set_does(pets):
    spec, path = pets
    names = [p.name for p in (path / "images").glob("*.jpg")]  # images/ also holds .mat files, as the real one
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
    item = Path(dls.valid_ds.items.iloc[0]["path"])
    assert dls.vocab[dls.valid_ds[0][1]] == item.parent.name


def test_pets_loader_reads_labels_from_file_names(pets):
    spec, path = pets
    dls = dataloaders(spec, path, 64, batch_size=16, augment="light", seed=1)
    # the official split: annotations/trainval.txt trains, annotations/test.txt validates
    lines = lambda name: (path / "annotations" / name).read_text().splitlines()  # noqa: E731
    assert (len(dls.train_ds), len(dls.valid_ds)) == (len(lines("trainval.txt")), len(lines("test.txt")))
    for i in range(5):
        name = Path(dls.train_ds.items.iloc[i]["path"]).name
        assert dls.vocab[dls.train_ds[i][1]] == re.match(spec.label_regex, name).group(1)
    assert dls.one_batch()[0].shape == (16, 3, 64, 64)
    same_seed = dataloaders(spec, path, 64, batch_size=16, seed=1)
    assert list(same_seed.valid_ds.items["path"]) == list(dls.valid_ds.items["path"])


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


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_fixture_loads_and_its_table_matches_the_disk(name, data_root):
    spec, path = prepare_dataset(name, fixture=True, root=data_root)
    table = items_table(spec, path)
    assert table["is_valid"].any() and not table["is_valid"].all()
    labels = {l for ls in table["label"] for l in (ls if isinstance(ls, list) else [ls])}
    if spec.classes:
        assert labels == set(spec.classes), name  # the fixture has every class, named as the real set names it
    root = path / spec.images_folder if spec.layout == "filename_regex" else path  # Leeds' masks are not photos
    on_disk = [p for p in root.rglob("*") if p.suffix in (".png", ".jpg")]
    if spec.class_folders:  # only the chosen folders take part
        on_disk = [p for p in on_disk if p.parent.name in spec.class_folders]
    left_out = 3 if spec.screen_images else 0  # the cats-vs-dogs fixture plants three broken files
    if spec.split_lists:  # an image in neither of the dataset's own lists is not used (Pets has 41)
        listed = [line for f in spec.split_lists for line in (path / f).read_text().splitlines()
                  if not spec.class_folders or line.split("/")[0] in spec.class_folders]  # Food-101: "<class>/<id>"
        left_out = len(on_disk) - len(listed)
    assert len(table) == len(on_disk) - left_out, name
    dls = dataloaders(spec, path, 32, batch_size=4, table=table)
    x, y = dls.one_batch()
    assert x.shape[-2:] == (32, 32)


def test_multi_label_rows_carry_every_label(data_root):
    spec, path = prepare_dataset("pascal_2007", fixture=True, root=data_root)
    table = items_table(spec, path)
    csv = (path / "train.csv").read_text().splitlines()[1:]
    first = csv[0].split(",")
    assert table.loc[0, "label"] == first[1].split(" ")
    dls = dataloaders(spec, path, 32, batch_size=4, table=table)
    assert dls.one_batch()[1].shape == (4, 20)  # one yes/no per VOC class


def test_official_split_follows_train_test_split_txt(data_root):
    spec, path = prepare_dataset("cub200", fixture=True, root=data_root)
    table = items_table(spec, path)
    flags = [line.split()[1] for line in (path / "train_test_split.txt").read_text().splitlines()]
    assert int(table["is_valid"].sum()) == flags.count("0") and len(table) == len(flags)
    birds10 = items_table(get_spec("birds10"), path)
    assert sorted(set(birds10["label"])) == sorted(get_spec("birds10").classes) and len(birds10) == 40


def test_extra_training_images_join_the_training_side_only(data_root, tmp_path):
    spec, path = prepare_dataset("cub200", fixture=True, root=data_root)
    extra = tmp_path / "ebird" / "Laysan_Albatross"
    extra.mkdir(parents=True)
    source = next((path / "images" / "002.Laysan_Albatross").iterdir())
    for i in range(3):
        (extra / f"ebird_{i}.jpg").write_bytes(source.read_bytes())
    base, more = items_table(spec, path), items_table(spec, path, extra_train_folder=tmp_path / "ebird")
    assert len(more) == len(base) + 3 and more["is_valid"].sum() == base["is_valid"].sum()


def test_cifar100_reads_nested_superclass_folders_too(tmp_path, data_root):
    """Some copies of CIFAR-100 nest classes in superclass folders; the label is the innermost folder."""
    spec, flat = prepare_dataset("cifar100", fixture=True, root=data_root)
    nested = tmp_path / "cifar100"
    for split in ("train", "test"):
        for folder in (flat / split).iterdir():
            target = nested / split / "a_superclass" / folder.name
            target.mkdir(parents=True)
            for f in folder.iterdir():
                (target / f.name).write_bytes(f.read_bytes())
    a, b = items_table(spec, flat), items_table(spec, nested)
    assert sorted(a["label"]) == sorted(b["label"]) and a["is_valid"].sum() == b["is_valid"].sum()


def test_user_folder_is_read_like_a_dataset(tmp_path, data_root):
    _, potholes = prepare_dataset("potholes", fixture=True, root=data_root)
    spec, path = prepare_dataset("potholes", folder=potholes)
    assert spec.classes == () and path == potholes
    assert set(items_table(spec, path)["label"]) == {"normal", "potholes"}
    with pytest.raises(FileNotFoundError, match="DATA_FOLDER"):
        prepare_dataset("potholes", folder=tmp_path / "missing")


def test_labels_outside_the_registry_are_named(tmp_path, data_root):
    _, potholes = prepare_dataset("potholes", fixture=True, root=data_root)
    odd = tmp_path / "potholes"
    for label in ("normal", "puddles"):
        (odd / label).mkdir(parents=True)
        for f in list((potholes / "normal").iterdir())[:5]:
            (odd / label / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match="puddles"):
        items_table(get_spec("potholes"), odd)


def test_holdout_test_never_touches_validation(data_root):
    spec, path = prepare_dataset("dogs6", fixture=True, root=data_root)
    table = items_table(spec, path)
    rest, test = holdout_test(table, 0.1, seed=0)
    assert len(rest) + len(test) == len(table) and not test["is_valid"].any()
    assert rest["is_valid"].sum() == table["is_valid"].sum()
    assert not set(rest["path"]) & set(test["path"])
    assert list(holdout_test(table, 0.1, seed=0)[1]["path"]) == list(test["path"])  # seeded


def test_loader_turns_exif_rotated_photos_upright(tmp_path):
    """A phone photo stored sideways with an EXIF orientation tag reaches the model upright."""
    from PIL import Image

    from vision_studies.data import user_folder_spec

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):
            img = Image.new("RGB", (40, 20), (200, 10, 10) if label == "a" else (10, 10, 200))
            exif = Image.Exif()
            exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
            img.save(tmp_path / label / f"{i}.jpg", exif=exif.tobytes())
    spec = user_folder_spec("sideways")
    dls = dataloaders(spec, tmp_path, 32, batch_size=2, augment="none")
    assert dls.train_ds[0][0].size == (20, 40)  # width and height swapped: upright


def test_a_hand_made_folder_with_an_empty_class_is_refused(tmp_path, data_root):
    from vision_studies.labels import LabelError

    _, potholes = prepare_dataset("potholes", fixture=True, root=data_root)
    mine = tmp_path / "mine"
    (mine / "potholes").mkdir(parents=True)
    (mine / "normal").mkdir()
    for f in list((potholes / "potholes").iterdir())[:4]:
        (mine / "potholes" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(LabelError, match="normal has no images"):
        prepare_dataset("potholes", folder=mine)
