"""In-memory loaders (memory_data.py) and the pipeline's official-test split, on Fashion-MNIST's fixture."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from fastai.data.core import TfmdDL

from vision_studies import pipeline
from vision_studies.data import dataloaders, prepare_dataset
from vision_studies.memory_data import MemoryDL, NotInMemory, RandomShiftFlip, memory_dataloaders
from vision_studies.models import build_learner, count_parameters
from vision_studies.studies import resolve_config


@pytest.fixture(scope="module")
def fashion(data_root):
    return prepare_dataset("fashion_mnist", fixture=True, root=data_root)


@pytest.fixture(scope="module")
def loaders(fashion):
    spec, path = fashion
    return dataloaders(spec, path, 28, batch_size=16, augment="none", device="cpu")


def _everything(dl):
    """Every (image, label) batch of `dl` in dataset order, as two tensors."""
    batches = list(dl.new(shuffle=False, drop_last=False))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_memory_loaders_give_the_per_item_loaders_items_and_labels(loaders):
    held = memory_dataloaders(loaders)
    assert all(isinstance(dl, MemoryDL) for dl in held.loaders)
    assert list(held.vocab) == list(loaders.vocab)
    for per_item, in_memory in zip(loaders.loaders, held.loaders):
        x, y = _everything(per_item)
        mx, my = _everything(in_memory)
        assert len(x) == len(in_memory.dataset) > 0
        assert type(mx) is type(x) and type(my) is type(y)  # TensorImageBW, TensorCategory: show_batch and decode work
        assert torch.equal(mx, x), "the same pixels, scaled the same way"
        assert torch.equal(my, y), "the same labels in the same order"
    # a shuffled training epoch visits training images, each at most once (drop_last leaves out the rest)
    every = {tuple(row.tolist()) for row in _everything(held.train)[0].flatten(1)}
    seen = [tuple(row.tolist()) for row in torch.cat([x for x, _ in held.train]).flatten(1)]
    assert len(seen) == len(held.train) * held.train.bs and len(set(seen)) == len(seen) and set(seen) <= every


def test_an_epoch_in_memory_is_the_one_fastais_own_iteration_makes(loaders):
    """MemoryDL.__iter__ against fastai's DataLoader.__iter__ on the same loader: the same shuffled order from
    the same random draws, the same batches (drop_last or not), the random batch transforms drawing alike."""
    from fastai.data.load import DataLoader

    held = memory_dataloaders(loaders, batch_tfms=[RandomShiftFlip(pad=2)])
    for dl in (held.train, held.train.new(drop_last=False, bs=7), held.valid):
        epochs = []
        for iterate in (iter, DataLoader.__iter__):
            dl.rng.seed(3), torch.manual_seed(5)
            epochs.append([(x.clone(), y.clone(), type(x), type(y)) for x, y in iterate(dl)])
        ours, fastais = epochs
        assert len(ours) == len(fastais) == len(dl) > 1
        for (x, y, tx, ty), (fx, fy, ftx, fty) in zip(ours, fastais):
            assert torch.equal(x, fx) and torch.equal(y, fy) and (tx, ty) == (ftx, fty)


def test_new_items_are_read_from_their_files_again(loaders):
    held = memory_dataloaders(loaders)
    test = held.test_dl(loaders.valid_ds.items, with_labels=True)
    assert type(test) is TfmdDL and not isinstance(test, MemoryDL)
    assert torch.equal(_everything(test)[0], _everything(held.valid)[0])
    preds = held.valid.new(shuffle=False)  # what Learner.get_preds makes of the validation loader
    assert isinstance(preds, MemoryDL) and torch.equal(_everything(preds)[1], _everything(loaders.valid)[1])


def test_random_changes_per_item_are_refused_not_baked_in(fashion):
    spec, path = fashion
    per_item_augmented = dataloaders(spec, path, 28, batch_size=16, augment="light", device="cpu")
    if not any(getattr(t, "split_idx", None) == 0 for t in per_item_augmented.train.after_item.fs):
        pytest.fail("expected the CPU loaders to augment item by item (item_augment.py)")
    with pytest.raises(NotInMemory, match="at random"):
        memory_dataloaders(per_item_augmented)


def test_shift_and_flip_moves_training_images_only(loaders):
    torch.manual_seed(0)
    held = memory_dataloaders(loaders, [RandomShiftFlip(2)])
    plain_valid, plain_train = _everything(loaders.valid)[0], _everything(loaders.train)[0]
    assert torch.equal(_everything(held.valid)[0], plain_valid), "validation images are never moved"
    moved = _everything(held.train)[0]
    assert not torch.equal(moved, plain_train)
    # each training image is one of the 5 x 5 shifts of the original, mirrored or not
    padded = torch.nn.functional.pad(plain_train, (2, 2, 2, 2))
    for i in range(8):
        candidates = [c for dy in range(5) for dx in range(5)
                      for c in (padded[i, :, dy:dy + 28, dx:dx + 28], padded[i, :, dy:dy + 28, dx:dx + 28].flip(-1))]
        assert any(torch.equal(moved[i], c) for c in candidates), f"image {i} is not a shift or flip of itself"
    with pytest.raises(ValueError, match="pad=-1"):
        RandomShiftFlip(-1)


def test_the_split_keeps_the_official_test_set_apart(data_root):
    config = resolve_config("12_fashion_mnist", fixture=True, data_dir=str(data_root))
    assert config.test_pct > 0, "study 12 keeps its official test set apart in both modes"
    data = pipeline.data(config)
    assert data.test is not None
    test_paths, train_paths = set(data.test["path"]), set(data.table["path"])
    assert not test_paths & train_paths
    assert all("/testing/" in p for p in test_paths) and len(test_paths) == 100  # the fixture's 10 per class
    assert all("/training/" in p for p in train_paths) and len(train_paths) == 300
    assert int(data.table["is_valid"].sum()) == round(300 * 5_000 / 60_000) == len(data.dls.valid_ds)
    assert not set(data.dls.valid_ds.items["path"]) & test_paths
    before = pipeline.data(replace(config, test_pct=0.0))  # TEST_PCT 0: the official test images validate
    assert before.test is None and set(before.dls.valid_ds.items["path"]) == test_paths


def test_the_third_convolution_sees_more_for_few_more_parameters(loaders):
    two = build_learner(loaders, "small_bn_cnn", pretrained=False)
    three = build_learner(memory_dataloaders(loaders), "small_bn_cnn3", pretrained=False)
    convs = lambda m: [layer for layer in m.modules() if isinstance(layer, torch.nn.Conv2d)]  # noqa: E731
    assert len(convs(two.model)) == 2 and len(convs(three.model)) == 3
    extra = count_parameters(three.model) - count_parameters(two.model)
    assert extra == 64 * 64 * 9 + 2 * 64  # one 3x3 convolution without bias, and its batch norm
    xb, yb = three.dls.one_batch()
    assert three.model(xb).shape == (len(xb), 10)


def test_the_pipeline_holds_small_image_sets_in_memory_and_augments_their_batches(data_root):
    """Study 05's and 12's sets are registry entries with `in_memory`: pipeline.data decodes them once; the
    random changes run on the batches (an item transform would be drawn once for every epoch)."""
    for study in ("05_mnist", "12_fashion_mnist"):
        data = pipeline.data(resolve_config(study, fixture=True, data_dir=str(data_root)))
        assert all(isinstance(dl, MemoryDL) for dl in data.dls.loaders), study
        assert not [t for t in data.dls.train.after_item.fs if getattr(t, "split_idx", None) == 0]
        names = [type(t).__name__ for t in data.dls.train.after_batch.fs]
        assert "FastAffineCoordTfm" in names if study == "05_mnist" else True  # 05's "digits": rotate and zoom
        assert "FastAffineCoordTfm" in pipeline.describe_datablock(data) or study != "05_mnist"
        x, _ = data.dls.valid.one_batch()
        assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1


def test_a_set_too_large_to_hold_is_read_item_by_item_and_says_so(fashion, monkeypatch, capsys):
    import vision_studies.memory_data as memory_data

    spec, path = fashion
    monkeypatch.setattr(memory_data, "MEMORY_BUDGET", 300 * 28 * 28)  # less than the fixture's 400 images take
    dls = dataloaders(replace(spec, in_memory=True), path, 28, batch_size=16, augment="none", device="cpu",
                      in_memory=True)
    assert not isinstance(dls.train, MemoryDL)
    said = capsys.readouterr().out
    assert "fashion_mnist: 400 images at 28 px" in said and "read item by item" in said


def test_decoding_a_large_set_shows_a_bar_and_a_small_one_does_not(loaders, monkeypatch, capsys):
    from vision_studies import memory_data

    memory_dataloaders(loaders)
    assert "images into memory" not in capsys.readouterr().err  # the fixture's few hundred: a fraction of a second
    monkeypatch.setattr(memory_data, "PROGRESS_FROM", 1)  # as Fashion-MNIST's 70,000 images are
    memory_dataloaders(loaders)
    assert f"decoding {len(loaders.train_ds):,} images into memory" in capsys.readouterr().err
