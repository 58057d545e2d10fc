"""Export, load and push: the exported model must predict as the learner it came from, and load safely."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from fastai.data.block import DataBlock, MultiCategoryBlock
from fastai.data.transforms import RandomSplitter, get_image_files
from fastai.losses import BCEWithLogitsLossFlat
from fastai.vision.augment import Resize, ResizeMethod
from fastai.vision.data import ImageBlock
from fastai.vision.learner import vision_learner
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import save_file

from vision_studies.data import dataloaders, prepare_dataset
from vision_studies.errors import VisionStudiesError
from vision_studies.export import (
    CONFIG_FILE, PICKLE_FILE, WEIGHTS_FILE, ExportError, ExportNotFound, export_learner, load_exported, read_config,
)
from vision_studies.hub import MissingToken, push_to_hub
from vision_studies.metrics import evaluate, results_record
from vision_studies.models import build_learner
from vision_studies.predict import ImageNotFound, preprocess
from vision_studies.registry import get_spec
from vision_studies.train import fit, seed_everything

FAKE_TOKEN = "hf_" + "FakeTokenForTestsOnly" * 2


def valid_paths(learn) -> list[str]:
    """The validation images of a learner, in get_preds order (the items are a table or a list of paths)."""
    items = learn.dls.valid_ds.items
    return [str(p) for p in (items["path"] if hasattr(items, "columns") else items)]


@pytest.fixture(scope="module")
def pets_learner(pets, tmp_path_factory):
    """resnet10t from "pretrained" weights in a local file, so fastai adds the ImageNet normalisation."""
    spec, path = pets
    tmp = tmp_path_factory.mktemp("pets_learner")
    seed_everything(0)
    weights = tmp / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), weights)
    # presize=False: the learner reads the original files, as a predictor given those files does
    dls = dataloaders(spec, path, 32, batch_size=32, augment="none", presize=False)
    learn = build_learner(dls, "resnet10t", weights=weights, path=tmp)
    run = fit(learn, 1, 1e-3)
    record = results_record(
        "08_pets", arch="resnet10t", pretrained=True, epochs=1, image_size=32, fixture=True, device=run.device,
        seconds=run.seconds, metrics=evaluate(learn), lr=1e-3, batch_size=32,
    )
    return learn, record


@pytest.fixture(scope="module")
def pets_export(pets_learner, tmp_path_factory):
    learn, record = pets_learner
    return export_learner(learn, tmp_path_factory.mktemp("exports") / "pets", record, arch="resnet10t", image_size=32,
                          dataset="pets")


def test_export_writes_safe_files_config_and_card(pets_learner, pets_export):
    learn, record = pets_learner
    assert sorted(p.name for p in pets_export.iterdir()) == [
        "README.md", CONFIG_FILE, PICKLE_FILE, WEIGHTS_FILE, "pyproject.toml"
    ]
    config = read_config(pets_export)
    assert config.arch == "resnet10t" and config.classes == tuple(learn.dls.vocab)
    assert config.image_size == 32 and config.image_mode == "RGB" and not config.multi_label
    # the normalisation build_learner recorded: timm's statistics for the pretrained body
    timm_cfg = timm.create_model("resnet10t", pretrained=False).pretrained_cfg
    assert config.mean == pytest.approx(timm_cfg["mean"]) and config.std == pytest.approx(timm_cfg["std"])
    # the dataset as the registry describes it travels with the weights
    spec = get_spec("pets")
    assert (config.dataset, config.dataset_title, config.licence, config.homepage) == (
        "pets", spec.title, spec.licence, spec.homepage)

    card = ModelCard.load(pets_export / "README.md")
    assert card.data.pipeline_tag == "image-classification" and "fastai" in card.data.tags
    assert f"| accuracy | {round(record['metrics']['accuracy'], 4)} |" in card.text
    assert "Oxford-IIIT Pets" in card.text and "tiny fixture dataset" in card.text  # data and limits
    assert f"licence: {get_spec('pets').licence}" in card.text
    assert "- epochs: 1" in card.text and "- lr: 0.001" in card.text  # training setup


def test_loaded_export_predicts_as_the_learner(pets_learner, pets_export):
    learn, _ = pets_learner
    probs, _ = learn.get_preds(ds_idx=1)
    predicted = load_exported(pets_export).predict(valid_paths(learn), batch_size=16)
    np.testing.assert_allclose(predicted.probs, probs.numpy(), atol=1e-5)
    assert predicted.labels == [learn.dls.vocab[i] for i in probs.argmax(dim=1)]


def test_grayscale_lenet_export_predicts_as_the_learner(mnist, tmp_path):
    spec, path = mnist
    seed_everything(0)
    learn = build_learner(dataloaders(spec, path, 28, batch_size=128, augment="none"), "lenet5", pretrained=False, path=tmp_path)
    fit(learn, 1, 1e-2)
    folder = export_learner(learn, tmp_path / "mnist", include_pickle=False, arch="lenet5", image_size=28, dataset="mnist")
    assert not (folder / PICKLE_FILE).exists()
    config = read_config(folder)
    assert (config.arch, config.image_mode, config.mean) == ("lenet5", "L", None)  # from scratch: no normalisation
    probs, _ = learn.get_preds(ds_idx=1)
    predicted = load_exported(folder).predict(valid_paths(learn))
    np.testing.assert_allclose(predicted.probs, probs.numpy(), atol=1e-5)


def test_lazy_scratch_model_is_rebuilt_at_the_exported_size(mnist, tmp_path):
    """NaiveCNN's dense layer learns its input size from a first batch: the rebuild must do the same."""
    spec, path = mnist
    dls = dataloaders(spec, path, 16, batch_size=128, augment="none", presize=False)  # the original files, as predict
    learn = build_learner(dls, "naive_cnn", pretrained=False, path=tmp_path)
    folder = export_learner(learn, tmp_path / "naive", include_pickle=False, arch="naive_cnn", image_size=16,
                            dataset="mnist")
    probs, _ = learn.get_preds(ds_idx=1)
    np.testing.assert_allclose(load_exported(folder).predict(valid_paths(learn)).probs, probs.numpy(), atol=1e-5)


