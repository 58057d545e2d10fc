"""A rehearsal of full mode: each dataset's archive, small but in its exact real layout, on a loopback mirror.

Full mode downloads gigabytes from servers CI cannot reach. The rehearsal builds, per source, an archive
with the real one's name, format, top folder, nesting, file names, list and CSV formats and the non-image
files it really holds (Pets' ``.mat`` files and ``annotations/``, CUB's top-level ``attributes.txt``, CCSN's
``__MACOSX/``, cats vs dogs' ``Thumbs.db``, a zero-byte JPEG and its licence files, ...), each over 1 MiB so
that fastai's first-MiB checksum differs from a whole-file one. A loopback HTTP server serves them, and a
sources override file (`sources.SOURCES_ENV`) points every dataset at it with checksums in the scheme of
the source each replaces. The notebooks then run with ``FIXTURE = False`` exactly as a learner's would.

What it cannot prove: that the real servers answer, that the real bytes match the published checksums,
or anything about a GPU.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .download import FIRST_MIB, file_digest, first_mib_md5
from .fixtures import write_layout
from .registry import get_spec

__all__ = ["MirrorArchive", "ARCHIVES", "build_archive", "build_mirror", "sources_entry", "serve_mirror",
           "REHEARSAL_ARCH", "rehearsal_parameters", "rehearsed_notebooks", "rehearse"]


@dataclass(frozen=True)
class MirrorArchive:
    """One real archive as the rehearsal rebuilds it: its file name, which registry entries read it, and how."""

    filename: str
    datasets: tuple[str, ...]  # registry names served by this archive
    layout: str  # the registry name whose fixture writer draws the images
    sizes: tuple[tuple[str, int], ...] = ()  # larger than the fixture's, to pass 1 MiB
    inside: str = ""  # the folder the layout goes to inside the archive ("" : the archive's top)


ARCHIVES: tuple[MirrorArchive, ...] = (
    MirrorArchive("mnist_png.tgz", ("mnist",), "mnist", inside="mnist_png"),
    MirrorArchive("oxford-iiit-pet.tgz", ("pets",), "pets", inside="oxford-iiit-pet"),
    MirrorArchive("pothole-detection-dataset.zip", ("potholes",), "potholes", (("per_class", 150),)),
    MirrorArchive("images.tar", ("huskies", "dogs6"), "huskies", (("per_class", 40),), inside="Images"),
    MirrorArchive("CCSN.zip", ("clouds",), "clouds", (("per_class", 160),), inside="CCSN_v2"),
    MirrorArchive("pascal_2007.tgz", ("pascal_2007",), "pascal_2007", (("n_images", 300),), inside="pascal_2007"),
    MirrorArchive("cifar10.tgz", ("cifar10",), "cifar10", (("train", 40), ("test", 10)), inside="cifar10"),
    MirrorArchive("cifar100.tgz", ("cifar100",), "cifar100", inside="cifar100"),
    MirrorArchive("CUB_200_2011.tgz", ("cub200", "birds10"), "cub200", inside="CUB_200_2011"),
    MirrorArchive("kagglecatsanddogs_5340.zip", ("cats_vs_dogs",), "cats_vs_dogs", (("per_class", 180),),
                  inside="PetImages"),
    # study 11's other sets (small_sets.py): Food-101 with its meta/ lists; Caltech's leaves unsorted, as the
    # archive holds them (a learner sorts them by hand: the rehearsal leaves them out, tests check the sorting);
    # the Leeds butterflies' PNGs with their masks and descriptions
    MirrorArchive("food-101.tgz", ("noodles",), "noodles", (("per_class", 60),), inside="food-101"),
    MirrorArchive("leaves.tar", ("leaves",), "leaves", (("per_class", 62), ("sorted_by_hand", 0), ("width", 360))),
    MirrorArchive("leedsbutterfly_dataset_v1.0.zip", ("butterflies",), "butterflies", (("per_class", 40),),
                  inside="leedsbutterfly"),
)


def _extras(archive: MirrorArchive, top: Path) -> None:
    """The real archive's files beyond the images and lists the fixture writes, where the archive has them."""
    if archive.filename == "oxford-iiit-pet.tgz":  # annotations/trimaps and xmls beside the split lists
        for name in ("Abyssinian_1", "american_bulldog_1"):
            (top / "oxford-iiit-pet/annotations/trimaps").mkdir(parents=True, exist_ok=True)
            (top / f"oxford-iiit-pet/annotations/trimaps/{name}.png").write_bytes(_png_bytes())
            (top / "oxford-iiit-pet/annotations/xmls").mkdir(parents=True, exist_ok=True)
            (top / f"oxford-iiit-pet/annotations/xmls/{name}.xml").write_text(
                f"<annotation><filename>{name}.jpg</filename></annotation>\n")
        (top / "oxford-iiit-pet/annotations/README").write_text("OXFORD-IIIT PET Dataset\n")
    elif archive.filename == "CUB_200_2011.tgz":
        # The tgz holds attributes.txt next to CUB_200_2011/ (the list of the 312 attribute names)
        (top / "attributes.txt").write_text("1 has_bill_shape::curved_(up_or_down)\n2 has_bill_shape::dagger\n")
        cub = top / "CUB_200_2011"
        (cub / "README").write_text("The Caltech-UCSD Birds-200-2011 Dataset\n")
        for folder, files in (("attributes", ("certainties.txt", "class_attribute_labels_continuous.txt",
                                              "image_attribute_labels.txt")),
                              ("parts", ("parts.txt", "part_locs.txt", "part_click_locs.txt"))):
            (cub / folder).mkdir(exist_ok=True)
            for file in files:
                (cub / folder / file).write_text("1 1 0 1 0.0\n")
    elif archive.filename == "pascal_2007.tgz":  # fastai's copy: test/, test.csv, COCO-style json, segmentation/
        pascal = top / "pascal_2007"
        (pascal / "test").mkdir()
        rows = []
        for i, image in enumerate(sorted((pascal / "train").glob("*.jpg"))[:20]):
            shutil.copy(image, pascal / "test" / f"{i + 1:06d}.jpg")
            rows.append(f"{i + 1:06d}.jpg,dog")
        (pascal / "test.csv").write_text("fname,labels\n" + "\n".join(rows) + "\n")
        for split in ("train", "valid", "test"):
            (pascal / f"{split}.json").write_text(json.dumps({"images": [], "type": "instances", "annotations": [],
                                                              "categories": []}))
        (pascal / "segmentation").mkdir()
        (pascal / "segmentation" / "000032.png").write_bytes(_png_bytes())
    elif archive.filename == "CCSN.zip":  # made on a Mac: AppleDouble files for every image, under __MACOSX/
        for image in sorted((top / "CCSN_v2").rglob("*.jpg")):
            rel = image.relative_to(top)
            double = top / "__MACOSX" / rel.parent / f"._{rel.name}"
            double.parent.mkdir(parents=True, exist_ok=True)
            double.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    elif archive.filename == "kagglecatsanddogs_5340.zip":  # the licence and a readme at the top
        (top / "CDLA-Permissive-2.0.pdf").write_bytes(b"%PDF-1.5\n%licence\n")
        (top / "readme[1].txt").write_text("Dogs vs. Cats Images\n")


