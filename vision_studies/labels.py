"""Check labels before training on them: a label CSV row by row, and a folder of class folders.

A typo in a label file or an empty class folder otherwise surfaces as a cryptic error deep in the data
pipeline, or not at all: a class with no images trains a model that can never predict it. These checks
name the line, file or folder, and the fix. What training can live with (heavy imbalance, a class
missing from one split) is a warning instead.
"""

from __future__ import annotations

import csv
import difflib
import io
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from fastai.data.transforms import image_extensions

from .errors import VisionStudiesError

__all__ = ["LabelError", "LabelWarning", "IMBALANCE_RATIO", "read_label_csv", "check_class_folders"]

# Largest class over smallest class at which we warn. Below 10:1 plain cross-entropy copes and accuracy
# still means something; from 10:1 a model that always answers the big class scores over 90% on two
# classes, so accuracy hides the small ones: look at per-class recall and F1, or resample. (Microsoft's
# Cats vs Dogs and Oxford Pets are close to 1:1, MNIST 1.2:1; the seeds' own folders are well under 10:1.)
IMBALANCE_RATIO = 10.0
MAX_LISTED = 10  # problems shown in one error; the rest are counted
TRUE, FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}


class LabelError(VisionStudiesError, ValueError):
    """Labels that cannot be trained on as they are; the message names the row, file or folder, and the fix."""


class LabelWarning(UserWarning):
    """Labels that can be trained on, but not as well as they might."""


def _raise_all(source: Path, problems: list[str], fix: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise LabelError(f"{source}: {len(problems)} problem(s):\n  {shown}{more}\n{fix}")


def _imbalance(counts: dict[str, int], where: str) -> list[str]:
    counted = {name: n for name, n in counts.items() if n > 0}
    if len(counted) < 2:
        return []
    big, small = max(counted, key=counted.get), min(counted, key=counted.get)
    ratio = counted[big] / counted[small]
    if ratio < IMBALANCE_RATIO:
        return []
    return [
        f"{where}: classes are imbalanced {ratio:.0f}:1 ({big!r} has {counted[big]} images, {small!r} "
        f"{counted[small]}); accuracy will flatter the model: read per-class recall and F1, or resample"
    ]


def _warn(messages: list[str]) -> list[str]:
    for message in messages:
        warnings.warn(message, LabelWarning, stacklevel=3)
    return messages


def _flag(value: str, line: int, column: str) -> bool | str:
    word = value.strip().lower()
    if word in TRUE or word in FALSE:
        return word in TRUE
    return f"line {line}: {column} is {value!r}; write True or False (1 or 0)"


def _unknown(label: str, classes: Sequence[str]) -> str:
    close = difflib.get_close_matches(label, classes, n=1)
    return f"unknown label {label!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def read_label_csv(
    csv_path: Path | str,
    image_folder: Path | str,
    fname_col: str = "fname",
    labels_col: str = "labels",
    valid_col: str | None = None,
    label_delim: str = " ",
    classes: Sequence[str] | None = None,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """The rows of a (multi-)label CSV, checked: each names an image that exists, and labels we know.

    Labels are split on `label_delim`, stripped and de-duplicated, and written back joined by it (what
    fastai's ``ColReader(labels_col, label_delim=...)`` reads); `valid_col`, when given, becomes booleans.
    Raises `LabelError` naming the CSV line of every malformed row, missing or duplicated file, empty
    label (unless `allow_empty`: an image with no labels is a negative for every class) and, when
    `classes` is given, unknown label, with the closest known one. Classes no row uses are a `LabelWarning`.
    """
    csv_path, image_folder = Path(csv_path), Path(image_folder)
    data = csv_path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # utf-8-sig: Excel starts its CSVs with a byte-order mark
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LabelError(
            f"{csv_path}: line {line} is not UTF-8 text (byte {e.start}); save the file as CSV UTF-8"
        ) from e
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error):
        raise LabelError(
            f"{csv_path}: empty; the first line must name the columns, e.g. {fname_col},{labels_col}"
        ) from None
    wanted = [c for c in (fname_col, labels_col, valid_col) if c]
    missing = [c for c in wanted if c not in header]
    if missing or len(set(header)) != len(header):
        raise LabelError(
            f"{csv_path}: its header names the columns {header}, but the reader needs {wanted} once each"
            f"{' (missing: ' + ', '.join(missing) + ')' if missing else ''}; rename the columns or pass "
            "fname_col=, labels_col=, valid_col="
        )
    known = set(classes) if classes is not None else None
    rows, problems, first_line, used = [], [], {}, Counter()
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(f"line {reader.line_num}: {e} (a quote that is never closed?)")
            break
        line = reader.line_num
        if not fields or fields == [""]:  # blank line
            continue
        if len(fields) != len(header):
            problems.append(
                f"line {line}: {len(fields)} fields where the header has {len(header)} (a comma inside a name or "
                "label needs the field in double quotes)"
            )
            continue
        row = dict(zip(header, fields))
        fname = row[fname_col].strip()
        if not fname:
            problems.append(f"line {line}: no file name in column {fname_col!r}")
            continue
        path = image_folder / fname
        if Path(fname).is_absolute() or ".." in Path(fname).parts:  # by name: a symlinked image folder is fine
            problems.append(f"line {line}: file name {fname!r} points outside {image_folder}")
        elif not path.is_file():
            problems.append(f"line {line}: {path} does not exist")
        if fname in first_line:
            problems.append(f"line {line}: {fname!r} is already on line {first_line[fname]}")
        first_line.setdefault(fname, line)
        labels = list(dict.fromkeys(t.strip() for t in row[labels_col].split(label_delim) if t.strip()))
        if not labels and not allow_empty:
            problems.append(
                f"line {line}: no label for {fname!r} (pass allow_empty=True if that means none of the classes)"
            )
        for label in labels:
            if known is not None and label not in known:
                problems.append(f"line {line}: {_unknown(label, classes)}")
        used.update(labels)
        row[fname_col], row[labels_col] = fname, label_delim.join(labels)
        if valid_col:
            flag = _flag(row[valid_col], line, valid_col)
            if isinstance(flag, str):
                problems.append(flag)
            row[valid_col] = flag
        rows.append(row)
    fix = "Fix those lines in the CSV (or the files in the image folder), then run again."
    _raise_all(csv_path, problems, fix)
    if not rows:
        raise LabelError(f"{csv_path}: a header and no rows; each row names an image file and its labels")
    frame = pd.DataFrame(rows, columns=header)
    if valid_col:
        n_valid = int(frame[valid_col].sum())
        if n_valid in (0, len(frame)):
            split = "validation" if n_valid == 0 else "training"
            raise LabelError(f"{csv_path}: no row is for {split} ({valid_col} is {n_valid == len(frame)} on every row)")
    messages = []
    if classes is not None:
        unused = [c for c in classes if c not in used]
        if unused:
            messages.append(f"{csv_path}: no row has the class(es) {unused}; the model will never learn them")
    _warn(messages + _imbalance(dict(used), str(csv_path)))
    return frame


