"""Open image files the way a model should see them, and find the files that cannot be opened at all.

Real photo collections hold zero-byte files, downloads cut short, web pages saved as ``.jpg`` and the
odd decompression bomb; they also hold valid images that a plain ``Image.open(...).convert("RGB")`` gets
wrong: photos stored sideways with an EXIF orientation, transparent PNGs, 16-bit scans. `load_image`
handles both, and Pillow's process-wide switches (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``) stay as the caller set them: the pixel limit is checked per call,
from the header, before anything is decoded.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from .errors import VisionStudiesError

__all__ = [
    "MAX_PIXELS",
    "IMAGE_FORMATS",
    "BadImageError",
    "ImageProblem",
    "load_image",
    "channels",
    "find_bad_images",
    "write_problem_report",
    "drop_bad_images",
    "lacks_jfif_marker",
]

# Pillow's own default warning threshold (about 89 megapixels, 256 MiB as RGB): above any camera photo
# a study uses, and far below what a crafted file can claim (a 30,000 x 30,000 image is 2.7 GB as RGB).
MAX_PIXELS = 89_478_485

# The formats photo datasets come in. Pillow opens others too, some through outside programs (EPS runs
# Ghostscript): a file in one of them, whatever its name says, is reported as not an image.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "AVIF", "JPEG2000", "PPM", "ICO", "TGA")

# What can be wrong with a file, as the report names it.
EMPTY, NOT_AN_IMAGE, TRUNCATED, CORRUPT, TOO_MANY_PIXELS, UNSUPPORTED = (
    "empty", "not an image", "truncated", "corrupt", "too many pixels", "unsupported mode",
)


class BadImageError(VisionStudiesError, ValueError):
    """A file that cannot become an image: what is wrong, with which file, and what to do."""

    def __init__(self, path: Path, problem: str, detail: str):
        self.path, self.problem, self.detail = Path(path), problem, detail
        super().__init__(
            f"{path}: {problem} ({detail}); replace the file, or leave it out with drop_bad_images()"
        )


@dataclass(frozen=True)
class ImageProblem:
    """One file that `find_bad_images` leaves out, and why."""

    path: Path
    problem: str
    detail: str


def _formats() -> tuple[str, ...]:
    """`IMAGE_FORMATS` this Pillow can read (AVIF and JPEG 2000 need optional libraries)."""
    Image.init()  # registers Pillow's plugins, once
    return _readable(len(Image.OPEN))


@lru_cache(maxsize=4)
def _readable(plugins: int) -> tuple[str, ...]:
    """`_formats` for a given count of registered plugins: worked out again only when a plugin registers (a
    single prediction opens one file, and building the table of extensions was 30 us of it)."""
    readable = set(Image.registered_extensions().values())
    return tuple(name for name in IMAGE_FORMATS if name in readable)


def _decode(path: Path, max_pixels: int | None, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open and fully decode `path`, turned upright, or raise `BadImageError` saying what is wrong with it."""
    return _decode_only(path, max_pixels, upright=True, draft=draft)


def _decode_only(
    path: Path, max_pixels: int | None, upright: bool = False, draft: tuple[int, int] | None = None
) -> Image.Image:
    """Open and fully decode `path` (turned upright if `upright`), or raise `BadImageError` naming the problem."""
    # A missing or unreadable file raises the OS's own error, which already names it.
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise BadImageError(path, EMPTY, "0 bytes")
        try:
            im = Image.open(f, formats=_formats())
            # Image.open reads only the header: refuse a bomb before a single pixel is decoded
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise BadImageError(
                    path, TOO_MANY_PIXELS, f"{im.width} x {im.height} is more than max_pixels={max_pixels:,}"
                )
            if draft is not None and im.format == "JPEG":
                im.draft(None, draft)  # libjpeg's reduced-scale decoding; each side stays >= the size asked for
            im.load()
        except BadImageError:
            raise
        except Image.DecompressionBombError as e:  # Pillow's process-wide limit, met before ours
            raise BadImageError(path, TOO_MANY_PIXELS, str(e)) from e
        except UnidentifiedImageError as e:
            formats = ", ".join(_formats())
            raise BadImageError(path, NOT_AN_IMAGE, f"none of {formats} recognises its first bytes") from e
        except Exception as e:  # noqa: BLE001  every decoder failure means the same thing: bad bytes
            problem = TRUNCATED if "truncat" in str(e).lower() else CORRUPT
            raise BadImageError(path, problem, f"{e.__class__.__name__}: {e}") from e
        return _upright(im) if upright else im  # while the file is open: a TIFF reads its EXIF from it


