"""ONNX: the exported graph on onnxruntime must agree with PyTorch on the fixture images."""

from __future__ import annotations

import numpy as np
import pytest
import timm
from fastai.data.transforms import get_image_files
from safetensors.torch import save_file

from vision_studies.data import dataloaders
from vision_studies.export import export_learner, load_exported
from vision_studies.models import build_learner
from vision_studies.onnx_export import ONNX_FILE, OnnxPredictor, export_onnx
from vision_studies.train import fit, seed_everything


@pytest.fixture(scope="module")
def exported(pets, tmp_path_factory):
    """A trained resnet10t with ImageNet normalisation (its body from a local weights file), exported."""
    spec, path = pets
    tmp = tmp_path_factory.mktemp("onnx")
    seed_everything(0)
    weights = tmp / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), weights)
    # presize=False: the learner reads the original files, as the predictors given those files do
    dls = dataloaders(spec, path, 32, batch_size=32, augment="none", presize=False)
    learn = build_learner(dls, "resnet10t", weights=weights, path=tmp)
    fit(learn, 1, 1e-3)
    return learn, export_learner(learn, tmp / "export", include_pickle=False, arch="resnet10t", image_size=32,
                                 dataset="pets")


def test_onnx_agrees_with_pytorch_on_every_fixture_image(pets, exported):
    learn, folder = exported
    onnx_file = export_onnx(folder)
    assert onnx_file == folder / ONNX_FILE and onnx_file.stat().st_size > 1_000_000  # the weights are inside

    spec, path = pets
    images = sorted(get_image_files(path / spec.images_folder))
    torch_preds = load_exported(folder).predict(images)
    onnx_preds = OnnxPredictor(folder, threads=1).predict(images, batch_size=50)  # batches of any size
    assert np.abs(onnx_preds.probs - torch_preds.probs).max() < 1e-4
    assert onnx_preds.labels == torch_preds.labels
    assert (onnx_preds.probs.argmax(1) == torch_preds.probs.argmax(1)).all()
    # and the PyTorch side is the learner itself: what get_preds gives on its validation images
    items = learn.dls.valid_ds.items
    valid = list(items["path"]) if hasattr(items, "columns") else list(items)
    probs, _ = learn.get_preds(ds_idx=1)
    assert np.abs(OnnxPredictor(folder).predict(valid).probs - probs.numpy()).max() < 1e-4

    single = OnnxPredictor(folder).predict(images[0])  # a batch of one, too
    assert single.probs.shape == (1, len(learn.dls.vocab)) and single.labels == torch_preds.labels[:1]


def test_missing_onnx_file_says_how_to_make_it(exported, tmp_path):
    _, folder = exported
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        OnnxPredictor(folder, onnx_file=tmp_path / "nope.onnx")
