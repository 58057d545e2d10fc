"""Presizing: every image resized once to the size the loader wants, kept on disk for every later epoch.

On two cores (Colab's) decoding full-size photos sets the pace of training: a 500 x 375 JPEG takes several
times as long to decode as the 224 x 224 one a model sees. fastbook's lesson on presizing resizes once
and augments after; fastai's ``resize_images`` writes the resized copies. Here the copy is exactly what the
loader's first item transform makes of the original (`augment.SquishResize`: the image squished to
``size`` x ``size``), saved losslessly and uncompressed (PPM), because our random changes (flips, rotations, zooms,
lighting) run afterwards on whole batches *at that size*; so the cached copy meets the loader's resize as
a no-op. (fastbook caches images larger than the target because its batch transforms crop and resize once
more, ``aug_transforms(size=224, min_scale=0.75)``; ours keep the size, so a larger copy would only add a
second resize every epoch.)

Each copy is keyed on the source's path, byte size and modification time and on the target size and
mode: a changed source is presized again, a new size gets its own folder. Sources smaller than the target
are read as they are. A JPEG much larger than the target is decoded at a reduced scale
(``Image.draft``: libjpeg's 1/2, 1/4 or 1/8 scaling, still twice the target size on each side). A file
that does not decode is left uncached, so the loader still reports it by name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastai.vision.core import PILImage, PILImageBW
from fasttransform.transform import Transform
from PIL import Image
from tqdm.auto import tqdm

from .augment import SquishResize
from .images import MAX_PIXELS, BadImageError, load_image

__all__ = ["FORMAT", "MANIFEST", "presize_images", "default_cache_dir", "OpenPresized"]

# The copies are lossless, so a copy holds exactly the pixels the loader's resize makes of the original (a JPEG at
# least four times the target on each side: within half a grey level on average, from its reduced-scale decode):
# metrics measured on the copies are those of the exported model, which reads originals. Uncompressed: Netpbm's
# binary PPM (P6, colour) or PGM (P5, grayscale), a short header and the raw 8-bit pixels, 150 KB at 224 px in
# colour. Reading one is a copy (0.1 ms at 224 px on this project's 2-core machine), where a PNG at zlib level 1
# (90 KB) took 1.5 to 3.5 ms to inflate and unfilter, longer than decoding the 500 x 375 JPEG it replaced (1 to
# 1.6 ms, measured side by side): with PNG copies the cache was slower to read than the originals.
FORMAT = "PPM"
COPIED = "sources with at least the target's pixels"  # `_worth_presizing`'s rule, as the manifest records it
MANIFEST = "manifest.json"


def default_cache_dir(dataset_folder: Path | str) -> Path:
    """``<parent>/.presized/<dataset folder name>``: beside the dataset, never inside it, so nothing that
    reads the dataset's own folders (file counts, cleaning, fastai's `get_image_files`) meets the copies."""
    folder = Path(dataset_folder).resolve()
    return folder.parent / ".presized" / folder.name


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _worth_presizing(path: str, size: int) -> bool:
    """True when the file's header says it has at least the target's pixels. A larger file is resized once
    instead of every epoch; one of the target's size (CIFAR's 32 px at 32) is stored raw, because reading a
    copy skips fastai's per-item path, about 1.5 ms an image on this project's 2-core machine where reading the
    copy takes 0.05 ms. A smaller one (CIFAR at 224) is read as it is and the loader's resize does the rest:
    its copy would be many times the file's size, on every learner's disk."""
    try:
        with Image.open(path) as im:
            return im.width * im.height >= size * size
    except Exception:  # noqa: BLE001  not an image: the loader, reading the original, will say what is wrong
        return False


def _write_copy(source: str, target: Path, size: int, mode: str, max_pixels: int | None) -> bool:
    """Write the presized copy of `source` to `target`; False (and nothing written) when it does not decode."""
    try:
        # a large JPEG decodes at libjpeg's 1/2, 1/4 or 1/8 scale, keeping both sides at least twice the target
        # (square, so the EXIF rotation applied after changes nothing): PIL's filtered resize then does the
        # last halving and more, which keeps the copy within half a grey level of resizing the full decode
        im = SquishResize(size).encodes(load_image(source, mode, max_pixels, draft=(2 * size, 2 * size)))
    except (BadImageError, OSError):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # processes presizing the same folder
    im.save(partial, FORMAT)
    partial.replace(target)  # a run stopped mid-write leaves no half copy under the final name
    return True


def presize_images(
    paths: Iterable[Path | str],
    size: int,
    cache_dir: Path | str,
    mode: str = "RGB",
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int | None = MAX_PIXELS,
) -> dict[str, str]:
    """{source path: presized copy} for those of `paths` worth presizing to `size` x `size`, writing the
    copies that are missing or older than their source into ``cache_dir/<size>px-<mode>``.

    The copies are written on `workers` threads (None: one per core; Pillow decodes, resizes and encodes
    without holding the GIL). Keys are the paths as given (``str(path)``), as an items table holds them.
    """
    from .runner import available_cores

    if mode not in ("RGB", "L"):
        raise ValueError(f"mode={mode!r}: presized copies are 'RGB' (colour) or 'L' (grayscale) images")
    folder = Path(cache_dir) / f"{size}px-{mode}"
    manifest_file = folder / MANIFEST
    # the rule of which files get a copy is a setting too: a manifest made under another rule is made again
    settings = {"size": size, "mode": mode, "format": FORMAT, "max_pixels": max_pixels, "copied": COPIED}
    entries: dict = {}
    if manifest_file.is_file():
        try:
            saved = json.loads(manifest_file.read_text(encoding="utf-8"))
            if saved.get("settings") == settings:
                entries = saved["files"]
        except (ValueError, KeyError, TypeError):  # cut short or edited: presize again
            entries = {}
    sources = list(dict.fromkeys(str(p) for p in paths))
    keys = {s: os.path.abspath(s) for s in sources}
    stamps = {s: _stamp(s) for s in sources}

    def current(source: str) -> bool:
        entry = entries.get(keys[source])
        return (entry is not None and stamps[source] is not None and entry[0] == stamps[source]
                and (entry[1] is None or (folder / entry[1]).is_file()))

    def build(source: str) -> tuple[str, str | None, bool]:
        """(source, its copy's name or None, whether to remember that): a file that does not decode is not
        remembered, so it is tried again next time, and meanwhile the loader reports it."""
        if stamps[source] is None:
            return source, None, False
        if not _worth_presizing(source, size):
            return source, None, True
        name = hashlib.sha1(keys[source].encode()).hexdigest()
        name = f"{name[:2]}/{name[2:20]}.{'pgm' if mode == 'L' else 'ppm'}"
        written = _write_copy(source, folder / name, size, mode, max_pixels)
        return source, name if written else None, written

    stale = [s for s in sources if not current(s)]
    if stale:
        workers = available_cores() if workers is None else max(1, workers)
        bar = tqdm(total=len(stale), desc=f"presizing images to {size}px", unit="img", disable=not progress)
        with bar, ThreadPoolExecutor(workers) as pool:
            for source, name, remember in pool.map(build, stale):
                if remember:
                    entries[keys[source]] = [stamps[source], name]
                bar.update()
        folder.mkdir(parents=True, exist_ok=True)
        partial = manifest_file.with_name(f"{MANIFEST}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"settings": settings, "files": entries}), encoding="utf-8")
        partial.replace(manifest_file)
    return {s: str(folder / entries[keys[s]][1]) for s in sources
            if keys[s] in entries and entries[keys[s]][1] is not None and stamps[s] is not None}


class OpenPresized(Transform):
    """The loader's image opener (`data._open_rgb` / `_open_gray`) that reads a file's presized copy when
    there is one: the same `images.load_image`, on the copy instead of the original. Files without a copy
    (a prediction's new image, a file too small to presize, a corrupt one) are opened as they are."""

    def __init__(self, cached: Mapping[str, str], mode: str = "RGB"):
        super().__init__()
        self.cached, self.mode = dict(cached), mode
        self.input_types = (Path, str)  # what fastai's test_dl matches a new item's type against

    def encodes(self, path: Path | str):
        cls = PILImageBW if self.mode == "L" else PILImage
        copy = self.cached.get(str(path))
        if copy is not None:
            try:  # a copy this module wrote: upright, in the mode asked for, a PPM: reading is a copy
                im = Image.open(copy, formats=[FORMAT])
                im.load()
                if im.mode == self.mode:
                    return cls(im)
            except Exception:  # noqa: BLE001  a copy damaged since (a full disk, a hand edit): read the original
                pass
        return cls.create(load_image(path, self.mode))