def _png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_archive(filename: str, top: Path, out: Path) -> None:
    members = sorted(top.rglob("*"))
    if filename.endswith(".zip"):
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for path in members:
                z.write(path, path.relative_to(top).as_posix())
    else:
        # gzip level 0 keeps the archive over 1 MiB however well the tar headers would compress; still gzip
        mode = "w" if filename.endswith(".tar") else "w:gz"
        kwargs = {} if mode == "w" else {"compresslevel": 0}
        with tarfile.open(out, mode, **kwargs) as t:
            for path in members:
                t.add(path, path.relative_to(top).as_posix(), recursive=False)


def build_archive(archive: MirrorArchive, out_dir: Path | str) -> Path:
    """Write `archive` into `out_dir` (once) and return its path; it is refused when not over 1 MiB."""
    out = Path(out_dir) / archive.filename
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as staging:
        top = Path(staging) / "top"
        write_layout(archive.layout, top / archive.inside if archive.inside else top, **dict(archive.sizes))
        _extras(archive, top)
        part = out.with_name(out.name + ".part")
        _write_archive(archive.filename, top, part)
        if part.stat().st_size <= FIRST_MIB:
            raise AssertionError(f"{archive.filename} is {part.stat().st_size} bytes, not over 1 MiB; "
                                 "make its sizes larger in mirror.ARCHIVES")
        part.replace(out)
    return out


def sources_entry(name: str, archive: Path, url: str) -> dict:
    """A sources override entry for dataset `name` served from `url`, in the scheme of the source it replaces."""
    scheme = get_spec(name).checksum_scheme
    size = archive.stat().st_size
    if scheme == "fastai_first_mib":
        return {"url": url, "size": size, "md5": first_mib_md5(archive)}
    if scheme == "md5":
        return {"url": url, "md5": file_digest(archive, "md5")}
    return {"url": url, "size": size, "sha256": file_digest(archive, "sha256")}


