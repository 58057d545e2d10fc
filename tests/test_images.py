"""Images: odd but valid files load right (checked against numpy and fastai), bad ones are found and reported."""

from __future__ import annotations

import csv
import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from vision_studies.images import (
    BadImageError,
    ImageProblem,
    channels,
    drop_bad_images,
    find_bad_images,
    load_image,
    write_problem_report,
)

RNG = np.random.default_rng(0)
PICTURE = RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8)  # tall != wide, so a rotation shows


def _save(im: Image.Image, path: Path, fmt: str | None = None, **kwargs) -> Path:
    im.save(path, fmt, **kwargs)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels in 70 bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# --- odd but valid images ----------------------------------------------------------------------------


def test_ordinary_images_give_exactly_fastais_pixels(mnist, pets):
    """Swapping load_image in for fastai's PILImage.create changes nothing for ordinary RGB and L files."""
    from fastai.vision.core import PILImage, PILImageBW

    files = sorted(mnist[1].rglob("*.png"))[:5] + sorted(pets[1].rglob("*.jpg"))[:5]
    for path in files:
        for mode, fastai_type in (("RGB", PILImage), ("L", PILImageBW)):
            ours, theirs = load_image(path, mode), fastai_type.create(path)
            assert ours.mode == theirs.mode == mode
            assert np.array_equal(np.asarray(ours), np.asarray(theirs)), (path, mode)


def test_grayscale_becomes_three_equal_channels_and_back(tmp_path):
    gray = PICTURE[..., 0]
    path = _save(Image.fromarray(gray), tmp_path / "gray.png")
    rgb = np.asarray(load_image(path, "RGB"))
    assert rgb.shape == (24, 40, 3) and all(np.array_equal(rgb[..., c], gray) for c in range(3))
    assert np.array_equal(np.asarray(load_image(path, "L")), gray)


def test_colour_to_grayscale_uses_itu_601_luma(tmp_path):
    path = _save(Image.fromarray(PICTURE), tmp_path / "rgb.png")
    expected = PICTURE.astype(float) @ [0.299, 0.587, 0.114]
    assert np.abs(np.asarray(load_image(path, "L")).astype(float) - expected).max() <= 1


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.dstack([PICTURE, np.zeros((24, 40), np.uint8)])
    rgba[:, :10, 3] = 255  # opaque
    rgba[:, 10:20, 3] = 128  # half
    path = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")
    out = np.asarray(load_image(path)).astype(float)
    assert np.array_equal(out[:, :10], PICTURE[:, :10])  # opaque pixels are untouched
    half = PICTURE[:, 10:20].astype(float) * 128 / 255 + 255 * (1 - 128 / 255)
    assert np.abs(out[:, 10:20] - half).max() <= 1
    assert (out[:, 20:] == 255).all()  # fully transparent: white, not the black or noise stored there


def test_palette_image_with_a_transparent_entry(tmp_path):
    palette = RNG.integers(0, 256, (16, 3), dtype=np.uint8)
    index = RNG.integers(0, 16, (24, 40), dtype=np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette(palette.flatten().tolist())
    path = _save(im, tmp_path / "opaque.png")
    assert np.array_equal(np.asarray(load_image(path)), palette[index])  # the palette lookup, done by numpy
    path = _save(im, tmp_path / "transparent.png", transparency=3)
    out = np.asarray(load_image(path))
    assert (out[index == 3] == 255).all() and np.array_equal(out[index != 3], palette[index][index != 3])


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    wide = (np.arange(24 * 40).reshape(24, 40) * 68).astype(np.uint16)  # 0 .. 65,212
    path = _save(Image.fromarray(wide), tmp_path / "16bit.png")
    assert Image.open(path).mode.startswith("I;16")  # really a 16-bit file
    expected = np.round(wide / 257).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(path, "L")), expected)
    assert np.array_equal(np.asarray(load_image(path, "RGB"))[..., 1], expected)
    assert len(np.unique(expected)) > 200  # a plain convert("L") would give 0..255 then all white


def test_cmyk_jpeg_comes_out_as_its_colours(tmp_path):
    path = _save(Image.fromarray(PICTURE).convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path)
    assert out.mode == "RGB" and np.abs(np.asarray(out).astype(int) - PICTURE).mean() < 6  # JPEG loss only
    assert load_image(path, "L").mode == "L"


