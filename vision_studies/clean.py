"""Cleaning a dataset by what is wrong with its files and by the model's mistakes, headless and undoable.

`cleaning_report` lists unreadable images, exact and near duplicates, and (given a trained learner) the
images the model finds hardest, one row each: path, issue, detail, suggested_action, written as CSV so a
person can read it, strike rows, and hand the rest to `quarantine`. Quarantine moves files into a folder
beside the dataset, mirroring their paths, and deletes an original only once its copy has been checked;
`restore` puts them back. `cleaned_table` cleans without moving anything: the items table less the
report's rows, to retrain on and compare (`retrain.py`).
"""

from __future__ import annotations

import filecmp
import hashlib
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from fastai.data.transforms import get_image_files
from fastai.learner import Learner
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from .images import BadImageError, find_bad_images, load_image
from .metrics import decide

__all__ = [
    "REPORT_COLUMNS",
    "NEAR_DUPLICATE_BITS",
    "NEAR_DUPLICATE_PIXELS",
    "find_unreadable",
    "find_duplicates",
    "suspects_by_loss",
    "cleaning_report",
    "cleaned_table",
    "quarantine",
    "restore",
]

REPORT_COLUMNS = ["path", "issue", "detail", "suggested_action"]

# Near duplicates are found in two steps: a perceptual hash finds candidates cheaply, the pixels confirm.
# pHash keeps the signs of an image's 64 lowest DCT frequencies, which resizing and JPEG re-encoding
# hardly touch: on scikit-learn's and scikit-image's sample photos such copies (down to a quarter size,
# JPEG quality 40) moved at most 4 of the 64 bits, and a 3% crop mostly 4 to 8. Unrelated images differ
# in about 32 bits (each bit a coin toss); the closest two distinct sample photos were 20 apart. So 8 bits
# catches re-encodings and slight crops with room to spare and stays far below what unrelated photos share.
NEAR_DUPLICATE_BITS = 8
# Small, plain images (28x28 digits, flat backgrounds) share hashes without being copies: 13,142 pairs of
# the 1,797 digits in the MNIST fixture are within 8 bits. Copies also look alike pixel by pixel: on 16x16
# greyscale thumbnails, resized and re-encoded copies of the sample photos and of the Pets fixture's images
# differed from their originals by at most 1.9 grey levels (of 255) on average; distinct Pets images within
# 8 bits differed by 4.2 or more, and of the 13,142 digit pairs only 2 came within 3.
NEAR_DUPLICATE_PIXELS = 3.0
_THUMBNAIL = 16


def _relative(path: Path, folder: Path) -> str:
    """`path` as the report writes it: relative to the dataset folder, with forward slashes."""
    path = Path(path)
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _rows(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def find_unreadable(paths: Sequence[Path | str], folder: Path | str | None = None, progress: bool = True) -> pd.DataFrame:
    """Report rows for the images a model cannot use: empty, truncated, corrupt, not an image at all.

    What counts as bad is `images.find_bad_images`'s call (the loader refuses the same files); the
    detail starts with its name for the problem. Paths are relative to `folder` when they lie inside it.
    """
    folder = Path(folder) if folder is not None else Path.cwd()
    return _rows([
        dict(path=_relative(p.path, folder), issue="unreadable", detail=f"{p.problem}: {p.detail}", suggested_action="quarantine")
        for p in find_bad_images(paths, progress=progress)
    ])


def _fingerprints(paths: Sequence[Path], progress: bool) -> tuple[list[Path], list[str], list[int], np.ndarray, np.ndarray]:
    """For each image that opens: its pixel digest, pixel count, 64-bit pHash and greyscale thumbnail."""
    kept, digests, sizes, hashes, thumbnails = [], [], [], [], []
    for path in tqdm(paths, desc="hashing images", unit="img", disable=not progress):
        try:
            # As the model sees it (upright RGB), so the same picture saved as PNG, BMP or palette
            # PNG is the same pixels; size goes into the digest so that a resized copy is not.
            image = load_image(path, "RGB")
        except (BadImageError, OSError):
            continue  # find_unreadable reports it
        digest = hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()
        phash = int(str(imagehash.phash(image)), 16)
        grey = image.convert("L").resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.BOX)
        size = image.width * image.height
        kept.append(path)
        digests.append(digest)
        sizes.append(size)
        hashes.append(phash)
        thumbnails.append(np.asarray(grey, dtype=np.float32))
    return kept, digests, sizes, np.array(hashes, dtype=np.uint64), np.array(thumbnails).reshape(-1, _THUMBNAIL, _THUMBNAIL)


