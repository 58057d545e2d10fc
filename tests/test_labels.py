"""Labels: a label CSV and class folders, each kind of mistake a clear error or a warning that names it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vision_studies.labels import IMBALANCE_RATIO, LabelError, LabelWarning, check_class_folders, read_label_csv

CLASSES = ("cat", "dog", "person")


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), "red").save(path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "train"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "with, comma.jpg"):
        _image(folder / name)
    return folder


def _csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode(encoding))
    return path


GOOD = """fname,labels,is_valid
a.jpg,cat person,False
b.jpg,dog,True
c.jpg,  dog   cat  dog ,false
"with, comma.jpg",person,1
"""


def test_good_csv_reads_as_pandas_does_with_labels_tidied(tmp_path, images):
    path = _csv(tmp_path, GOOD)
    frame = read_label_csv(path, images, valid_col="is_valid", classes=CLASSES)
    reference = pd.read_csv(path)  # the trusted reader, for what needs no tidying
    assert list(frame.columns) == list(reference.columns)
    assert frame["fname"].tolist() == reference["fname"].tolist()
    assert frame["labels"].tolist() == ["cat person", "dog", "dog cat", "person"]  # split, stripped, de-duplicated
    assert frame["is_valid"].tolist() == [False, True, False, True]

    from fastai.data.transforms import ColReader

    read = ColReader("labels", label_delim=" ")  # what a fastai DataBlock would make of each row
    assert [read(row) for _, row in frame.iterrows()] == [["cat", "person"], ["dog"], ["dog", "cat"], ["person"]]


def test_excel_byte_order_mark_and_other_delimiters(tmp_path, images):
    path = _csv(tmp_path, "\ufefffname,labels\na.jpg,cat;dog\nb.jpg, dog ;\n")
    frame = read_label_csv(path, images, label_delim=";", classes=("cat", "dog"))
    assert frame["labels"].tolist() == ["cat;dog", "dog"]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("a.jpg,cat\nzzz.jpg,dog\n", r"line 3: .*zzz.jpg does not exist"),
        ("a.jpg,cat\nb.jpg,\n", r"line 3: no label for 'b.jpg' \(pass allow_empty=True"),
        ("a.jpg,cat\nb.jpg,   \n", r"line 3: no label"),
        ("a.jpg,dgo\n", r"line 2: unknown label 'dgo' \(did you mean 'dog'\?\)"),
        ("a.jpg,cat horse\n", r"line 2: unknown label 'horse'\n"),
        ("a.jpg,cat\nb.jpg,dog,extra\n", r"line 3: 3 fields where the header has 2 \(a comma inside"),
        ("a.jpg\n", r"line 2: 1 fields where the header has 2"),
        ('a.jpg,cat\n"b.jpg,dog\n', r"line 3: .*quote that is never closed"),
        ("a.jpg,cat\nb.jpg,dog\na.jpg,dog\n", r"line 4: 'a.jpg' is already on line 2"),
        (",cat\n", r"line 2: no file name in column 'fname'"),
        ("../../etc/passwd,cat\n", r"line 2: file name '../../etc/passwd' points outside"),
        ("/etc/passwd,cat\n", r"line 2: file name '/etc/passwd' points outside"),
    ],
)
def test_each_bad_row_is_named_by_its_line(body, expected, tmp_path, images):
    path = _csv(tmp_path, "fname,labels\n" + body)
    with pytest.raises(LabelError, match=expected) as err:
        read_label_csv(path, images, classes=CLASSES)
    assert str(path) in str(err.value) and "Fix those lines" in str(err.value)


def test_every_problem_is_listed_up_to_ten_then_counted(tmp_path, images):
    body = "".join(f"missing{i}.jpg,cat\n" for i in range(13))
    listed = r"(?s)13 problem\(s\).*missing9.jpg does not exist\n  \.\.\. and 3 more"
    with pytest.raises(LabelError, match=listed) as err:
        read_label_csv(_csv(tmp_path, "fname,labels\n" + body), images)
    assert "missing10.jpg" not in str(err.value)


@pytest.mark.parametrize(
    "text, kwargs, expected",
    [
        ("", {}, r"empty; the first line must name the columns, e.g. fname,labels"),
        ("fname,labels\n", {}, r"a header and no rows"),
        ("name,tags\na.jpg,cat\n", {},
         r"header names the columns \['name', 'tags'\].*missing: fname, labels.*fname_col="),
        ("fname,labels,fname\na.jpg,cat,a.jpg\n", {}, r"once each"),
        ("fname,labels\na.jpg,cat\n", {"valid_col": "is_valid"}, r"missing: is_valid"),
        ("fname,labels,is_valid\na.jpg,cat,maybe\nb.jpg,dog,1\n", {"valid_col": "is_valid"},
         r"line 2: is_valid is 'maybe'; write True or False"),
        ("fname,labels,is_valid\na.jpg,cat,0\nb.jpg,dog,no\n", {"valid_col": "is_valid"}, r"no row is for validation"),
        ("fname,labels,is_valid\na.jpg,cat,1\nb.jpg,dog,yes\n", {"valid_col": "is_valid"}, r"no row is for training"),
    ],
)
def test_whole_file_problems(text, kwargs, expected, tmp_path, images):
    with pytest.raises(LabelError, match=expected):
        read_label_csv(_csv(tmp_path, text), images, **kwargs)


def test_file_that_is_not_utf8_says_how_to_save_it(tmp_path, images):
    with pytest.raises(LabelError, match=r"line 2 is not UTF-8 text \(byte 23\); save the file as CSV UTF-8"):
        read_label_csv(_csv(tmp_path, "fname,labels\na.jpg,chat\xe9\n", encoding="latin-1"), images)


def test_empty_labels_allowed_when_asked(tmp_path, images):
    frame = read_label_csv(_csv(tmp_path, "fname,labels\na.jpg,\nb.jpg,cat\n"), images, allow_empty=True)
    assert frame["labels"].tolist() == ["", "cat"]


def test_unused_classes_and_imbalance_are_warnings(tmp_path, images):
    body = "a.jpg,cat\n" + "".join(f"{n}.jpg,dog\n" for n in "bcd")
    with pytest.warns(LabelWarning, match=r"no row has the class\(es\) \['person'\]"):
        read_label_csv(_csv(tmp_path, "fname,labels\n" + body), images, classes=CLASSES)


# --- class folders -------------------------------------------------------------------------------------


def _folders(root: Path, counts: dict[str, int], split: str = "") -> Path:
    for name, n in counts.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _image(root / split / name / f"{i}.png")
    return root


def test_mnist_layout_passes_without_warnings(mnist):
    _, path = mnist
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_class_folders(path, ["training", "testing"]) == []


@pytest.mark.parametrize(
    "counts, expected",
    [
        ({"cat": 3, "dog": 0}, r"dog has no images; add some, or delete the folder"),
        ({"cat": 3}, r"has one class folder \(cat\); a classifier needs two or more"),
        ({}, r"has no class folders; put each class's images in"),
    ],
)
def test_folder_problems_are_errors_naming_the_folder(counts, expected, tmp_path):
    root = _folders(tmp_path / "data", counts)
    root.mkdir(exist_ok=True)
    with pytest.raises(LabelError, match=expected):
        check_class_folders(root)


def test_folder_of_non_images_counts_as_empty(tmp_path):
    root = _folders(tmp_path / "data", {"cat": 2})
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(LabelError, match="dog has no images"):
        check_class_folders(root)


def test_missing_split_and_missing_folder(tmp_path):
    root = _folders(tmp_path / "data", {"cat": 2, "dog": 2}, split="training")
    with pytest.raises(LabelError, match=r"testing is missing: the layout is .*<training\|testing>/<class>/<image>"):
        check_class_folders(root, ["training", "testing"])
    with pytest.raises(LabelError, match="is not a folder"):
        check_class_folders(tmp_path / "nowhere")


def test_heavy_imbalance_warns_with_the_ratio(tmp_path):
    assert IMBALANCE_RATIO == 10
    root = _folders(tmp_path / "heavy", {"cat": 20, "dog": 2})
    with pytest.warns(LabelWarning, match=r"imbalanced 10:1 \('cat' has 20 images, 'dog' 2\)"):
        messages = check_class_folders(root)
    assert len(messages) == 1
    mild = _folders(tmp_path / "mild", {"cat": 18, "dog": 2})  # 9:1
    assert check_class_folders(mild) == []


def test_layout_slips_are_warnings(tmp_path):
    root = _folders(tmp_path / "data", {"cat": 2, "dog": 2, "bird": 1}, split="train")
    _folders(root, {"cat": 1, "dog": 1}, split="valid")
    _image(root / "train" / "stray.png")
    _image(root / "train" / "cat" / "kittens" / "k.png")
    with pytest.warns(LabelWarning) as record:
        messages = check_class_folders(root, ["train", "valid"])
    assert [str(w.message) for w in record] == messages
    joined = "\n".join(messages)
    assert "1 image(s) in no class folder (e.g. stray.png) are left out" in joined
    assert "labelled 'kittens', not 'cat'; move them up a level" in joined
    assert f"{root / 'valid'}: no folder for class(es) ['bird']" in joined
