"""Property-based tests: whatever bytes or text come in, the image loader and the label readers either work
or fail with the project's own clear errors (BadImageError, LabelError), never anything else."""

from __future__ import annotations

import atexit
import csv
import io
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from vision_studies.images import BadImageError, find_bad_images, load_image
from vision_studies.labels import LabelError, LabelWarning, check_class_folders, read_label_csv

# Bounded, so a mutated header that claims a huge size is refused instead of decoded (which is tested elsewhere).
LIMIT = 1_000_000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCRATCH = Path(tempfile.mkdtemp(prefix="fuzz-"))  # module-wide: hypothesis runs each test many times
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


@pytest.fixture(autouse=True)
def quiet_pil():
    # Pillow warns about corrupt EXIF and the like on its way to our error; the warnings are not failures
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _file(data: bytes, name: str = "x.img") -> Path:
    path = SCRATCH / name
    path.write_bytes(data)
    return path


def _encoded(mode: str, fmt: str, size=(13, 9)) -> bytes:
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    im.save(buffer, fmt)
    return buffer.getvalue()


SEEDS = [
    _encoded("RGB", "PNG"), _encoded("RGB", "JPEG"), _encoded("P", "GIF"), _encoded("RGB", "BMP"),
    _encoded("RGB", "TIFF"), _encoded("RGB", "WEBP"), _encoded("RGBA", "PNG"), _encoded("L", "JPEG"),
    _encoded("CMYK", "JPEG"), _encoded("RGB", "ICO"), _encoded("RGB", "PPM"), _encoded("LA", "PNG"),
]


def _check_load(path: Path) -> None:
    """The property: an RGB image with pixels, or BadImageError naming the file; and find_bad_images agrees."""
    try:
        im = load_image(path, "RGB", max_pixels=LIMIT)
    except BadImageError as e:
        assert str(path) in str(e) and e.problem
        loaded = False
    else:
        assert im.mode == "RGB" and im.width * im.height >= 1
        np.asarray(im)  # the pixels are really there
        loaded = True
    problems = find_bad_images([path], max_pixels=LIMIT, progress=False)
    assert (not problems) == loaded


@FUZZ
@given(st.binary(max_size=3000))
def test_any_bytes_load_or_raise_bad_image_error(data):
    _check_load(_file(data))


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_damaged_real_images_load_or_raise_bad_image_error(seed, flips, cut):
    """Real files of every common format, with bytes changed and cut short: the damage a download does."""
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _check_load(_file(bytes(data)))


LOSSLESS = {"L": ["PNG", "BMP", "TIFF"], "RGB": ["PNG", "BMP", "TIFF", "PPM"], "RGBA": ["PNG", "TIFF"],
            "P": ["PNG", "GIF", "BMP"], "1": ["PNG", "BMP"], "I;16": ["PNG", "TIFF"], "LA": ["PNG"]}