def _near_pairs(hashes: np.ndarray, thumbnails: np.ndarray, max_bits: int, max_pixels: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) within `max_bits` of each other whose thumbnails also agree within `max_pixels`."""
    firsts, seconds = [], []
    chunk = 1024  # rows at a time: all pairs of 50,000 images would be 20 GB at once
    for start in range(0, len(hashes), chunk):
        bits = np.bitwise_count(hashes[start : start + chunk, None] ^ hashes[None, :])
        i, j = np.nonzero(bits <= max_bits)
        i += start
        upper = i < j
        firsts.append(i[upper])
        seconds.append(j[upper])
    i, j = (np.concatenate(firsts), np.concatenate(seconds)) if firsts else (np.array([], int), np.array([], int))
    difference = np.abs(thumbnails[i] - thumbnails[j]).mean(axis=(1, 2)) if len(i) else np.array([])
    confirmed = difference <= max_pixels
    return i[confirmed], j[confirmed]


def find_duplicates(
    paths: Sequence[Path | str],
    folder: Path | str | None = None,
    near_bits: int | None = NEAR_DUPLICATE_BITS,
    near_pixels: float = NEAR_DUPLICATE_PIXELS,
    progress: bool = True,
) -> pd.DataFrame:
    """Report rows for every copy but one of each exact or near duplicate image.

    Exact duplicates have the same pixels (same bytes, or the same picture saved again losslessly); of
    each group the first path in sorted order stays. Near duplicates look the same: pHashes within
    `near_bits` bits and 16x16 greyscale thumbnails within `near_pixels` grey levels on average (see
    `NEAR_DUPLICATE_BITS`); of each group the image with the most pixels stays, as the best copy.
    `near_bits=None` looks for exact duplicates only. Files that do not open are skipped:
    `find_unreadable` reports them.
    """
    folder = Path(folder) if folder is not None else Path.cwd()
    paths = sorted(Path(p) for p in paths)
    kept, digests, sizes, hashes, thumbnails = _fingerprints(paths, progress)
    rows, first_of = [], {}
    for index, (path, digest) in enumerate(zip(kept, digests)):
        if digest in first_of:
            original = kept[first_of[digest]]
            rows.append(dict(path=_relative(path, folder), issue="exact_duplicate",
                             detail=f"same pixels as {_relative(original, folder)}", suggested_action="quarantine"))
        else:
            first_of[digest] = index
    if near_bits is not None and first_of:
        unique = np.array(sorted(first_of.values()))  # one image per exact group
        i, j = _near_pairs(hashes[unique], thumbnails[unique], near_bits, near_pixels)
        n = len(unique)
        # A chain of look-alikes (a ~ b ~ c) is one group: one copy of it stays.
        _, group = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
        for g in np.flatnonzero(np.bincount(group) > 1):
            members = [unique[m] for m in np.flatnonzero(group == g)]
            best = max(members, key=lambda m: (sizes[m], -m))  # most pixels; ties: the first path
            for m in members:
                if m == best:
                    continue
                bits = int(np.bitwise_count(hashes[m] ^ hashes[best]))
                rows.append(dict(
                    path=_relative(kept[m], folder), issue="near_duplicate",
                    detail=f"looks like {_relative(kept[best], folder)} (pHash {bits} bits apart; "
                           f"{sizes[m]} vs {sizes[best]} pixels)",
                    suggested_action="quarantine",
                ))
    return _rows(rows)


def suspects_by_loss(learn: Learner, k: int = 20, ds_idx: int = 1, folder: Path | str | None = None,
                     disputed_only: bool = False) -> pd.DataFrame:
    """Report rows for the `k` images of a split (1: validation, 0: training) with the highest loss.

    These are the model's worst mistakes, often wrong labels or images that show no class at all; a
    person decides (suggested action "review"). Every image is scored as validation sees it, without
    augmentation. `disputed_only` keeps only images the model puts in another class than their label's
    (multi-label: decides at least one label otherwise): a hard image the model still gets right is no
    suspect of a wrong label. The detail ends with the split, as training and validation suspects differ:
    a wrong training label teaches the model something false; a wrong validation label only mis-scores it.
    """
    items = learn.dls[ds_idx].items
    # A table of items (this package's loaders: path, label, is_valid) or a plain list of files.
    paths = list(items["path"]) if isinstance(items, pd.DataFrame) and "path" in items else list(items)
    if not paths or not isinstance(paths[0], (str, Path)):
        raise ValueError(f"split {ds_idx} of the learner's DataLoaders lists no image files (a list of paths, or a "
                         "table with a 'path' column); suspects_by_loss needs them to name the suspects")
    dl = learn.dls.test_dl(items, with_labels=True)
    probs, targets, losses = learn.get_preds(dl=dl, with_loss=True)
    folder = Path(folder) if folder is not None else Path.cwd()
    vocab = [str(c) for c in learn.dls.vocab]
    split = {0: "training", 1: "validation"}.get(ds_idx, f"split {ds_idx}")
    order = losses.argsort(descending=True).tolist()
    if disputed_only:
        if targets.ndim == 1:
            disputed = (probs.argmax(dim=1) != targets).tolist()
        else:
            threshold = getattr(learn.loss_func, "thresh", 0.5)
            disputed = [bool((decide(probs[i], threshold) != (targets[i].numpy() > 0.5)).any()) for i in range(len(targets))]
        order = [i for i in order if disputed[i]]
    rows = []
    for i in order[:k]:
        if targets.ndim == 1:
            actual, predicted = int(targets[i]), int(probs[i].argmax())
            what = f"labelled {vocab[actual]}, predicted {vocab[predicted]} ({float(probs[i, predicted]):.2f})"
        else:  # multi-label: the labels it has and the ones the model sees
            has = [vocab[c] for c in np.flatnonzero(targets[i].numpy() > 0.5)]
            sees = [vocab[c] for c in np.flatnonzero(decide(probs[i], getattr(learn.loss_func, "thresh", 0.5)))]
            what = f"labelled {'+'.join(has) or 'nothing'}, predicted {'+'.join(sees) or 'nothing'}"
        rows.append(dict(path=_relative(Path(paths[i]), folder), issue="high_loss",
                         detail=f"{what}, loss {float(losses[i]):.2f}, {split} image", suggested_action="review"))
    return _rows(rows)


def cleaning_report(
    folder: Path | str,
    learn: Learner | None = None,
    k: int = 20,
    csv_path: Path | str | None = None,
    near_bits: int | None = NEAR_DUPLICATE_BITS,
    progress: bool = True,
    splits: Sequence[int] = (1,),
    disputed_only: bool = False,
) -> pd.DataFrame:
    """Everything worth a look in the images under `folder`, as one table (and a CSV at `csv_path`).

    Unreadable images first, then exact and near duplicates among the readable ones, then, given a
    trained `learn`, the `k` images with the highest loss of each of `splits` (1: validation, 0: training;
    `disputed_only`: only those the model puts in another class, see `suspects_by_loss`). Paths are
    relative to `folder`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: cleaning_report needs the dataset's folder")
    paths = sorted(get_image_files(folder))
    unreadable = find_unreadable(paths, folder, progress)
    bad = set(unreadable["path"])
    readable = [p for p in paths if _relative(p, folder) not in bad]
    parts = [unreadable, find_duplicates(readable, folder, near_bits, progress=progress)]
    if learn is not None:
        parts += [suspects_by_loss(learn, k, ds_idx=split, folder=folder, disputed_only=disputed_only) for split in splits]
    report = pd.concat([p for p in parts if len(p)] or [_rows([])], ignore_index=True)
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        report.to_csv(csv_path, index=False)
    return report