@pytest.mark.parametrize(
    "orientation, upright",
    [
        (1, lambda a: a),
        (2, np.fliplr),
        (3, lambda a: np.rot90(a, 2)),
        (4, np.flipud),
        (5, lambda a: a.swapaxes(0, 1)),
        (6, lambda a: np.rot90(a, -1)),  # the camera was turned: rotate 90 degrees clockwise to show
        (7, lambda a: np.rot90(a, 2).swapaxes(0, 1)),
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_is_applied(orientation, upright, tmp_path):
    """The eight EXIF orientations, against the transforms the EXIF standard defines, done by numpy."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(Image.fromarray(PICTURE), tmp_path / "exif.png", exif=exif)
    assert np.array_equal(np.asarray(load_image(path)), upright(PICTURE))


def test_one_pixel_image(tmp_path):
    path = _save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "one.png")
    assert load_image(path).size == (1, 1) and load_image(path).getpixel((0, 0)) == (10, 20, 30)


def test_very_large_image_loads_and_a_per_call_limit_refuses_it(tmp_path):
    """36 megapixels (more than most cameras) loads; max_pixels refuses it from its header, quickly."""
    big = np.zeros((6000, 6000), np.uint8)
    big[-1, -1] = 200
    path = _save(Image.fromarray(big), tmp_path / "big.png", compress_level=1)
    out = load_image(path, "L")
    assert out.size == (6000, 6000) and out.getpixel((5999, 5999)) == 200
    start = time.perf_counter()
    with pytest.raises(BadImageError, match=r"big.png: too many pixels \(6000 x 6000 .*max_pixels=10,000,000"):
        load_image(path, "L", max_pixels=10_000_000)
    assert time.perf_counter() - start < 0.05  # refused from the header: nothing decoded


def test_mode_other_than_rgb_or_l_is_refused_by_name(tmp_path):
    path = _save(Image.fromarray(PICTURE), tmp_path / "a.png")
    with pytest.raises(ValueError, match="mode='CMYK'"):
        load_image(path, "CMYK")


# --- bad files -----------------------------------------------------------------------------------------


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of bad file a real collection holds, and the problem it must be reported as."""
    jpeg = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    png = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png, "PNG")
    corrupt = bytearray(png.getvalue())
    corrupt[200:260] = b"\x00" * 60  # inside the image data: the PNG's checksum no longer matches
    contents = {
        "empty.jpg": (b"", "empty"),
        "cut.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "truncated"),
        "cut.png": (png.getvalue()[: len(png.getvalue()) // 2], "truncated"),
        "corrupt.png": (bytes(corrupt), "corrupt"),
        "page.jpg": (b"<!DOCTYPE html><html><body>Not found</body></html>", "not an image"),
        "bomb.png": (_png_header_only(30_000, 30_000), "too many pixels"),  # beyond Pillow's own limit
        "big-bomb.png": (_png_header_only(10_000, 10_000), "too many pixels"),  # only Pillow's warning
    }
    out = {}
    for name, (data, problem) in contents.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, problem)
    return out


def test_each_bad_file_is_a_clear_error_naming_it(tmp_path):
    for name, (path, problem) in _bad_files(tmp_path).items():
        with pytest.raises(BadImageError) as err:
            load_image(path)
        assert err.value.problem == problem, name
        assert str(path) in str(err.value) and "drop_bad_images" in str(err.value)


def test_formats_that_run_outside_programs_are_not_opened(tmp_path):
    """An EPS file (Pillow would hand it to Ghostscript) saved under a photo's name is refused unread."""
    path = _save(Image.fromarray(PICTURE), tmp_path / "photo.jpg", "EPS")
    assert path.read_bytes().startswith(b"%!PS-Adobe")
    with pytest.raises(BadImageError, match=r"photo.jpg: not an image \(none of JPEG, PNG, GIF"):
        load_image(path)


def test_missing_file_is_the_os_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")


def test_pils_process_wide_switches_stay_as_they_were(tmp_path):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    files = [path for path, _ in _bad_files(tmp_path).values()]
    find_bad_images(files, max_pixels=10, progress=False)
    load_image(_save(Image.fromarray(PICTURE), tmp_path / "ok.png"), max_pixels=None)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_drop_bad_images_keeps_the_good_reports_the_bad_and_counts(tmp_path, capsys):
    bad = _bad_files(tmp_path)
    good = [_save(Image.fromarray(PICTURE), tmp_path / f"good{i}.jpg") for i in range(3)]
    paths = [good[0], *[p for p, _ in bad.values()], good[1], good[2]]
    kept = drop_bad_images(paths, tmp_path / "report" / "bad_images.csv", progress=False)
    assert kept == good  # in the order given
    with open(tmp_path / "report" / "bad_images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(Path(r["path"]), r["problem"]) for r in rows} == set(bad.values())
    assert all(r["detail"] for r in rows)
    printed = capsys.readouterr().out
    counts = "2 too many pixels, 2 truncated, 1 corrupt, 1 empty, 1 not an image"
    assert f"checked 10 images: 7 left out ({counts})" in printed
    assert "bad_images.csv" in printed


def test_report_is_written_even_when_all_is_well(tmp_path, capsys):
    good = [_save(Image.fromarray(PICTURE), tmp_path / "a.png")]
    assert drop_bad_images(good, tmp_path / "r.csv", progress=False) == good
    assert (tmp_path / "r.csv").read_text().strip() == "path,problem,detail"
    assert "checked 1 images: 0 left out;" in capsys.readouterr().out


def test_find_bad_images_shows_progress_and_reports_unreadable(tmp_path, capsys):
    (tmp_path / "folder.jpg").mkdir()
    problems = find_bad_images([tmp_path / "folder.jpg", tmp_path / "missing.jpg"])
    assert [(p.path.name, p.problem) for p in problems] == [("folder.jpg", "unreadable"), ("missing.jpg", "unreadable")]
    assert "checking images" in capsys.readouterr().err


def test_problem_report_round_trips_odd_names(tmp_path):
    problems = [ImageProblem(tmp_path / 'a, "b".jpg', "corrupt", "OSError: broken, really\nbroken")]
    path = write_problem_report(problems, tmp_path / "r.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"path": str(problems[0].path), "problem": "corrupt", "detail": problems[0].detail}]


def test_channels_follow_the_mode_images_are_opened_in():
    # what load_image makes of a photo in each mode is what the count must describe
    photo = Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8))
    for mode in ("RGB", "L"):
        opened = np.asarray(photo.convert(mode))
        assert channels(mode) == (opened.shape[2] if opened.ndim == 3 else 1)
    with pytest.raises(ValueError, match="'CMYK'"):
        channels("CMYK")