@FUZZ
@given(
    st.sampled_from(sorted(LOSSLESS)), st.data(), st.integers(1, 40), st.integers(1, 40), st.sampled_from(["RGB", "L"])
)
def test_valid_images_of_any_mode_and_size_load_with_their_size(mode, data, width, height, target):
    fmt = data.draw(st.sampled_from(LOSSLESS[mode]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    im = Image.fromarray(pixels, "RGBA").convert(mode) if mode != "I;16" else Image.fromarray(
        pixels[..., 0].astype(np.uint16) * 257)
    buffer = io.BytesIO()
    im.save(buffer, fmt)
    out = load_image(_file(buffer.getvalue()), target)
    assert out.mode == target and out.size == (width, height)
    if mode in ("RGB", "L") and target == mode:  # lossless and nothing to convert: the very same pixels
        assert np.array_equal(np.asarray(out), np.asarray(im))
    if mode == "I;16":  # 16-bit scaled back to the 8 bits it was made from
        assert np.array_equal(np.asarray(out if target == "L" else out.convert("L")), pixels[..., 0])


def test_fuzzing_left_pils_switches_alone():
    assert Image.MAX_IMAGE_PIXELS == 89_478_485 and ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- label CSVs ------------------------------------------------------------------------------------------

IMAGES = SCRATCH / "images"
IMAGES.mkdir()
NAMES = ["a.jpg", "b c.jpg", "d,e.jpg", "f.jpg"]
for name in NAMES:
    (IMAGES / name).write_bytes(b"")
CLASSES = ["cat", "dog", "person"]


def _read(text: str, **kwargs):
    path = SCRATCH / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelWarning)
        return read_label_csv(path, IMAGES, **kwargs)


@FUZZ
@given(st.text(max_size=400))
def test_any_text_reads_or_raises_label_error(text):
    try:
        frame = _read(text, classes=CLASSES)
    except LabelError as e:
        assert "labels.csv" in str(e)
    else:
        assert len(frame) >= 1 and set(frame["fname"]) <= set(NAMES)


DAMAGES = [None, None, "typo", "empty labels", "missing file", "extra field", "bad flag", "duplicate"]


@st.composite
def label_csvs(draw):
    """A good CSV in any of csv's quoting styles, maybe with one damaged row; (text, damage, line, good rows)."""
    fnames = draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=2, max_size=4))
    flags = [True, False] + [draw(st.booleans()) for _ in fnames[2:]]
    rows = [[f, draw(st.lists(st.sampled_from(CLASSES), min_size=1, max_size=4)), v] for f, v in zip(fnames, flags)]
    spelled = [[f, draw(st.sampled_from([" ", "  "])).join(labels), draw(st.sampled_from([str(v), str(int(v))]))]
               for f, labels, v in rows]
    damage, where = draw(st.sampled_from(DAMAGES)), draw(st.integers(0, len(rows) - 1))
    if damage == "typo":
        spelled[where][1] += " " + draw(st.sampled_from(["dgo", "Cat", "persn", "horse"]))
    elif damage == "empty labels":
        spelled[where][1] = draw(st.sampled_from(["", " ", "   "]))
    elif damage == "missing file":
        spelled[where][0] = "nowhere.jpg"
    elif damage == "extra field":
        spelled[where].append("x")
    elif damage == "bad flag":
        spelled[where][2] = draw(st.sampled_from(["maybe", "2", "", "valid"]))
    elif damage == "duplicate":
        spelled.append(list(spelled[0]))
        where = len(spelled) - 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
                        lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerows([["fname", "labels", "is_valid"], *spelled])
    return buffer.getvalue(), damage, where + 2, rows


@FUZZ
@given(label_csvs())
def test_good_csvs_read_right_and_a_damaged_row_is_named_by_its_line(case):
    text, damage, line, rows = case
    try:
        frame = _read(text, valid_col="is_valid", classes=CLASSES)
    except LabelError as e:
        assert damage is not None, e
        assert f"line {line}:" in str(e)
    else:
        assert damage is None
        assert frame["fname"].tolist() == [f for f, _, _ in rows]
        assert frame["labels"].tolist() == [" ".join(dict.fromkeys(labels)) for _, labels, _ in rows]
        assert frame["is_valid"].tolist() == [v for _, _, v in rows]


# --- class folders ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["cat", "dog", "bird", "fish"]), st.integers(0, 25), max_size=4))
def test_class_folders_raise_exactly_when_training_cannot_go_on(counts):
    root = Path(tempfile.mkdtemp(dir=SCRATCH))
    for name, n in counts.items():
        (root / name).mkdir()
        for i in range(n):
            (root / name / f"{i}.png").write_bytes(b"")
    hopeless = len(counts) < 2 or 0 in counts.values()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LabelWarning)
            messages = check_class_folders(root)
    except LabelError as e:
        assert hopeless and str(root) in str(e)
    else:
        assert not hopeless
        imbalanced = max(counts.values()) / min(counts.values()) >= 10
        assert any("imbalanced" in m for m in messages) == imbalanced