def _images_in(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in image_extensions]


def check_class_folders(folder: Path | str, split_names: Sequence[str] | None = None) -> list[str]:
    """Check a ``<folder>/[<split>/]<class>/<image>`` layout; return what can be trained on but should be looked at.

    Raises `LabelError` for a missing folder, a split or class folder without images, and a single class
    (a classifier needs two). Warns (`LabelWarning`, and in the list returned) about images outside any
    class folder, images in sub-folders of a class folder (labelled by the sub-folder's name, so
    probably wrongly), a class missing from one split, and classes imbalanced `IMBALANCE_RATIO`:1 or more.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelError(f"{folder} is not a folder; point at the folder that holds one sub-folder of images per class")
    splits = [folder / name for name in split_names] if split_names else [folder]
    messages, problems, per_split = [], [], {}
    for split in splits:
        if not split.is_dir():
            problems.append(f"{split} is missing: the layout is {folder}/<{'|'.join(split_names)}>/<class>/<image>")
            continue
        classes = sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))
        loose = _images_in(split)
        if loose:
            messages.append(f"{split}: {len(loose)} image(s) in no class folder (e.g. {loose[0].name}) are left out")
        counts = {}
        for class_folder in classes:
            counts[class_folder.name] = len(_images_in(class_folder))
            nested = [
                p for p in class_folder.iterdir() if p.is_dir() and any(_images_in(q) for q in [p, *p.rglob("*/")])
            ]
            if nested:
                messages.append(
                    f"{nested[0]}: images in a sub-folder of class {class_folder.name!r} are labelled "
                    f"{nested[0].name!r}, not {class_folder.name!r}; move them up a level"
                )
            if counts[class_folder.name] == 0:
                problems.append(
                    f"{class_folder} has no images; add some, or delete the folder if that class is not wanted"
                )
        if not classes:
            problems.append(f"{split} has no class folders; put each class's images in {split}/<class>/")
        elif len(classes) == 1:
            problems.append(
                f"{split} has one class folder ({classes[0].name}); a classifier needs two or more, each in its "
                "own folder"
            )
        per_split[split] = counts
        messages += _imbalance(counts, str(split))
    _raise_all(folder, problems, "Fix the folders listed, then run again.")
    every = sorted(set().union(*(counts for counts in per_split.values())))
    for split, counts in per_split.items():
        absent = [c for c in every if c not in counts]
        if absent:
            messages.append(f"{split}: no folder for class(es) {absent}, which other splits have")
    return _warn(messages)