def _upright(im: Image.Image) -> Image.Image:
    """The image turned the way the camera's EXIF orientation says it was held."""
    try:
        if im.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
            return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001  unreadable EXIF: the pixels are good, only their orientation is unknown
        pass
    return im


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    if im.mode == "I" or im.mode.startswith("I;16"):
        # 16-bit samples: Pillow's convert clips everything above 255 to white; scale 0..65535 to 0..255
        wide = np.clip(np.asarray(im, dtype=np.float64), 0, 65535)
        im = Image.fromarray(np.round(wide / 257).astype(np.uint8), mode="L")
    elif im.has_transparency_data:
        # transparent pixels would otherwise show whatever colour they happen to store, often black
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
    if im.mode == mode:  # convert would only copy it
        return im
    try:
        return im.convert(mode)
    except ValueError:  # no direct conversion (CMYK to L, say): go through RGB, which every mode reaches
        return im.convert("RGB").convert(mode)


def channels(mode: str) -> int:
    """How many channels a network's input has for images opened as `mode`: 1 for "L", 3 for "RGB"."""
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode={mode!r}: images are opened as 'RGB' (colour) or 'L' (grayscale)")
    return 1 if mode == "L" else 3


def load_image(
    path: Path | str, mode: str = "RGB", max_pixels: int | None = MAX_PIXELS, draft: tuple[int, int] | None = None
) -> Image.Image:
    """Open an image file as `mode` ("RGB" or "L"), upright, transparency on white, 16-bit scaled to 8.

    For an ordinary RGB or grayscale file the pixels are exactly those of fastai's ``PILImage.create``
    (``PILImageBW.create`` for "L"). CMYK and palette images are converted, EXIF orientation is applied,
    transparent pixels are composited on white. A file with more than `max_pixels` pixels (None: no
    limit of ours; Pillow's own process-wide limit still holds) is refused from its header, before decoding.
    Raises `BadImageError` for anything that is not a whole, decodable image. `draft` (width, height): a
    JPEG is decoded at the smallest of libjpeg's scales (1/2, 1/4, 1/8) that keeps both sides at least that
    size (``Image.draft``), several times faster when the image is about to be shrunk anyway (presize.py).
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode={mode!r}: load_image makes 'RGB' (colour) or 'L' (grayscale) images")
    path = Path(path)
    im = _decode(path, max_pixels, draft)
    try:
        return _to_mode(im, mode)
    except ValueError as e:  # colour spaces Pillow cannot convert, such as LAB
        raise BadImageError(path, UNSUPPORTED, f"Pillow cannot convert {im.mode} to {mode}: {e}") from e


def _screen(path: Path | str, max_pixels: int | None) -> ImageProblem | None:
    """What `load_image(path, "RGB", max_pixels)` would refuse `path` for, or None: the same decode and
    conversion, without turning the pixels upright (which never fails: bad EXIF only leaves them as stored).

    A JPEG is decoded at 1/8 scale (``Image.draft``): libjpeg still reads and entropy-decodes every byte,
    which is where a file cut short or with broken data fails, and skips most of the inverse DCT and colour
    conversion, three times the speed. The test holds the verdicts to those of a full decode on hundreds of
    files cut short and with flipped bytes.
    """
    path = Path(path)
    try:
        im = _decode_only(path, max_pixels, draft=(1, 1))
        try:
            _to_mode(im, "RGB")
        except ValueError as e:
            raise BadImageError(path, UNSUPPORTED, f"Pillow cannot convert {im.mode} to RGB: {e}") from e
    except BadImageError as e:
        return ImageProblem(e.path, e.problem, e.detail)
    except OSError as e:  # missing, unreadable, a folder
        return ImageProblem(path, "unreadable", f"{e.__class__.__name__}: {e.strerror or e}")
    return None


def find_bad_images(
    paths: Iterable[Path | str], max_pixels: int | None = MAX_PIXELS, progress: bool = True, workers: int | None = None
) -> list[ImageProblem]:
    """Every file among `paths` that `load_image` would refuse, with the reason, in the order given.

    Each file is decoded through, as that is the only way to find one cut short (a JPEG at reduced scale:
    see `_screen`); its header is read first, so an empty file, a web page or a decompression bomb is
    refused before any decoding. The files are
    decoded on `workers` threads (None: one per core): Pillow's decoders release the GIL, so two cores screen
    twice as fast, with none of the start-up and pickling of worker processes. A progress bar counts them.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .runner import available_cores

    paths = list(paths)
    workers = available_cores() if workers is None else max(1, workers)
    bar = tqdm(total=len(paths), desc="checking images", unit="img", disable=not progress)
    with bar, ThreadPoolExecutor(workers) as pool:
        found = []
        for problem in pool.map(lambda p: _screen(p, max_pixels), paths):  # in the order given
            found.append(problem)
            bar.update()
    return [p for p in found if p is not None]