def cleaned_table(table: pd.DataFrame, report_rows: pd.DataFrame | Iterable[Mapping], folder: Path | str) -> pd.DataFrame:
    """The items table (`data.items_table`'s rows: path, label, is_valid) without the images the report lists.

    Retraining on this is cleaning without moving a file: the same split, less the suspects, so a model
    trained on it can be set beside the one trained on everything. Report paths are relative to `folder`,
    the dataset's folder. Rows for files the table does not hold (a class the study leaves out, a file the
    loader refused) change nothing; a row naming no file in `folder` is an error, since a report made from
    another folder would otherwise remove nothing and look like a clean bill of health.
    """
    folder = Path(folder)
    if isinstance(report_rows, pd.DataFrame):
        report_rows = report_rows.to_dict("records")
    listed = {str(row["path"]) for row in report_rows}
    missing = sorted(p for p in listed if not (folder / p).is_file())
    if missing:
        raise ValueError(f"the report lists {len(missing)} file(s) not in {folder}, e.g. {missing[0]!r}: pass the folder "
                         "the report was made from (quarantined files are no longer there either)")
    relative = table["path"].map(lambda p: _relative(Path(p), folder))
    return table[~relative.isin(listed)].reset_index(drop=True)


def _move_checked(source: Path, destination: Path) -> None:
    """Copy, compare byte for byte, and only then delete the original: a failure leaves the original."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    shutil.copy2(source, partial)
    if not filecmp.cmp(source, partial, shallow=False):
        partial.unlink()
        raise OSError(f"the copy of {source} at {partial} differs from the original; {source} is left in place")
    partial.replace(destination)
    source.unlink()


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _planned_moves(rows: Iterable[Mapping], source_root: Path, target_root: Path) -> list[tuple[Path, Path, dict]]:
    """Check every row before anything moves, so a bad row cannot leave the job half done."""
    moves, seen = [], set()
    for n, row in enumerate(rows):
        if "path" not in row:
            raise ValueError(f"row {n} has no 'path' (report rows have the columns {', '.join(REPORT_COLUMNS)})")
        relative = Path(str(row["path"]))
        if relative.as_posix() in seen:
            continue  # one file can have several issues; it moves once
        source = source_root / relative
        if relative.is_absolute() or not _inside(source, source_root):
            raise ValueError(f"row {n}: path {row['path']!r} is not a path inside {source_root}")
        if not source.is_file():
            raise FileNotFoundError(f"row {n}: {source} does not exist (moved already, or the report is from another folder)")
        if (target_root / relative).exists():
            raise FileExistsError(f"row {n}: {target_root / relative} exists already; move or remove it, then try again")
        seen.add(relative.as_posix())
        moves.append((source, target_root / relative, dict(row)))
    return moves


_MANIFEST = "quarantine.csv"


def quarantine(report_rows: pd.DataFrame | Iterable[Mapping], folder: Path | str, quarantine_dir: Path | str) -> pd.DataFrame:
    """Move the files of the chosen report rows from `folder` into `quarantine_dir`, keeping their relative paths.

    Pass the rows you agree with (a filtered report, or the CSV after editing). Each file is copied,
    the copy compared byte for byte with the original, and only then the original removed. The moves are
    appended to ``quarantine.csv`` in `quarantine_dir`, which `restore` reads to undo them. The quarantine
    must lie outside the dataset folder, or the loaders would still find the files.
    """
    folder, quarantine_dir = Path(folder), Path(quarantine_dir)
    if _inside(quarantine_dir, folder) or _inside(folder, quarantine_dir):
        raise ValueError(f"quarantine_dir {quarantine_dir} and folder {folder} must not contain each other: "
                         "put the quarantine beside the dataset, not in it")
    if isinstance(report_rows, pd.DataFrame):
        report_rows = report_rows.to_dict("records")
    moves = _planned_moves(report_rows, folder, quarantine_dir)
    done = []
    try:
        for source, destination, row in moves:
            _move_checked(source, destination)
            done.append({**{c: row.get(c, "") for c in REPORT_COLUMNS}, "quarantined_to": destination.as_posix()})
    finally:  # a move that fails half way still leaves a manifest of the ones before it, for `restore`
        log = pd.DataFrame(done, columns=[*REPORT_COLUMNS, "quarantined_to"])
        if done:
            manifest = quarantine_dir / _MANIFEST
            log.to_csv(manifest, mode="a", header=not manifest.exists(), index=False)
    return log


def restore(quarantine_dir: Path | str, folder: Path | str) -> pd.DataFrame:
    """Undo `quarantine`: move every file its manifest lists back to where it was, checked the same way."""
    quarantine_dir, folder = Path(quarantine_dir), Path(folder)
    manifest = quarantine_dir / _MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} does not exist: {quarantine_dir} holds no quarantine made by quarantine()")
    log = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    waiting = [row for row in log.to_dict("records") if (quarantine_dir / row["path"]).is_file()]
    moves = _planned_moves(waiting, quarantine_dir, folder)
    for source, destination, _ in moves:
        _move_checked(source, destination)
    remaining = log[[(quarantine_dir / p).is_file() for p in log["path"]]]
    remaining.to_csv(manifest, index=False)
    return pd.DataFrame([row for _, _, row in moves], columns=log.columns)
