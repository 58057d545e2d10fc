"""The study table: every study's settings as data, and the rule that explicit values win over fixture mode."""

from __future__ import annotations

import dataclasses

import pytest
import timm

from vision_studies.models import SCRATCH_MODELS
from vision_studies.registry import DATASETS
from vision_studies.studies import STUDIES, ConfigError, parameters, resolve_config


@pytest.mark.parametrize("study", STUDIES.values(), ids=lambda s: s.name)
def test_every_entry_is_complete_and_its_names_resolve(study):
    fields = {f.name for f in parameters(type(study.full))}
    assert study.full.study == study.name and study.dataset in DATASETS
    assert set(study.fixture) <= fields, "fixture mode changes only parameters the study has"
    assert all(f.metadata["help"] for f in parameters(type(study.full)))
    assert dataclasses.is_dataclass(study.full) and study.full.__dataclass_params__.frozen
    for config in (resolve_config(study), resolve_config(study, fixture=True)):
        for arch in getattr(config, "archs", ()) or (config.arch,):
            assert arch in SCRATCH_MODELS or timm.is_model(arch), arch
        for name in getattr(config, "datasets", ()):
            assert name in DATASETS


def test_fixture_mode_changes_only_what_was_left_alone():
    full = STUDIES["08_pets"].full
    fixture = STUDIES["08_pets"].fixture
    config = resolve_config("08", {"FIXTURE": True, "ARCH": "resnet18", "EPOCHS": 2, "IMAGE_SIZE": 96,
                                   "BATCH_SIZE": full.batch_size})
    assert (config.arch, config.epochs, config.image_size) == ("resnet18", 2, 96)  # differ from the cell: given
    assert config.batch_size == fixture["batch_size"]  # still the cell's own value: left alone
    assert config.lr == fixture["lr"] and config.seed == full.seed


def test_a_keyword_always_wins_even_when_it_equals_the_full_mode_default():
    full = STUDIES["08_pets"].full
    config = resolve_config("08", fixture=True, epochs=full.epochs, image_size=full.image_size)
    assert (config.epochs, config.image_size) == (full.epochs, full.image_size)
    assert config.arch == STUDIES["08_pets"].fixture["arch"]


def test_full_mode_is_the_table_and_a_notebook_value_wins():
    assert resolve_config("05", {"FIXTURE": False, "EPOCHS": 3}).epochs == 3
    config = resolve_config("05")
    assert dataclasses.replace(config, output_dir="") == STUDIES["05_mnist"].full


@pytest.mark.parametrize("given, message", [
    (dict(epochs="three"), "EPOCHS should be a whole number"),
    (dict(pretrained=1), "PRETRAINED should be True or False"),
    (dict(no_such=1), "05_mnist has no parameter NO_SUCH"),
])
def test_a_wrong_value_is_named(given, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("05", **given)


def test_lists_from_papermill_become_the_tables_tuples():
    config = resolve_config("11", {"DATASETS": ["dogs6"], "FIXTURE": True})
    assert config.datasets == ("dogs6",) and config.archs == STUDIES["11_backbone_comparison"].fixture["archs"]


def test_every_transfer_study_fine_tunes_the_offline_lite0_in_fixture_mode():
    from vision_studies.studies import arch_pretrained, check_config
    from vision_studies.weights import OFFLINE_WEIGHTS

    scratch_lessons = {"05_mnist"}  # LeNet-5; 06's, 10's and 11's scratch CNNs are extra notebook parts
    for name in set(STUDIES) - scratch_lessons:
        config = resolve_config(name, fixture=True)
        assert config.arch in OFFLINE_WEIGHTS and config.pretrained, name
        check_config(config)  # 11 mixes a CNN from scratch into ARCHS under PRETRAINED = True
    comparison = resolve_config("11", fixture=True)
    assert [arch_pretrained(a, comparison.pretrained) for a in comparison.archs] == [False, True]
    with pytest.raises(ConfigError, match="learns from scratch here"):  # one ARCH keeps the strict rule
        check_config(resolve_config("05", pretrained=True))
