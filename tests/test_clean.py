"""Cleaning: the report finds exactly the planted problems, quarantine is undoable, loss finds wrong labels."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

from vision_studies.clean import (
    NEAR_DUPLICATE_BITS,
    cleaning_report,
    find_duplicates,
    quarantine,
    restore,
    suspects_by_loss,
)
from vision_studies.data import dataloaders
from vision_studies.models import build_learner
from vision_studies.train import fit, seed_everything


def _drawing(seed: int) -> Image.Image:
    """A distinct picture: random shapes in random colours on a random background."""
    rng = np.random.default_rng(seed)
    colour = lambda: tuple(int(c) for c in rng.integers(0, 256, 3))  # noqa: E731
    image = Image.new("RGB", (96, 72), colour())
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, 80), rng.integers(0, 60)
        w, h = rng.integers(10, 40), rng.integers(10, 30)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour())
    return image


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def messy(tmp_path):
    """A dataset in class folders with planted duplicates and broken files among distinct images.

    Returns (folder, expected): `expected` maps each planted path to the issue the report must give it.
    """
    folder = tmp_path / "dataset"
    for cls in ("cat", "dog"):
        (folder / "train" / cls).mkdir(parents=True)
    photos = [Image.fromarray(a) for a in load_sample_images().images]  # two real photos, 640x427
    distinct = {}
    for n in range(8):
        distinct[f"train/cat/drawing_{n}.png"] = _drawing(n)
    for n, (photo, box) in enumerate([(0, (0, 0, 320, 240)), (0, (320, 180, 640, 420)), (1, (0, 0, 320, 240)), (1, (300, 150, 620, 390))]):
        distinct[f"train/dog/photo_{n}.jpg"] = photos[photo].crop(box)
    for rel, image in distinct.items():
        image.save(folder / rel, quality=90)
    expected = {}
    # exact duplicates: a byte copy, and the same pixels saved as another format
    shutil.copy(folder / "train/cat/drawing_0.png", folder / "train/dog/drawing_0_copy.png")
    expected["train/dog/drawing_0_copy.png"] = "exact_duplicate"
    Image.open(folder / "train/cat/drawing_1.png").save(folder / "train/cat/drawing_1_resaved.bmp")
    expected["train/cat/drawing_1_resaved.bmp"] = "exact_duplicate"
    # near duplicates: a photo at half size as a rougher JPEG, a drawing re-encoded as JPEG
    half = Image.open(folder / "train/dog/photo_0.jpg").resize((160, 120), Image.Resampling.LANCZOS)
    half.save(folder / "train/dog/photo_0_small.jpg", quality=60)
    expected["train/dog/photo_0_small.jpg"] = "near_duplicate"
    Image.open(folder / "train/cat/drawing_2.png").save(folder / "train/dog/drawing_2_reencoded.jpg", quality=50)
    expected["train/dog/drawing_2_reencoded.jpg"] = "near_duplicate"
    # unreadable: empty, cut short, and a text file named as a JPEG
    (folder / "train/cat/empty.jpg").write_bytes(b"")
    whole = (folder / "train/dog/photo_2.jpg").read_bytes()
    (folder / "train/dog/truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "train/cat/notes.jpg").write_text("<html>403 Forbidden</html>\n")
    expected.update({"train/cat/empty.jpg": "unreadable", "train/dog/truncated.jpg": "unreadable",
                     "train/cat/notes.jpg": "unreadable"})
    return folder, expected


def test_report_finds_exactly_the_planted_problems(messy, tmp_path):
    folder, expected = messy
    csv = tmp_path / "report" / "cleaning.csv"
    report = cleaning_report(folder, csv_path=csv, progress=False)
    assert dict(zip(report["path"], report["issue"])) == expected
    assert len(report) == len(expected)  # each once
    assert (report["suggested_action"] == "quarantine").all()
    details = dict(zip(report["path"], report["detail"]))
    assert details["train/dog/drawing_0_copy.png"] == "same pixels as train/cat/drawing_0.png"
    assert details["train/dog/photo_0_small.jpg"].startswith("looks like train/dog/photo_0.jpg")  # the bigger stays
    assert details["train/cat/empty.jpg"].startswith("empty")
    assert details["train/dog/truncated.jpg"].startswith("truncated")
    assert details["train/cat/notes.jpg"].startswith("not an image")
    written = pd.read_csv(csv, keep_default_na=False)
    assert list(written.columns) == ["path", "issue", "detail", "suggested_action"]
    pd.testing.assert_frame_equal(written, report)


def test_exact_only_and_distinct_images_alone(messy):
    folder, _ = messy
    distinct = sorted(folder.glob("*/*/drawing_?.png")) + sorted(folder.glob("*/*/photo_?.jpg"))
    assert find_duplicates(distinct, folder, progress=False).empty
    exact_only = find_duplicates(sorted(folder.rglob("*.*")), folder, near_bits=None, progress=False)
    assert set(exact_only["issue"]) == {"exact_duplicate"} and len(exact_only) == 2


def test_quarantine_moves_verified_copies_and_restore_undoes_it(messy, tmp_path):
    folder, expected = messy
    before = {p.relative_to(folder).as_posix(): _sha(p) for p in folder.rglob("*") if p.is_file()}
    report = cleaning_report(folder, progress=False)
    chosen = report[report["issue"] != "near_duplicate"]  # a person keeps the near duplicates
    jail = tmp_path / "quarantine"
    moved = quarantine(chosen, folder, jail)
    assert set(moved["path"]) == set(chosen["path"])
    for rel in chosen["path"]:
        assert not (folder / rel).exists()
        assert _sha(jail / rel) == before[rel]  # same relative path, same bytes
    assert not list(jail.rglob("*.partial"))
    assert set(pd.read_csv(jail / "quarantine.csv")["path"]) == set(chosen["path"])
    # what is left has only the near duplicates the person kept
    assert set(cleaning_report(folder, progress=False)["issue"]) == {"near_duplicate"}

    restore(jail, folder)
    after = {p.relative_to(folder).as_posix(): _sha(p) for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert pd.read_csv(jail / "quarantine.csv").empty


def test_quarantine_refuses_bad_requests_before_moving_anything(messy, tmp_path):
    folder, _ = messy
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rows = [{"path": "train/cat/drawing_3.png"}]
    with pytest.raises(ValueError, match="must not contain each other"):
        quarantine(rows, folder, folder / "quarantine")
    with pytest.raises(ValueError, match=r"row 1: path '\.\./outside\.png' is not a path inside"):
        quarantine(rows + [{"path": "../outside.png"}], folder, tmp_path / "q")
    with pytest.raises(FileNotFoundError, match="row 1: .*missing.png does not exist"):
        quarantine(rows + [{"path": "train/cat/missing.png"}], folder, tmp_path / "q")
    with pytest.raises(ValueError, match="row 0 has no 'path'"):
        quarantine([{"file": "x"}], folder, tmp_path / "q")
    (tmp_path / "q" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "q" / "train" / "cat" / "drawing_3.png").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError, match="exists already"):
        quarantine(rows, folder, tmp_path / "q")
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == files  # nothing moved


def test_a_failed_move_keeps_the_original_and_logs_the_moves_before_it(messy, tmp_path):
    folder, _ = messy
    jail = tmp_path / "q"
    (jail / "train").mkdir(parents=True)
    (jail / "train" / "dog").write_text("a file where a folder should go")  # the copy into train/dog/ fails
    rows = [{"path": "train/cat/drawing_4.png"}, {"path": "train/dog/photo_1.jpg"}]
    with pytest.raises(OSError):
        quarantine(rows, folder, jail)
    assert (folder / "train/dog/photo_1.jpg").is_file()  # never deleted without a copy
    assert (jail / "train/cat/drawing_4.png").is_file() and not (folder / "train/cat/drawing_4.png").exists()
    assert list(pd.read_csv(jail / "quarantine.csv")["path"]) == ["train/cat/drawing_4.png"]


def test_suspects_by_loss_finds_planted_wrong_labels(mnist, tmp_path):
    spec, source = mnist
    folder = tmp_path / "mnist"
    shutil.copytree(source, folder)
    # five held-out 3s filed under 8: a trained model calls them 3s, with high loss against their label
    wrong = sorted((folder / spec.valid_folder / "3").glob("*.png"))[:5]
    for path in wrong:
        path.rename(folder / spec.valid_folder / "8" / f"was3_{path.name}")
    seed_everything(0)
    dls = dataloaders(spec, folder, 28, batch_size=64, augment="none")
    learn = build_learner(dls, "lenet5", pretrained=False, path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        fit(learn, 3, 1e-2)
    suspects = suspects_by_loss(learn, k=10, folder=folder)
    assert len(suspects) == 10 and (suspects["issue"] == "high_loss").all()
    planted = {f"{spec.valid_folder}/8/was3_{p.name}" for p in wrong}
    found = planted & set(suspects["path"])
    assert len(found) >= 4, f"only {len(found)} of 5 planted wrong labels among the top 10 losses"
    first = suspects.set_index("path").loc[sorted(found)[0], "detail"]
    assert first.startswith("labelled 8, predicted 3")


def test_look_alike_digits_are_not_near_duplicates(mnist):
    """Small plain images share perceptual hashes without being copies; the pixel check tells them apart."""
    spec, folder = mnist
    zeros = sorted((folder / spec.train_folder / "0").glob("*.png"))
    hashes = [imagehash.phash(Image.open(p)) for p in zeros]
    close = sum(a - b <= NEAR_DUPLICATE_BITS for i, a in enumerate(hashes) for b in hashes[i + 1 :])
    assert close > 20  # by the hash alone, many different writers' zeros would be "near duplicates"
    by_hash_alone = find_duplicates(zeros, folder, near_pixels=float("inf"), progress=False)
    assert len(by_hash_alone) > 10
    assert find_duplicates(zeros, folder, progress=False).empty