class _Planted:
    """Unpickling this makes a folder: the stand-in for arbitrary code in a malicious model.pkl."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_planted_pickle_is_never_run_by_the_default_load(pets_export, tmp_path):
    folder = tmp_path / "repo"
    shutil.copytree(pets_export, folder)
    marker = tmp_path / "pickle_ran"
    torch.save(_Planted(marker), folder / PICKLE_FILE)

    predictor = load_exported(folder)
    assert predictor.learner is None
    assert not marker.exists()

    # Without the safetensors, the default path refuses and says why, still without unpickling.
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ExportNotFound, match="trust_pickle=True only if you trust"):
        load_exported(folder)
    assert not marker.exists()

    # The planted file is live: the opt-in path runs it (so the assertions above could fail).
    with pytest.raises(AttributeError):  # what it unpickled is no Learner
        load_exported(folder, trust_pickle=True)
    assert marker.is_dir()


def test_from_pretrained_fastai_loads_our_export(pets, pets_export, monkeypatch):
    """huggingface_hub's own fastai loader, offline, on the folder as we wrote it: the same network."""
    from huggingface_hub import from_pretrained_fastai

    spec, path = pets
    monkeypatch.chdir(pets_export.parent)  # it takes a repo-id-shaped name (name or owner/name), not a long path
    learn = from_pretrained_fastai(pets_export.name)
    predictor = load_exported(pets_export)
    batch = preprocess(sorted(get_image_files(path / spec.images_folder))[:8], predictor.config)
    with torch.inference_mode():
        theirs = learn.model.eval()(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(theirs, predictor.logits(batch), atol=1e-5)


def test_several_images_are_prepared_as_each_alone_in_their_order(pets, pets_export, tmp_path):
    """Several images are opened and resized on threads: the batch must be each image's own, in order, and a
    missing file among them is still named."""
    spec, path = pets
    config = load_exported(pets_export).config
    files = sorted(get_image_files(path / spec.images_folder))[:12]
    together = preprocess(files, config)
    np.testing.assert_array_equal(together, np.concatenate([preprocess(f, config) for f in files]))
    with pytest.raises(ImageNotFound, match="gone.jpg"):
        preprocess([*files[:5], tmp_path / "gone.jpg", *files[5:]], config)


def test_config_and_weights_problems_name_the_file(pets_export, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(pets_export, folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "classes": config["classes"][:5]}))
    with pytest.raises(ExportError, match=rf"{WEIGHTS_FILE} does not fit.*wrong shapes") as wrong:
        load_exported(folder)
    # one base class for the command line to catch, and the built-in older callers catch
    assert isinstance(wrong.value, VisionStudiesError) and isinstance(wrong.value, ValueError)
    del config["image_size"]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{CONFIG_FILE}: missing image_size"):
        load_exported(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "image_size": 32, "image_mode": "CMYK"}))
    with pytest.raises(ValueError, match='image_mode should be "RGB" or "L"'):
        load_exported(folder)


