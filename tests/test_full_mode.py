"""Full mode made correct from published evidence: checksum schemes, source layouts, credentials, splits, the
sources override, and every dataset prepared from the rehearsal's loopback mirror in its real layout.

Checked against real references where installed: fastdownload's own `path_stats` and fastai's own
download_checks.py; Python's zipfile `peek`, which TFDS's cats_vs_dogs rule calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import types
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from loopback import serving

from vision_studies.data import items_table, prepare_dataset
from vision_studies.download import ChecksumError, first_mib_md5
from vision_studies.registry import DATASETS, get_spec
from vision_studies.sources import MissingCredentials, SourcesFileError, fetch_dataset, read_sources


@pytest.fixture
def server():
    with serving() as s:  # /private/ paths want `server.authorization`, set by each test
        yield s


@pytest.fixture(scope="module")
def mirror_archives(tmp_path_factory):
    """Every rehearsal archive, built once for this module (a few seconds)."""
    from vision_studies.mirror import ARCHIVES, build_archive

    folder = tmp_path_factory.mktemp("mirror")
    return {a.filename: build_archive(a, folder) for a in ARCHIVES}


# 1. fastai's checksums are of the first MiB ------------------------------------------------------------------

def test_first_mib_md5_equals_fastdownloads_path_stats(mirror_archives):
    from fastdownload import path_stats

    archive = mirror_archives["mnist_png.tgz"]
    assert archive.stat().st_size > 2**20  # over 1 MiB, where the first-MiB md5 and the whole md5 differ
    assert path_stats(archive) == (archive.stat().st_size, first_mib_md5(archive))
    assert first_mib_md5(archive) != hashlib.md5(archive.read_bytes()).hexdigest()


def test_registry_fastai_entries_are_fastais_own_values_in_its_scheme():
    import fastai.data
    from fastdownload import checks_module, read_checks

    checks = read_checks(checks_module(fastai.data))
    fastai_entries = [s for s in DATASETS.values() if s.url in checks]
    assert {s.name for s in fastai_entries} >= {"mnist", "pets", "pascal_2007", "cifar10", "cifar100", "cub200", "birds10"}
    for spec in fastai_entries:
        assert (spec.size, spec.md5) == checks[spec.url], spec.name
        assert spec.checksum_scheme == "fastai_first_mib", spec.name


def test_a_fastai_archive_over_a_mib_verifies_in_fastais_scheme(server, tmp_path, mirror_archives):
    from fastdownload import path_stats

    archive = mirror_archives["mnist_png.tgz"]
    server.files["/mnist_png.tgz"] = archive.read_bytes()
    size, md5 = path_stats(archive)  # what fastai would publish for this file
    spec = replace(get_spec("mnist"), url=f"{server.url}/mnist_png.tgz", size=size, md5=md5)
    folder = fetch_dataset(spec, tmp_path / "data", progress=False)
    assert len(items_table(spec, folder)) == 1797
    # a change after the first MiB is not seen by fastai's scheme; one inside it is, and the file is removed
    bad = bytearray(archive.read_bytes())
    bad[100] ^= 0xFF
    server.files["/bad.tgz"] = bytes(bad)
    with pytest.raises(ChecksumError, match="first MiB"):
        fetch_dataset(replace(spec, url=f"{server.url}/bad.tgz", archive_root="other"), tmp_path / "d2", progress=False)
    assert not list((tmp_path / "d2" / "archives").glob("*.tgz"))


# 2. CCSN is Dataverse's CCSN.zip, with __MACOSX/ ---------------------------------------------------------------

def test_ccsn_is_dataverse_datafile_with_its_md5():
    spec = get_spec("clouds")
    assert spec.url == "https://dataverse.harvard.edu/api/access/datafile/3569338"
    assert (spec.archive_name, spec.md5, spec.checksum_scheme) == ("CCSN.zip", "0787f50947a3f65630a7463206316fd3", "md5")


def test_ccsn_zip_unpacks_to_its_genera_and_leaves_macos_metadata_out(server, tmp_path, mirror_archives):
    archive = mirror_archives["CCSN.zip"]
    names = zipfile.ZipFile(archive).namelist()
    assert any(n.startswith("__MACOSX/CCSN_v2/Ci/._") for n in names)  # as the real zip made on a Mac
    server.files["/datafile/3569338"] = archive.read_bytes()
    spec = replace(get_spec("clouds"), url=f"{server.url}/datafile/3569338",
                   md5=hashlib.md5(archive.read_bytes()).hexdigest())
    folder = fetch_dataset(spec, tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / "CCSN_v2"
    assert not [p for p in (tmp_path / "data").rglob("*") if p.name.startswith("._") or p.name == "__MACOSX"]
    table = items_table(spec, folder)
    assert set(table["label"]) == {"Ci", "Cu", "St"} and len(table) == 3 * 160  # no Cb; 160 a genus: mirror.ARCHIVES


# 3. Kaggle's access token -------------------------------------------------------------------------------------

@pytest.fixture
def no_kaggle(monkeypatch, tmp_path):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))


def _potholes(server, mirror_archives):
    server.files["/private/potholes.zip"] = mirror_archives["pothole-detection-dataset.zip"].read_bytes()
    return replace(get_spec("potholes"), url=f"{server.url}/private/potholes.zip")


def test_kaggle_api_token_is_sent_as_a_bearer_token(server, tmp_path, monkeypatch, no_kaggle, mirror_archives):
    spec = _potholes(server, mirror_archives)
    server.authorization = "Bearer KGAT_0123456789abcdef"
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_0123456789abcdef")
    folder = fetch_dataset(spec, tmp_path / "data", progress=False)
    assert set(items_table(spec, folder)["label"]) == {"normal", "potholes"}
    assert server.seen == ["Bearer KGAT_0123456789abcdef"]


def test_kaggle_api_token_from_colab_secrets(server, tmp_path, monkeypatch, no_kaggle, mirror_archives):
    # Colab's own module, as a learner's runtime has it: google.colab.userdata.get(name)
    userdata = types.SimpleNamespace(get=lambda name: {"KAGGLE_API_TOKEN": "KGAT_secret"}[name],
                                     SecretNotFoundError=KeyError)
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)
    spec = _potholes(server, mirror_archives)
    server.authorization = "Bearer KGAT_secret"
    fetch_dataset(spec, tmp_path / "data", progress=False)
    assert server.seen == ["Bearer KGAT_secret"]


def test_legacy_kaggle_key_still_works_and_missing_says_how(server, tmp_path, monkeypatch, no_kaggle, mirror_archives):
    spec = _potholes(server, mirror_archives)
    with pytest.raises(MissingCredentials, match="KAGGLE_API_TOKEN.*Colab.*KAGGLE_USERNAME.*DATA_FOLDER"):
        fetch_dataset(spec, tmp_path / "data", progress=False)
    server.authorization = "Basic " + base64.b64encode(b"user:key").decode()
    monkeypatch.setenv("KAGGLE_USERNAME", "user")
    monkeypatch.setenv("KAGGLE_KEY", "key")
    assert fetch_dataset(spec, tmp_path / "data", progress=False) == tmp_path / "data" / "potholes"


# 4. CUB's classes from classes.txt, extra folders by their raw names ---------------------------------------------

def test_cub_extra_folder_with_raw_folder_names_joins_the_datasets_classes(data_root, tmp_path):
    spec, path = prepare_dataset("cub200", fixture=True, root=data_root)
    classes = [line.split(" ", 1)[1].split(".", 1)[1] for line in (path / "classes.txt").read_text().splitlines()]
    extra = tmp_path / "ebird"
    source = next((path / "images" / "001.Black_footed_Albatross").glob("*.jpg"))
    for folder in ("001.Black_footed_Albatross", "Laysan_Albatross"):  # the raw name, and the class name
        (extra / folder).mkdir(parents=True)
        (extra / folder / "x.jpg").write_bytes(source.read_bytes())
    table = items_table(spec, path, extra_train_folder=extra)
    assert set(table["label"]) == set(classes) and len(classes) == 200
    (extra / "999.Not_a_bird").mkdir()
    (extra / "999.Not_a_bird" / "y.jpg").write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match="Not_a_bird.*classes.txt"):
        items_table(spec, path, extra_train_folder=extra)


# 5. Pets' official split -----------------------------------------------------------------------------------------

def test_pets_uses_its_official_trainval_and_test_lists(data_root):
    spec, path = prepare_dataset("pets", fixture=True, root=data_root)
    assert spec.split_lists == ("annotations/trainval.txt", "annotations/test.txt")
    test = {line.split()[0] for line in (path / "annotations/test.txt").read_text().splitlines()}
    trainval = {line.split()[0] for line in (path / "annotations/trainval.txt").read_text().splitlines()}
    table = items_table(spec, path)
    stems = table["path"].map(lambda p: Path(p).stem)
    assert set(stems[table["is_valid"]]) == test and set(stems[~table["is_valid"]]) == trainval
    on_disk = {p.stem for p in (path / "images").glob("*.jpg")}
    assert len(table) == len(test | trainval) < len(on_disk)  # an image in neither list is not used


# 6. cats vs dogs: TFDS's rule against undecodable files ----------------------------------------------------------

def test_tfds_jfif_rule_counts_differently_from_undecodable_files(mirror_archives, tmp_path):
    from vision_studies.images import find_bad_images, lacks_jfif_marker

    archive = mirror_archives["kagglecatsanddogs_5340.zip"]
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path)
        members = [n for n in z.namelist() if n.endswith(".jpg")]
        # TFDS's own test, on the zip member as it calls it: `b"JFIF" not in fobj.peek(10)`
        tfds = {n for n in members if b"JFIF" not in z.open(n).peek(10)}
    ours = {n for n in members if lacks_jfif_marker(tmp_path / n)}
    assert ours == tfds and len(tfds) == 5
    undecodable = {p.relative_to(tmp_path).as_posix() for p in (b.path for b in find_bad_images([tmp_path / n for n in members]))}
    assert len(undecodable) == 3 and undecodable != tfds  # Exif-only photos decode; a truncated JFIF does not


# 7. published checksums pinned, https -----------------------------------------------------------------------------

def test_published_checksums_are_pinned_and_https():
    for name in ("huskies", "dogs6"):  # tensorflow_datasets/url_checksums/stanford_dogs.txt
        spec = get_spec(name)
        assert (spec.size, spec.sha256, spec.checksum_scheme) == (
            793579520, "a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58", "sha256")
    assert get_spec("clouds").md5 == "0787f50947a3f65630a7463206316fd3"
    unpinned = sorted(s.name for s in DATASETS.values() if not (s.md5 or s.sha256 or s.files))
    # no published checksum found for these (registry and small_sets comments): trusted on first use
    assert unpinned == ["butterflies", "cats_vs_dogs", "leaves", "potholes"]
    assert all(s.url.startswith("https://") for s in DATASETS.values() if not s.files)


def test_pinned_sha256_refuses_other_bytes_on_a_fresh_runtime(server, tmp_path, mirror_archives):
    server.files["/images.tar"] = mirror_archives["images.tar"].read_bytes()
    spec = replace(get_spec("huskies"), url=f"{server.url}/images.tar")  # the registry's pinned size and sha256
    with pytest.raises(ChecksumError, match="expected 793579520 bytes"):
        fetch_dataset(spec, tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "recorded_sha256.json").exists()  # nothing trusted on first use


# The sources override --------------------------------------------------------------------------------------------

def test_sources_override_serves_a_dataset_from_a_mirror_in_its_scheme(server, tmp_path, monkeypatch, mirror_archives):
    from fastdownload import path_stats

    archive = mirror_archives["oxford-iiit-pet.tgz"]
    server.files["/mirror/pets.tgz"] = archive.read_bytes()
    size, md5 = path_stats(archive)
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps({"pets": {"url": f"{server.url}/mirror/pets.tgz", "size": size, "md5": md5}}))
    monkeypatch.setenv("VISION_STUDIES_SOURCES", str(sources))
    spec, folder = prepare_dataset("pets", root=tmp_path / "data")
    assert (tmp_path / "data" / "archives" / "oxford-iiit-pet.tgz").is_file()  # the registry's file name kept
    assert (folder / "annotations" / "trimaps").is_dir() and list((folder / "images").glob("*.mat"))
    assert items_table(spec, folder)["is_valid"].sum() == len((folder / "annotations/test.txt").read_text().splitlines())


@pytest.mark.parametrize("content, message", [
    ("{not json", r"not valid JSON"),
    ('["pets"]', r"expected a JSON object"),
    ('{"petz": {"url": "https://x/y.tgz"}}', r"'petz' is not a dataset in the registry; the names are .*pets"),
    ('{"pets": {"url": "ftp://x/y.tgz", "size": 1, "md5": "' + "0" * 32 + '"}}', r"entry 'pets': 'url' must be"),
    ('{"pets": {"url": "https://x/y.tgz", "md5": "' + "0" * 32 + '"}}', r"entry 'pets'.*fastai_first_mib.*size, md5"),
    ('{"pets": {"url": "https://x/y.tgz", "size": 1, "md5": "abc"}}', r"'md5' must be 32 hex digits"),
    ('{"clouds": {"url": "https://x/CCSN.zip", "sha256": "' + "0" * 64 + '"}}', r"'clouds'.*whole file's md5.*not sha256"),
    ('{"potholes": {"url": "https://x/p.zip"}}', r"publishes no checksum, so its mirror must"),
    ('{"pets": {"url": "https://x/y.tgz", "sizes": 1}}', r"unknown key\(s\) sizes"),
])
def test_a_malformed_sources_file_names_file_entry_and_fix(tmp_path, content, message):
    sources = tmp_path / "sources.json"
    sources.write_text(content)
    with pytest.raises(SourcesFileError, match=message) as error:
        read_sources(sources)
    assert str(sources) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_a_missing_sources_file_says_which_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_STUDIES_SOURCES", str(tmp_path / "nope.json"))
    with pytest.raises(SourcesFileError, match="nope.json.*VISION_STUDIES_SOURCES"):
        prepare_dataset("mnist", root=tmp_path / "data")


# Every dataset through the rehearsal mirror ----------------------------------------------------------------------

EXPECTED = {  # rows of items_table, validation rows, classes, from the mirror's sizes in vision_studies.mirror
    "mnist": (1797, 360, 10), "pets": (295, 110, 37), "potholes": (300, None, 2), "huskies": (80, 16, 2),
    "dogs6": (240, 48, 6), "clouds": (480, 96, 3), "pascal_2007": (300, 60, 20), "cifar10": (500, 100, 10),
    "cifar100": (1000, 200, 100), "cub200": (800, 200, 200), "birds10": (40, 10, 10), "cats_vs_dogs": (360, None, 2),
    "noodles": (180, 45, 2), "butterflies": (400, 80, 10),  # leaves: sorted by hand first (test_small_sets.py)
}


def test_every_dataset_prepares_from_the_mirror_in_its_real_layout(tmp_path, monkeypatch):
    from vision_studies.mirror import serve_mirror

    with serve_mirror(tmp_path / "mirror") as sources:
        monkeypatch.setenv("VISION_STUDIES_SOURCES", str(sources))
        for name, (rows, valid, classes) in EXPECTED.items():
            spec, folder = prepare_dataset(name, root=tmp_path / "data")
            table = items_table(spec, folder)
            labels = {l for ls in table["label"] for l in (ls if isinstance(ls, list) else [ls])}
            assert (len(table), len(labels)) == (rows, classes), name
            if valid is not None:
                assert table["is_valid"].sum() == valid, name
    assert (tmp_path / "data" / "attributes.txt").is_file()  # CUB's top-level file, beside CUB_200_2011/
    assert (tmp_path / "data" / "PetImages" / "Cat" / "Thumbs.db").is_file()
    assert (tmp_path / "data" / "PetImages" / "bad_images.csv").is_file()