def write_problem_report(problems: Iterable[ImageProblem], csv_path: Path | str) -> Path:
    """Write `problems` as a CSV (path, problem, detail) a spreadsheet opens, and return its path."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "problem", "detail"])
        writer.writerows([str(p.path), p.problem, p.detail] for p in problems)
    return csv_path


def _stamp(path: Path) -> list[int] | None:
    """A file's size and modification time: when both are as they were, its bytes are taken to be too."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _screen_once(paths: list[Path], max_pixels: int | None, progress: bool, record: Path) -> list[ImageProblem]:
    """`find_bad_images(paths)`, decoding only the files `record` has not seen as they are now; `record` is
    then rewritten with every file's stamp and verdict."""
    seen: dict = {}
    if record.is_file():
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
            if saved.get("max_pixels") == max_pixels:  # a verdict holds only for the limit it was reached under
                seen = saved["files"]
        except (ValueError, KeyError, TypeError):  # a record cut short or edited by hand: screen everything
            seen = {}
    stamps = {p: _stamp(p) for p in paths}
    keys = {p: os.path.abspath(p) for p in paths}
    fresh = [p for p in paths if stamps[p] is None or seen.get(keys[p], [None])[0] != stamps[p]]
    found = {p.path: p for p in find_bad_images(fresh, max_pixels, progress)}
    files = dict(seen)
    for p in fresh:
        problem = found.get(p)
        files[keys[p]] = [stamps[p], None if problem is None else [problem.problem, problem.detail]]
    verdicts = [(p, files[keys[p]][1]) for p in paths]
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(f"{record.name}.{os.getpid()}.partial")  # processes screening the same folder
    partial.write_text(json.dumps({"max_pixels": max_pixels, "files": files}), encoding="utf-8")
    partial.replace(record)  # a run stopped while writing leaves the old record whole
    return [found.get(p) or ImageProblem(p, *verdict) for p, verdict in verdicts if verdict is not None]


def drop_bad_images(
    paths: Iterable[Path | str], report_csv: Path | str, max_pixels: int | None = MAX_PIXELS, progress: bool = True,
    record: Path | str | None = None,
) -> list[Path]:
    """The files among `paths` that load, in order; the others are listed in `report_csv` and counted on screen.

    The report is written even when nothing is wrong, so a run always leaves a record that it checked.
    `record` (a JSON file; None: none) keeps each file's size, modification time and verdict, so a file
    that has not changed is not decoded again: a notebook that reads its dataset twice (notebook 10 trains
    two models on it) screens it once, and a rerun after a restart in no time.
    """
    paths = [Path(p) for p in paths]
    if record is None:
        problems = find_bad_images(paths, max_pixels, progress)
    else:
        problems = _screen_once(paths, max_pixels, progress, Path(record))
    report = write_problem_report(problems, report_csv)
    bad = {p.path for p in problems}
    counts = sorted(Counter(p.problem for p in problems).items(), key=lambda kv: (-kv[1], kv[0]))
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts)
    print(
        f"checked {len(paths)} images: {len(problems)} left out" + (f" ({kinds})" if problems else "")
        + f"; the list is in {report}"
    )
    return [p for p in paths if p not in bad]


# TFDS's cats_vs_dogs builder skips a file when `b"JFIF" not in fobj.peek(10)`, on the zip member's file
# object; zipfile.ZipExtFile.peek returns up to 512 buffered bytes, so the rule looks at the first 512.
# That is how TFDS counts its 1,738 "corrupted" images: a JPEG with an Exif (APP1) header instead of a JFIF
# (APP0) one decodes perfectly and is still skipped, so the count is not of undecodable files.
JFIF_WINDOW = 512


def lacks_jfif_marker(path: Path | str) -> bool:
    """True when the file has no ``JFIF`` in its first 512 bytes: what TFDS's cats_vs_dogs counts as corrupt."""
    with open(path, "rb") as f:
        return b"JFIF" not in f.read(JFIF_WINDOW)