def _breed_and_species(path):  # no annotations: fastai casts results to them
    breed = path.name.rsplit("_", 1)[0]
    return [breed, "cat" if breed[0].isupper() else "dog"]  # Pets capitalises cat breeds


def test_multi_label_export_uses_sigmoid_and_the_threshold(pets, tmp_path):
    spec, path = pets
    seed_everything(0)
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock), get_items=get_image_files, get_y=_breed_and_species,
        splitter=RandomSplitter(0.2, seed=0), item_tfms=Resize(32, method=ResizeMethod.Squish),
    )
    dls = block.dataloaders(path / spec.images_folder, bs=32, num_workers=0, device="cpu")
    learn = vision_learner(dls, "resnet10t", pretrained=False, loss_func=BCEWithLogitsLossFlat(thresh=0.3), path=tmp_path)
    learn.fit(1, 1e-2)
    # vision_learner called directly keeps no record of n_in or normalisation: the caller says them
    folder = export_learner(learn, tmp_path / "multi", include_pickle=False, arch="resnet10t", image_size=32,
                            multi_label=True, threshold=0.3, image_mode="RGB", normalisation=None)
    config = read_config(folder)
    assert config.multi_label and config.threshold == 0.3 and {"cat", "dog"} <= set(config.classes)

    probs, _ = learn.get_preds(ds_idx=1)  # fastai applies the loss's sigmoid
    predictor = load_exported(folder)
    predicted = predictor.predict(valid_paths(learn))
    np.testing.assert_allclose(predicted.probs, probs.numpy(), atol=1e-5)
    assert predicted.labels == [[learn.dls.vocab[i] for i in np.flatnonzero(row > 0.3)] for row in probs.numpy()]
    assert any(len(labels) > 1 for labels in predicted.labels)  # several labels per image: not softmax
    scores = predictor.scores(valid_paths(learn)[0])
    assert list(scores) == sorted(predicted.labels[0], key=lambda c: -scores[c]) and min(scores.values(), default=1) > 0.3


def test_multi_label_card_names_pascal_and_its_licence(tmp_path):
    """Study 04's export: multi-label because the registry says so, and its card names PASCAL VOC 2007."""
    spec, path = prepare_dataset("pascal_2007", fixture=True, root=tmp_path / "data")
    learn = build_learner(dataloaders(spec, path, 32, batch_size=16, augment="none"), "resnet10t", pretrained=False,
                          path=tmp_path)
    record = {"study": "04_multilabel", "fixture": True, "dataset": "pascal_2007"}
    folder = export_learner(learn, tmp_path / "voc", record, include_pickle=False, arch="resnet10t", image_size=32,
                            dataset="pascal_2007", threshold=0.35)
    config = read_config(folder)
    assert config.multi_label and config.threshold == 0.35 and config.mean is None  # from scratch: no normalisation
    assert (config.dataset, config.licence) == ("pascal_2007", spec.licence)
    card = ModelCard.load(folder / "README.md").text
    assert "PASCAL VOC 2007" in card and f"licence: {spec.licence}" in card and "- threshold: 0.35" in card


def test_export_refuses_a_config_that_does_not_rebuild_the_learner(pets_learner, tmp_path):
    """What the caller says is checked against the weights before anything is written."""
    learn, _ = pets_learner
    with pytest.raises(ExportError, match="resnet18"):
        export_learner(learn, tmp_path / "wrong", arch="resnet18", image_size=32, dataset="pets")
    assert not (tmp_path / "wrong").exists()
    with pytest.raises(ExportError, match="multi_label="):  # no registry entry, no say: no guess
        export_learner(learn, tmp_path / "unsaid", arch="resnet10t", image_size=32)


