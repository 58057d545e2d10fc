"""Photo-like fixture images: real photographs, deterministic views, classes a pretrained body tells apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vision_studies.fixture_images import PHOTOS, SCENES, photo, scene_view, sky
from vision_studies.fixtures import CLOUD_MISLABELS, make_fixture, writers_digest


@pytest.mark.parametrize("name", [name for name, _ in PHOTOS])
def test_every_photo_ships_with_scikit_image(name):
    img = photo(name)  # no download: a photo that needs one raises here
    assert img.mode == "RGB" and max(img.size) == 256 and np.asarray(img).std() > 10, name


def test_views_repeat_with_the_seed_and_vary_within_it():
    a = [np.asarray(scene_view(k, (48, 40), np.random.default_rng(7))) for k in (0, 25, 200)]
    b = [np.asarray(scene_view(k, (48, 40), np.random.default_rng(7))) for k in (0, 25, 200)]
    assert all(x.shape == (40, 48, 3) and np.array_equal(x, y) for x, y in zip(a, b))
    rng = np.random.default_rng(7)
    first, second = np.asarray(scene_view(0, (48, 40), rng)), np.asarray(scene_view(0, (48, 40), rng))
    assert not np.array_equal(first, second)  # each image of a class is a new view
    assert len(set(SCENES)) == len(SCENES) >= 200  # CUB's 200 species each get a scene of their own
    with pytest.raises(ValueError, match="scene 999 does not exist"):
        scene_view(999, (8, 8), rng)


def test_the_pretrained_body_tells_the_scenes_apart():
    """The reason for photo-like fixtures: EfficientNet-Lite0's real ImageNet features (weights.py) put views
    of one scene nearer to each other than to views of the other scenes, at a fixture's 48 px."""
    import timm

    from vision_studies.weights import offline_weights

    model = timm.create_model("tf_efficientnet_lite0", num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(offline_weights("tf_efficientnet_lite0", "data/weights"))),
                              pretrained=True).eval()
    rng = np.random.default_rng(0)
    classes, views = range(0, len(SCENES), 6), 4  # every sixth scene: wholes, quarters and ninths
    images = np.stack([np.asarray(scene_view(k, (48, 48), rng)) for k in classes for _ in range(views)])
    x = (torch.tensor(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5  # timm's mean = std = 0.5
    with torch.no_grad():
        features = torch.nn.functional.normalize(model(x), dim=1)
    similarity = features @ features.T
    similarity.fill_diagonal_(-2)
    labels = torch.arange(len(classes)).repeat_interleave(views)
    nearest_same = (labels[similarity.argmax(1)] == labels).float().mean().item()
    assert nearest_same > 0.8, nearest_same  # 0.97 measured; random weights 0.32; chance 3 in 151


def test_a_fixture_from_older_writers_is_written_again(tmp_path):
    folder = make_fixture("potholes", tmp_path)
    stamp = folder.with_name(f".{folder.name}.writers")
    assert stamp.read_text() == writers_digest()
    first = folder / "potholes" / "1.jpg"
    first.write_bytes(b"drawn by last year's writers")
    assert make_fixture("potholes", tmp_path).joinpath("potholes", "1.jpg").read_bytes() == first.read_bytes()  # cached
    stamp.write_text("an older digest")
    make_fixture("potholes", tmp_path)
    assert first.read_bytes()[:3] == b"\xff\xd8\xff" and stamp.read_text() == writers_digest()
    assert not list(tmp_path.glob("*.stale-*")) and not list(tmp_path.glob("*.building-*"))


def test_the_clouds_fixture_plants_photos_in_the_wrong_folder(tmp_path):
    from PIL import Image

    folder = make_fixture("clouds", tmp_path)
    blue = lambda path: float(np.asarray(Image.open(path), dtype=float)[..., 2].mean() -  # noqa: E731
                              np.asarray(Image.open(path), dtype=float)[..., 0].mean())
    assert blue(folder / "St" / "St-N1.jpg") < 10  # stratus: a grey overcast layer
    assert CLOUD_MISLABELS["St"] == "Ci" and blue(folder / "St" / "St-N30.jpg") > 40  # a blue cirrus sky, filed as St
    assert blue(folder / "Ci" / "Ci-N1.jpg") > 40 and blue(folder / "Cu" / "Cu-N29.jpg") < 10  # Cu-N29 is stratus
    assert sky("St", (32, 24), np.random.default_rng(0)).size == (32, 24)


def test_a_fixture_is_stamped_before_it_appears(tmp_path, monkeypatch):
    # The notebooks' process and the tests' write the same fixtures at once on a fresh clone. A folder that
    # appeared before its stamp could be taken by the other process for an older writers' and removed under
    # its user, so at the moment the folder is renamed into place its stamp must already be whole.
    at_rename = []
    rename = Path.rename

    def watched(self, target):
        if ".building-" in self.name:
            stamp = Path(target).with_name(f".{Path(target).name}.writers")
            at_rename.append(stamp.is_file() and stamp.read_text() == writers_digest())
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", watched)
    assert make_fixture("potholes", tmp_path).is_dir() and at_rename == [True]
    assert not [p for p in tmp_path.rglob("*") if ".writers." in p.name]  # no partial stamp left beside it
