"""Batches read straight from the presized copies (presized_loader.py) against the trusted reference they
replace: fastai's per-item loader over the same copies, pixel for pixel, random changes included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastai.data.core import TfmdDL
from fastai.torch_core import TensorCategory, TensorImage
from PIL import Image

from vision_studies.data import dataloaders, prepare_dataset, user_folder_spec
from vision_studies.presized_loader import PresizedDL, read_copy

from test_presize import _folder, _photo

SIZE = 48


@pytest.fixture
def photos(tmp_path):
    """Eight photos larger than SIZE (presized) and one smaller (read as it is, by the per-item path)."""
    folder = tmp_path / "set"
    _folder(folder, n=8)
    _photo(40, 30, seed=8).save(folder / "dog" / "small.jpg", quality=95)
    return folder


def _loaders(folder, cache, **kwargs):
    kwargs = dict(batch_size=3, augment="light", device="cpu", presize=cache, seed=1) | kwargs
    return dataloaders(user_folder_spec("pets"), folder, SIZE, **kwargs)


def _epoch(dl, seed: int = 0):
    """Every batch of one epoch in dataset order, the random changes drawn from `seed`."""
    torch.manual_seed(seed)
    return [(x.clone(), y.clone()) for x, y in dl.new(shuffle=False, drop_last=False)]


def test_batches_equal_the_per_item_loaders_random_changes_included(photos, tmp_path):
    dls = _loaders(photos, tmp_path / "cache")
    assert all(isinstance(dl, PresizedDL) for dl in dls.loaders)
    assert dls.train.augment is not None and dls.valid.augment is None  # training images only change
    assert sum(c is None for dl in dls.loaders for c in dl.copies) == 1  # the small photo has no copy
    for dl in dls.loaders:
        per_item = dl.new(cls=TfmdDL)  # fastai's own path: the same Datasets, opener and item transforms
        assert type(per_item) is TfmdDL
        ours, theirs = _epoch(dl), _epoch(per_item)
        assert len(ours) == len(theirs) > 0
        for (x, y), (tx, ty) in zip(ours, theirs):
            assert type(x) is TensorImage and type(y) is TensorCategory  # show_batch and decoding work
            assert torch.equal(x, tx) and torch.equal(y, ty)
    changed = torch.cat([x for x, _ in _epoch(dls.train, seed=0)]) != torch.cat([x for x, _ in _epoch(dls.train, seed=5)])
    assert changed.any(), "other seeds, other random changes"


def test_a_damaged_copy_is_read_from_its_original(photos, tmp_path):
    dls = _loaders(photos, tmp_path / "cache", augment="none")
    before = _epoch(dls.valid)
    copy = next(c for c in dls.valid.copies if c is not None)
    with open(copy, "r+b") as fh:
        fh.truncate(100)  # a disk that filled mid-write
    assert read_copy(copy, SIZE) is None
    after = _epoch(dls.valid)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(before, after))  # the original squishes to the same pixels


def test_workers_serve_every_epoch_each_image_once(photos, tmp_path):
    dls = _loaders(photos, tmp_path / "cache", num_workers=2, batch_size=2)
    every = {tuple(x.flatten().tolist()) for x in torch.cat([x for x, _ in _epoch(dls.valid)])}
    for _ in range(2):  # the second epoch is served by the same worker processes
        seen = [tuple(x.flatten().tolist()) for xb, _ in dls.valid for x in xb]
        assert len(seen) == len(dls.valid.dataset) and set(seen) == every
        labels = torch.cat([y for _, y in dls.train])
        assert len(labels) == len(dls.train) * 2 and set(labels.tolist()) <= {0, 1}
    assert dls.valid._workers is not None and dls.valid._workers._iterator is not None  # kept between epochs
    assert dls.valid.__getstate__()["_workers"] is None  # an export pickles no processes


def test_new_items_and_predictions_read_as_before(photos, tmp_path):
    dls = _loaders(photos, tmp_path / "cache", augment="none")
    test = dls.test_dl(dls.valid_ds.items, with_labels=True)
    assert type(test) is TfmdDL  # a prediction reads its files, as an exported model does
    preds = dls.valid.new(shuffle=False)  # what Learner.get_preds makes of the validation loader
    assert isinstance(preds, PresizedDL) and preds.copies == dls.valid.copies
    # the originals squished against their copies: within JPEG's reduced-scale rounding
    diff = (torch.cat([x for x, _ in _epoch(test)]).float() - torch.cat([x for x, _ in _epoch(preds)]).float()).abs()
    assert diff.mean() < 1.0


def test_loaders_without_copies_stay_per_item(photos, tmp_path):
    assert type(_loaders(photos, tmp_path / "cache", presize=False).train) is TfmdDL


def test_read_copy_takes_only_copies_of_its_size(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "c.ppm")
    assert np.array_equal(read_copy(str(tmp_path / "c.ppm"), SIZE), pixels)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "g.pgm")
    assert np.array_equal(read_copy(str(tmp_path / "g.pgm"), SIZE)[..., 0], pixels[..., 0])
    Image.fromarray(pixels).save(tmp_path / "c.png")
    assert read_copy(str(tmp_path / "c.png"), SIZE) is None  # not a Netpbm file
    assert read_copy(str(tmp_path / "c.ppm"), SIZE + 1) is None  # another size
    assert read_copy(str(tmp_path / "missing.ppm"), SIZE) is None
    (tmp_path / "short.ppm").write_bytes((tmp_path / "c.ppm").read_bytes()[:-1])  # one byte short: no shifted rows
    assert read_copy(str(tmp_path / "short.ppm"), SIZE) is None


def test_a_multi_label_set_stays_per_item(data_root):
    spec, path = prepare_dataset("pascal_2007", fixture=True, root=data_root)
    dls = dataloaders(spec, path, 32, batch_size=8, device="cpu")
    assert spec.multi_label and type(dls.train) is TfmdDL  # its targets are label lists, not one class