def test_export_of_own_data_claims_no_dataset(mnist, tmp_path):
    spec, path = mnist
    learn = build_learner(dataloaders(spec, path, 28, batch_size=64, augment="none"), "lenet5", pretrained=False,
                          path=tmp_path)
    folder = export_learner(learn, tmp_path / "own", include_pickle=False, arch="lenet5", image_size=28,
                            multi_label=False)
    config = read_config(folder)
    assert (config.dataset, config.licence, config.image_mode) == (None, None, "L")  # L: the learner's record
    assert "no licence is recorded" in ModelCard.load(folder / "README.md").text


# ------------------------------------------------------------------------------------------------ the Hub


def test_dry_run_lists_the_export_only_and_never_shows_the_token(pets_export, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    folder = tmp_path / "to_push"
    shutil.copytree(pets_export, folder)
    (folder / ".env").write_text("SECRET=1\n")  # a stray file must not be uploaded
    (folder / "notes.txt").write_text("draft\n")
    caplog.set_level(logging.DEBUG)
    result = push_to_hub(folder, "someone/pets-resnet10t", dry_run=True)
    print(result)
    assert result.dry_run and result.url is None
    assert [name for name, _ in result.files] == ["README.md", CONFIG_FILE, PICKLE_FILE, WEIGHTS_FILE, "pyproject.toml"]
    assert dict(result.files)[WEIGHTS_FILE] == (folder / WEIGHTS_FILE).stat().st_size
    out = capsys.readouterr()
    assert "would upload to someone/pets-resnet10t" in out.out
    written = "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())
    assert FAKE_TOKEN not in out.out + out.err + caplog.text + written


class _Refuser(BaseHTTPRequestHandler):
    """Records each request and refuses it: a loopback server that is not the Hub and does not pretend to be."""

    seen: list[tuple[str, str, str | None]] = []

    def _refuse(self):
        self.seen.append((self.command, self.path, self.headers.get("authorization")))
        body = b'{"error": "refused by the test server"}'
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args):
        pass


def test_push_sends_the_token_from_the_usual_lookup_and_never_prints_it(pets_export, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    _Refuser.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(HfHubHTTPError) as refused:
            push_to_hub(pets_export, "someone/pets-resnet10t", endpoint=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    # the first call creates the repo, with the token huggingface_hub found in HF_TOKEN, as a bearer header
    method, path, auth = _Refuser.seen[0]
    assert (method, path) == ("POST", "/api/repos/create") and auth == f"Bearer {FAKE_TOKEN}"
    out = capsys.readouterr()
    assert "401" in str(refused.value)
    assert FAKE_TOKEN not in str(refused.value) + out.out + out.err + caplog.text


def test_push_without_a_token_says_how_to_log_in(pets_export, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    with pytest.raises(MissingToken, match="hf auth login.*HF_TOKEN") as missing:
        push_to_hub(pets_export, "someone/pets-resnet10t")
    assert isinstance(missing.value, VisionStudiesError) and isinstance(missing.value, PermissionError)
    with pytest.raises(ExportNotFound, match="export_learner"):
        push_to_hub(tmp_path, "someone/pets-resnet10t", dry_run=True)


def test_predict_opens_files_as_training_does_and_names_a_missing_one(pets_export, tmp_path):
    """An EXIF-rotated photo is predicted upright (as the loader trains on it); a wrong path names itself."""
    from PIL import Image

    from vision_studies.images import load_image

    predictor = load_exported(pets_export)
    upright = Image.new("RGB", (48, 32), "white")
    upright.paste((200, 30, 30), (0, 0, 24, 32))  # left half red: turning the picture changes what the model sees
    rotated = upright.transpose(Image.Transpose.ROTATE_270)  # stored turned; EXIF 6 says "turn it back"
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    rotated.save(path, exif=exif, quality=95)
    assert load_image(path).size == upright.size  # the loader's own rule, the reference
    np.testing.assert_allclose(predictor.predict(path).probs, predictor.predict(load_image(path)).probs, atol=1e-6)
    missing = tmp_path / "no-such-photo.jpg"
    with pytest.raises(ImageNotFound, match="no-such-photo.jpg"):
        predictor.predict(missing)