def build_mirror(folder: Path | str, base_url: str, datasets: tuple[str, ...] | None = None) -> Path:
    """Build the archives of `datasets` (all with a mirror archive, by default) in `folder` and write
    ``<folder>/sources.json`` pointing each at ``<base_url>/<archive file name>``; returns that file."""
    folder = Path(folder)
    wanted = set(datasets) if datasets else {n for a in ARCHIVES for n in a.datasets}
    unknown = sorted(wanted - {n for a in ARCHIVES for n in a.datasets})
    if unknown:
        raise KeyError(f"no mirror archive for {', '.join(unknown)}; there are: "
                       f"{', '.join(n for a in ARCHIVES for n in a.datasets)}")
    entries: dict[str, dict] = {"_about": "the full-mode rehearsal's loopback mirror (vision_studies.mirror)"}
    for archive in ARCHIVES:
        names = [n for n in archive.datasets if n in wanted]
        if names:
            path = build_archive(archive, folder)
            for name in names:
                entries[name] = sources_entry(name, path, f"{base_url.rstrip('/')}/{archive.filename}")
    sources = folder / "sources.json"
    sources.write_text(json.dumps(entries, indent=2) + "\n")
    return sources


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve_mirror(folder: Path | str, datasets: tuple[str, ...] | None = None) -> Iterator[Path]:
    """Serve the rehearsal archives from `folder` on 127.0.0.1 for the block; yields the sources file.

    Point ``VISION_STUDIES_SOURCES`` at the file it yields (the rehearsal does it for each notebook run).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield build_mirror(folder, f"http://127.0.0.1:{server.server_address[1]}", datasets)
    finally:
        server.shutdown()
        server.server_close()


# The rehearsal may change a study's backbone, sizes and epochs, nothing else: pretrained studies fine-tune
# the real EfficientNet-Lite0 that weights.offline_weights supplies offline; the rest keep their own model.
REHEARSAL_ARCH = "tf_efficientnet_lite0"
REHEARSAL_SIZES = {"EPOCHS": 1, "IMAGE_SIZE": 32, "BATCH_SIZE": 16, "SCRATCH_EPOCHS": 1, "SCRATCH_SIZE": 32,
                   "NATIVE_SIZE": False}


def _study_of(notebook: Path):
    from .studies import STUDIES

    return STUDIES.get(Path(notebook).stem)


def _datasets_of(study) -> tuple[str, ...]:
    return tuple(getattr(study.full, "datasets", ()) or ()) or (study.dataset,)


def rehearsed_notebooks(notebooks: list[Path]) -> tuple[list[Path], list[Path]]:
    """(the notebooks whose datasets the mirror serves, the others), in the given order."""
    served = {n for a in ARCHIVES for n in a.datasets}
    ok = [nb for nb in notebooks if _study_of(nb) and set(_datasets_of(_study_of(nb))) <= served]
    return ok, [nb for nb in notebooks if nb not in ok]


def rehearsal_parameters(notebook: Path, data_dir: Path | str) -> dict:
    """What the rehearsal sets in `notebook`: full mode, data under `data_dir`, tiny sizes, one epoch, and
    EfficientNet-Lite0 wherever the study starts from pretrained weights."""
    from .studies import parameters as study_parameters

    study = _study_of(notebook)
    names = {f.name.upper() for f in study_parameters(type(study.full))}
    parameters = {"FIXTURE": False, "DATA_DIR": str(data_dir)}
    parameters |= {name: value for name, value in REHEARSAL_SIZES.items() if name in names}
    for name in ("IMAGE_SIZE", "SCRATCH_SIZE"):  # smaller, never larger than a model was made for (LeNet's 28)
        if name in parameters:
            parameters[name] = min(parameters[name], getattr(study.full, name.lower()))
    if "DATASETS" in names:  # a set a learner sorts by hand first (Caltech's leaves) cannot run unattended
        parameters["DATASETS"] = [d for d in study.full.datasets if not get_spec(d).sorting]
    if study.full.pretrained:
        parameters["ARCH"] = REHEARSAL_ARCH
        if "ARCHS" in names:
            parameters["ARCHS"] = [REHEARSAL_ARCH]
        if "MODEL_KWARGS" in names:
            parameters["MODEL_KWARGS"] = {}  # the study's ViT keywords do not fit another backbone
    return parameters


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    # the notebooks' kernels are started by the runner's worker processes, which inherit this environment
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def rehearse(notebooks: list[Path], out_dir: Path | str = "runs/rehearsal", workers: int | None = None,
             timeout: int = 900) -> list:
    """Run `notebooks` in full mode against the loopback mirror; returns the runner's `NotebookRun`s.

    The mirror's archives and the data they unpack to live under `out_dir` (``mirror/``, ``data/``), never
    in the real data folder, so a later real run cannot mistake a rehearsal folder for a real download.
    """
    from .runner import run_notebooks
    from .sources import SOURCES_ENV

    out_dir = Path(out_dir).resolve()
    data_dir = out_dir / "data"
    with serve_mirror(out_dir / "mirror") as sources, _environment(SOURCES_ENV, str(sources)):
        return run_notebooks(notebooks, out_dir, lambda nb: rehearsal_parameters(nb, data_dir), workers=workers,
                             cwd=".", timeout=timeout)
