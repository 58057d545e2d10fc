"""Every study's dataset, as data: where it comes from, how to check it, how it is laid out on disk.

Adding a study's dataset is adding an entry to `DATASETS`; nothing else in the package names a URL.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetSpec", "DATASETS", "get_spec", "PET_BREEDS"]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its source, its checksum and the layout its archive unpacks to.

    `layout` names how labels and the split are read from disk:
    - ``"class_folders"``: ``<root>/<train_folder>/<label>/*`` and ``<root>/<valid_folder>/<label>/*``
      (the dataset's own train/test split);
    - ``"filename_regex"``: all images in ``<root>/<images_folder>``, the label is the first group of
      `label_regex` on the file name, and a seeded random `valid_pct` is held out.
    """

    name: str
    title: str
    url: str
    archive_root: str  # the folder the archive unpacks to
    layout: str
    classes: tuple[str, ...]
    licence: str
    homepage: str
    size: int | None = None  # bytes, when the source publishes it
    md5: str | None = None
    sha256: str | None = None
    image_mode: str = "RGB"  # "L" for grayscale sets such as MNIST
    train_folder: str = "train"
    valid_folder: str = "valid"
    images_folder: str = "images"
    label_regex: str = ""
    valid_pct: float = 0.2

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# The 37 breeds exactly as Oxford-IIIT Pets spells them in file names: cat breeds capitalised,
# dog breeds in lower case (that is how the dataset tells cats from dogs).
PET_BREEDS: tuple[str, ...] = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "Maine_Coon",
    "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx",
    "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer", "chihuahua",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
    "japanese_chin", "keeshond", "leonberger", "miniature_pinscher", "newfoundland", "pomeranian", "pug",
    "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
)

# Sizes and md5 sums are the ones fastai publishes for its mirrors (fastai/data/download_checks.py).
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            title="MNIST handwritten digits (PNG)",
            url="https://s3.amazonaws.com/fast-ai-imageclas/mnist_png.tgz",
            size=15683414,
            md5="03639f83c4e3d19e0a3a53a8a997c487",
            archive_root="mnist_png",
            layout="class_folders",
            train_folder="training",
            valid_folder="testing",
            classes=tuple(str(d) for d in range(10)),
            image_mode="L",
            licence="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
            homepage="https://yann.lecun.com/exdb/mnist/",
        ),
        DatasetSpec(
            name="pets",
            title="Oxford-IIIT Pets, 37 breeds",
            url="https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet.tgz",
            size=811706944,
            md5="e4db5c768afd933bb91f5f594d7417a4",
            archive_root="oxford-iiit-pet",
            layout="filename_regex",
            images_folder="images",
            label_regex=r"^(.+)_\d+\.jpg$",
            valid_pct=0.2,
            classes=PET_BREEDS,
            licence="CC BY-SA 4.0 (Parkhi, Vedaldi, Zisserman, Jawahar)",
            homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for `name`, or an error that lists the names there are."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; the registry has: {', '.join(sorted(DATASETS))}") from None
