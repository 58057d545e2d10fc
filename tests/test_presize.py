"""The presized cache and the parallel screen: same pixels (within JPEG's rounding), same verdicts, kept fresh.

Checked against the trusted reference each replaces: a direct `load_image` + `SquishResize` for the cache,
the serial one-thread screen for the parallel one. Nothing here is timed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision_studies.augment import SquishResize
from vision_studies.data import dataloaders, user_folder_spec
from vision_studies.images import BadImageError, drop_bad_images, find_bad_images, load_image
from vision_studies.presize import OpenPresized, default_cache_dir, presize_images

RNG = np.random.default_rng(0)


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth content with some edges, as photos have (noise would make every JPEG comparison meaningless)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    a, b, c = rng.uniform(2, 9, 3)
    pixels = np.stack([np.sin(a * x + b * y), np.cos(b * x * y * 4), np.sin(c * (x - y))], axis=-1)
    pixels[height // 3 : height // 2, width // 4 : width // 2] = rng.uniform(-1, 1, 3)  # a sharp-edged block
    return Image.fromarray(((pixels + 1) * 127.5).clip(0, 255).astype(np.uint8))


def _folder(root: Path, n: int = 6, size: tuple[int, int] = (200, 150)) -> list[Path]:
    files = []
    for i in range(n):
        path = root / ("cat" if i % 2 else "dog") / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _photo(*size, seed=i).save(path, quality=95)
        files.append(path)
    return files


def _direct(path: Path, size: int, mode: str = "RGB") -> np.ndarray:
    return np.asarray(SquishResize(size).encodes(load_image(path, mode))).astype(float)


@pytest.mark.parametrize("size", [32, 100])  # 200 x 150 at 32: libjpeg's 1/2 scale (draft); at 100: full decode
def test_cached_images_equal_a_direct_resize(tmp_path, size):
    files = _folder(tmp_path / "set")
    cached = presize_images(files, size, tmp_path / "cache", progress=False)
    assert set(cached) == {str(f) for f in files}
    for f in files:
        copy = np.asarray(Image.open(cached[str(f)])).astype(float)
        assert copy.shape == (size, size, 3)
        if size == 100:  # decoded in full: the very pixels
            assert np.array_equal(copy, _direct(f, size)), f
        else:  # decoded at reduced scale: within a grey level (of 255) on average
            assert 0 < np.abs(copy - _direct(f, size)).mean() < 1.0, f


def test_cache_is_rebuilt_when_a_source_changes_and_only_then(tmp_path):
    files = _folder(tmp_path / "set")
    first = presize_images(files, 48, tmp_path / "cache", progress=False)
    written = {f: os.stat(first[str(f)]).st_mtime_ns for f in files}
    # a new picture under the same name, with a later modification time
    _photo(200, 150, seed=99).save(files[0], quality=95)
    os.utime(files[0], ns=(os.stat(files[0]).st_atime_ns, os.stat(files[0]).st_mtime_ns + 10**9))
    again = presize_images(files, 48, tmp_path / "cache", progress=False)
    assert np.abs(np.asarray(Image.open(again[str(files[0])])).astype(float) - _direct(files[0], 48)).mean() < 1.0
    assert os.stat(again[str(files[0])]).st_mtime_ns != written[files[0]]
    assert all(os.stat(again[str(f)]).st_mtime_ns == written[f] for f in files[1:])  # the others were left alone
    # a new target size has copies of its own; the old ones stay valid
    other = presize_images(files, 40, tmp_path / "cache", progress=False)
    assert all(Image.open(other[str(f)]).size == (40, 40) for f in files)
    assert presize_images(files, 48, tmp_path / "cache", progress=False) == again


def test_exif_orientation_is_preserved_in_the_copy(tmp_path):
    upright = _photo(120, 200, seed=3)  # tall
    stored = upright.transpose(Image.Transpose.ROTATE_270)  # stored on its side, wide...
    exif = Image.Exif()
    exif[0x0112] = 8  # ...with the EXIF tag that says: turn it back (Pillow's exif_transpose: ROTATE_90)
    path = tmp_path / "set" / "a" / "rotated.jpg"
    path.parent.mkdir(parents=True)
    stored.save(path, quality=95, exif=exif)
    (tmp_path / "set" / "b").mkdir()
    _photo(200, 150).save(tmp_path / "set" / "b" / "plain.jpg")
    cached = presize_images([path], 50, tmp_path / "cache", progress=False)
    copy = np.asarray(Image.open(cached[str(path)])).astype(float)
    reference = np.asarray(SquishResize(50).encodes(upright)).astype(float)
    sideways = np.asarray(SquishResize(50).encodes(stored)).astype(float)
    assert np.abs(copy - reference).mean() < 4.0 < np.abs(copy - sideways).mean()


def test_images_of_the_target_size_are_kept_raw_and_smaller_ones_read_as_they_are(tmp_path):
    files = _folder(tmp_path / "set", size=(28, 28))
    same = presize_images(files, 28, tmp_path / "cache", progress=False)  # CIFAR's 32 px at 32: the pixels, raw
    assert sorted(same) == sorted(str(f) for f in files)
    for source, copy in same.items():
        assert np.array_equal(np.asarray(Image.open(copy)), np.asarray(load_image(source, "RGB")))
    assert presize_images(files, 32, tmp_path / "cache", progress=False) == {}  # upsampling: no copy
    # a manifest from before this rule (equal sizes were not copied) is made again, not trusted
    import json

    manifest = tmp_path / "cache" / "28px-RGB" / "manifest.json"
    saved = json.loads(manifest.read_text())
    del saved["settings"]["copied"]
    saved["files"] = {k: [stamp, None] for k, (stamp, _) in saved["files"].items()}
    manifest.write_text(json.dumps(saved))
    assert presize_images(files, 28, tmp_path / "cache", progress=False) == same


def test_corrupt_files_are_left_uncached_and_still_reported(tmp_path):
    files = _folder(tmp_path / "set")
    cut = tmp_path / "set" / "cat" / "cut_short.jpg"
    cut.write_bytes(files[1].read_bytes()[:600])
    empty = tmp_path / "set" / "dog" / "empty.jpg"
    empty.write_bytes(b"")
    cached = presize_images(files + [cut, empty], 32, tmp_path / "cache", progress=False)
    assert str(cut) not in cached and str(empty) not in cached and len(cached) == len(files)
    opener = OpenPresized(cached)
    with pytest.raises(BadImageError, match="cut_short.jpg"):
        opener(cut)
    assert opener(files[0]).size == (32, 32)
    # mended later: presized then
    files[1].replace(cut)
    assert str(cut) in presize_images([cut], 32, tmp_path / "cache", progress=False)


def test_loader_reads_the_copies_and_keeps_the_originals_paths(tmp_path):
    files = _folder(tmp_path / "set", n=8)
    spec = user_folder_spec("presize", valid_pct=0.25)
    dls = dataloaders(spec, tmp_path / "set", 32, 4, augment="none", num_workers=0, device="cpu")
    plain = dataloaders(spec, tmp_path / "set", 32, 4, augment="none", num_workers=0, device="cpu", presize=False)
    assert set(dls.valid_ds.items["path"]) <= {str(f) for f in files}  # the table names the originals
    cache = default_cache_dir(tmp_path / "set")
    assert cache.is_dir() and not (tmp_path / "set" / ".presized").exists()
    assert sorted((tmp_path / "set").rglob("*.jpg")) == sorted(files)  # nothing written into the dataset
    a, b = dls.valid.one_batch()[0], plain.valid.one_batch()[0]
    assert a.shape == b.shape == (2, 3, 32, 32)
    assert (a - b).abs().mean().item() * 255 < 1.0  # 200 x 150 at 32 px: the reduced-scale decode's half level
    new = tmp_path / "new.jpg"  # a file the cache has never seen: test_dl opens it and the loader resizes it
    _photo(90, 60, seed=7).save(new)
    (xb,) = dls.test_dl([new]).one_batch()
    assert xb.shape == (1, 3, 32, 32)


def _mixed(tmp_path: Path) -> list[Path]:
    files = _folder(tmp_path / "mixed", n=8, size=(60, 40))
    (tmp_path / "mixed" / "empty.jpg").write_bytes(b"")
    (tmp_path / "mixed" / "page.jpg").write_text("<html>not found</html>")
    (tmp_path / "mixed" / "cut.jpg").write_bytes(files[0].read_bytes()[:300])
    return files[:4] + [tmp_path / "mixed" / n for n in ("empty.jpg", "page.jpg", "cut.jpg")] + files[4:] + [
        tmp_path / "mixed" / "missing.jpg", tmp_path / "mixed"]


def test_parallel_screen_equals_the_serial_one(tmp_path):
    paths = _mixed(tmp_path)
    serial = find_bad_images(paths, progress=False, workers=1)
    assert [p.path.name for p in serial] == ["empty.jpg", "page.jpg", "cut.jpg", "missing.jpg", "mixed"]
    assert find_bad_images(paths, progress=False, workers=4) == serial
    assert find_bad_images(paths, max_pixels=100, progress=False, workers=3) == find_bad_images(
        paths, max_pixels=100, progress=False, workers=1)  # 60 x 40 is too many: every image is refused


def test_screen_record_decodes_a_file_again_only_when_it_changed(tmp_path, capsys):
    paths = _mixed(tmp_path)[:-2]
    record = tmp_path / "screened.json"
    first = drop_bad_images(paths, tmp_path / "bad.csv", progress=False, record=record)
    assert drop_bad_images(paths, tmp_path / "bad.csv", progress=False, record=record) == first
    # spoil a good file without changing its size or time: the record says it was good, so it is not decoded
    victim = first[0]
    stat = os.stat(victim)
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert victim in drop_bad_images(paths, tmp_path / "bad.csv", progress=False, record=record)
    # once its time changes, as any real edit changes it, it is decoded and left out
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert victim not in drop_bad_images(paths, tmp_path / "bad.csv", progress=False, record=record)
    # a different pixel limit is a different question: every file is decoded again
    assert drop_bad_images(paths, tmp_path / "bad.csv", max_pixels=100, progress=False, record=record) == []


def test_reduced_scale_screen_gives_the_full_decodes_verdicts(tmp_path):
    """The screen decodes JPEGs at 1/8 scale: on files cut short and with bytes flipped, baseline and
    progressive, its verdicts are those of `load_image`'s full decode."""
    rng = np.random.default_rng(1)
    paths = []
    for name, progressive in (("baseline", False), ("progressive", True)):
        source = tmp_path / f"{name}.jpg"
        _photo(160, 120, seed=5).save(source, quality=90, progressive=progressive)
        data = source.read_bytes()
        for i in range(40):
            spoilt = bytearray(data[: int(rng.integers(0, len(data)))] if i % 2 else data)
            for _ in range(0 if i % 2 else int(rng.integers(1, 12))):
                spoilt[int(rng.integers(0, len(spoilt)))] = int(rng.integers(0, 256))
            paths.append(tmp_path / f"{name}_{i}.jpg")
            paths[-1].write_bytes(bytes(spoilt))
    full = []
    for path in paths:
        try:
            load_image(path)
        except BadImageError as e:
            full.append((e.path, e.problem))
    screened = [(p.path, p.problem) for p in find_bad_images(paths, progress=False)]
    assert screened == full
    assert 10 < len(full) < len(paths)  # both verdicts occur


def test_a_damaged_copy_falls_back_to_the_original(tmp_path):
    files = _folder(tmp_path / "set", n=2)
    cached = presize_images(files, 32, tmp_path / "cache", progress=False)
    opener = OpenPresized(cached)
    assert opener(files[0]).size == (32, 32)
    Path(cached[str(files[0])]).write_bytes(b"not a jpeg any more")
    assert opener(files[0]).size == (200, 150)  # the original, which the loader's resize then squishes
