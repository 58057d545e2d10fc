"""Study 11's five sets: the registry entries' evidence, their readers on fixtures and on the rehearsal
mirror's archives, the train / validate / test split (the test set touched once, CUB's and Food-101's own
test images where they have them), and each backbone at its native input size."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from vision_studies.data import has_official_split, holdout_test, items_table, official_test_split, prepare_dataset
from vision_studies.experiment import backbone_settings, native_size
from vision_studies.labels import LabelError
from vision_studies.registry import get_spec
from vision_studies.studies import STUDIES, resolve_config

FIVE = ("noodles", "leaves", "dogs6", "birds10", "butterflies")


def test_study_11_compares_on_seed_003s_five_sets():
    assert STUDIES["11_backbone_comparison"].full.datasets == FIVE
    for name in FIVE:
        assert get_spec(name).url.startswith(("https://", "http://"))


def test_noodles_is_fastais_food101_with_fastais_own_size_and_first_mib_md5():
    import fastai.data.download_checks as checks
    from fastai.data.external import URLs

    source = Path(checks.__file__).read_text()
    published = ast.literal_eval(source[source.index("{"):source.rindex("}") + 1])
    spec = get_spec("noodles")
    assert spec.url == URLs.FOOD and (spec.size, spec.md5) == published[URLs.FOOD]
    assert spec.checksum_scheme == "fastai_first_mib"
    assert "stand-in" in spec.title  # the learner is told it is not seed 003's own noodles


def test_food101_reads_its_own_lists_and_names_pho_and_ramen_noodle_soup(data_root):
    spec, path = prepare_dataset("noodles", fixture=True, root=data_root)
    table = items_table(spec, path)
    folders = {Path(p).parent.name for p in table["path"]}
    assert folders == {"pad_thai", "pho", "ramen"}  # apple_pie and waffles are in the archive, not in the study
    assert set(table.loc[table["path"].str.contains("/pad_thai/"), "label"]) == {"fried_noodles"}
    assert set(table.loc[~table["path"].str.contains("/pad_thai/"), "label"]) == {"noodle_soup"}
    test_list = {line for line in (path / "meta" / "test.txt").read_text().split()}
    listed = {f"{Path(p).parent.name}/{Path(p).stem}" for p in table.loc[table["is_valid"], "path"]}
    assert listed == {e for e in test_list if e.split("/")[0] in folders}


def test_a_listed_food101_image_that_is_missing_is_named(tmp_path):
    from vision_studies.fixtures import make_fixture

    path = make_fixture("noodles", tmp_path)
    gone = next((path / "images" / "ramen").glob("*.jpg"))
    gone.unlink()
    with pytest.raises(ValueError, match=f"ramen/{gone.stem}.*incomplete"):
        items_table(get_spec("noodles"), path)


def test_butterflies_take_their_species_from_the_file_names_code(data_root):
    spec, path = prepare_dataset("butterflies", fixture=True, root=data_root)
    table = items_table(spec, path)
    assert len(table) == 80 and table["label"].nunique() == 10
    row = table[table["path"].str.endswith("0070003.png")].iloc[0]
    assert row["label"] == "Papilio_cresphontes"
    assert not table["path"].str.contains("segmentations").any()  # the masks are not photos


def test_unsorted_leaves_say_how_to_sort_them_and_sorted_ones_read(tmp_path):
    spec = get_spec("leaves")
    from vision_studies.fixtures_small_sets import write_leaves

    write_leaves(spec, tmp_path / "leaves", per_class=4, sorted_by_hand=0)
    with pytest.raises(LabelError, match=r"without species labels.*Leaf_01, Leaf_02 or Leaf_03") as e:
        items_table(spec, tmp_path / "leaves")
    assert str(tmp_path / "leaves") in str(e.value) and isinstance(e.value, ValueError)
    photos = sorted((tmp_path / "leaves").glob("*.jpg"))
    for i, photo in enumerate(photos):  # as a learner sorts them
        (tmp_path / "leaves" / f"Leaf_0{i % 3 + 1}").mkdir(exist_ok=True)
        shutil.move(photo, tmp_path / "leaves" / f"Leaf_0{i % 3 + 1}" / photo.name)
    assert sorted(items_table(spec, tmp_path / "leaves")["label"].unique()) == list(spec.classes)


def test_cubs_official_test_images_are_the_test_set_and_validation_comes_from_training(data_root):
    spec, path = prepare_dataset("birds10", fixture=True, root=data_root)
    assert has_official_split(spec)
    table = items_table(spec, path)
    train, test = official_test_split(table, spec.valid_pct, seed=42)
    split = dict(line.split() for line in (path / "train_test_split.txt").read_text().splitlines())
    ids = {f"{l.split()[1]}": l.split()[0] for l in (path / "images.txt").read_text().splitlines()}
    official_test = {p for p in table["path"] if split[ids[str(Path(p).relative_to(path / "images"))]] == "0"}
    assert set(test["path"]) == official_test and len(test) == 10
    assert not set(train["path"]) & official_test  # validation and training are CUB's training photos only
    assert 0 < train["is_valid"].sum() < len(train)
    again, _ = official_test_split(table, spec.valid_pct, seed=42)
    assert again.equals(train)  # seeded


@pytest.mark.parametrize("name", ["leaves", "butterflies", "dogs6"])
def test_a_set_without_its_own_split_holds_its_test_set_out_of_training(name, data_root):
    spec, path = prepare_dataset(name, fixture=True, root=data_root)
    assert not has_official_split(spec)
    table = items_table(spec, path)
    train, test = holdout_test(table, 0.1, seed=42)
    assert not set(train["path"]) & set(test["path"]) and not test["is_valid"].any()
    assert train["is_valid"].sum() == table["is_valid"].sum()  # the validation set is untouched


def test_the_data_step_of_study_11_uses_cubs_test_images(tmp_path):
    from vision_studies import pipeline

    from dataclasses import replace

    config = replace(resolve_config("11", fixture=True, data_dir=str(tmp_path / "data"),
                                    output_dir=str(tmp_path / "models")), dataset="birds10")  # as notebook 11 does
    data = pipeline.data(config)
    assert len(data.test) == 10 and len(data.dls.train_ds) + len(data.dls.valid_ds) == 30


def test_inception_and_xception_train_at_299_and_vgg_at_224():
    full = {s["arch"]: s for s in backbone_settings(resolve_config("11"))}
    assert full["inception_v3.tv_in1k"]["image_size"] == full["legacy_xception.tf_in1k"]["image_size"] == 299
    assert full["vgg16.tv_in1k"]["image_size"] == full["vgg19.tv_in1k"]["image_size"] == 224
    assert all(s["pretrained"] for s in full.values())
    assert native_size("conv_pool_cnn", 48) == 48
    same = backbone_settings(resolve_config("11", native_size=False))
    assert {s["image_size"] for s in same} == {224}


def test_fixture_mode_keeps_its_own_small_size_and_scratch_cnns_start_from_scratch():
    settings = backbone_settings(resolve_config("11", fixture=True))
    config = resolve_config("11", fixture=True)
    assert {s["image_size"] for s in settings} == {config.image_size}
    assert all(not s["pretrained"] for s in settings if s["arch"] == "conv_pool_cnn")


def test_the_rehearsal_runs_study_11_on_every_set_but_the_one_sorted_by_hand():
    from vision_studies.mirror import rehearsal_parameters, rehearsed_notebooks

    notebook = Path("notebooks/11_backbone_comparison.ipynb")
    parameters = rehearsal_parameters(notebook, "data")
    assert parameters["DATASETS"] == ["noodles", "dogs6", "birds10", "butterflies"]
    assert parameters["NATIVE_SIZE"] is False and parameters["IMAGE_SIZE"] == 32
    assert rehearsed_notebooks([notebook])[0] == [notebook]


def test_the_new_sets_prepare_from_the_mirror_in_their_schemes(tmp_path, monkeypatch):
    from vision_studies.mirror import serve_mirror

    with serve_mirror(tmp_path / "mirror", ("noodles", "leaves", "butterflies")) as sources:
        entries = __import__("json").loads(Path(sources).read_text())
        assert set(entries["noodles"]) == {"url", "size", "md5"}  # fastai's scheme: size and first-MiB md5
        assert set(entries["butterflies"]) == {"url", "size", "sha256"}  # trusted on first use: sha256
        monkeypatch.setenv("VISION_STUDIES_SOURCES", str(sources))
        counts = {}
        for name in ("noodles", "butterflies"):
            spec, folder = prepare_dataset(name, root=tmp_path / "data")
            table = items_table(spec, folder)
            counts[name] = (len(table), int(table["is_valid"].sum()), table["label"].nunique())
        spec, folder = prepare_dataset("leaves", root=tmp_path / "data")
        with pytest.raises(LabelError, match="sorted 177 of them by hand"):
            items_table(spec, folder)
    assert counts == {"noodles": (180, 45, 2), "butterflies": (400, 80, 10)}
    assert len(list(folder.glob("*.jpg"))) == 186  # Caltech's 186 photos, unsorted as the archive holds them
    assert (tmp_path / "data" / "food-101" / "meta" / "classes.txt").is_file()
    assert len(list((tmp_path / "data" / "leedsbutterfly" / "segmentations").glob("*_seg0.png"))) == 400


def test_unsorted_leaves_are_left_out_of_a_run_of_the_other_sets(tmp_path, capsys):
    """A learner's full-mode run of study 11 meets Caltech's leaves unsorted: the other sets still train."""
    from vision_studies.experiment import ready_sets, set_splits
    from vision_studies.fixtures import make_fixture

    folder = make_fixture("leaves", tmp_path / "fixtures")  # where fixture mode reads it
    for photo in list(folder.rglob("*.jpg")):  # as the archive holds them: one folder, no kinds
        shutil.move(photo, folder / photo.name)
    config = resolve_config("11_backbone_comparison", fixture=True, data_dir=str(tmp_path),
                            datasets=("leaves", "butterflies"))
    splits = set_splits(config)
    assert splits["ready"].tolist() == [False, True]
    assert ready_sets(splits) == ["butterflies"]
    assert "Leaf_01, Leaf_02 or Leaf_03" in capsys.readouterr().out  # what to do, printed
