"""Every study's dataset, as data: where it comes from, how to check it, how it is laid out on disk.

Adding a study's dataset is adding an entry to `DATASETS`; nothing else in the package names a URL.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetSpec", "DATASETS", "get_spec", "PET_BREEDS", "VOC_CLASSES", "CIFAR10_CLASSES", "CIFAR100_CLASSES"]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its source, its checksum and the layout its archive unpacks to.

    `layout` names how labels and the split are read from disk:
    - ``"class_folders"``: the label is the image's folder (``label_regex``, when set, extracts it from the
      folder name). With a `valid_folder`, images under ``<root>/<train_folder>`` train and those under
      ``<root>/<valid_folder>`` validate (the dataset's own split); without one, all images under
      ``<root>/<train_folder>`` are split at random, `valid_pct` held out. `class_folders`, when set, picks
      which folders take part (two breeds of Stanford Dogs' 120, say).
    - ``"filename_regex"``: all images in ``<root>/<images_folder>``, the label is the first group of
      `label_regex` on the file name, a seeded random `valid_pct` held out.
    - ``"label_csv"``: a CSV (`csv_file`) with a file-name column, a labels column (several labels
      separated by `label_delim` when `multi_label`) and an ``is_valid`` column (PASCAL VOC as fastai ships it).
    - ``"official_split"``: CUB-200-2011's own files: ``images.txt`` (id, path), ``image_class_labels.txt``
      and ``train_test_split.txt`` (id, 1 for training).
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
    train_folder: str = ""
    valid_folder: str = ""
    images_folder: str = "images"
    label_regex: str = ""
    valid_pct: float = 0.2
    class_folders: tuple[str, ...] = ()
    csv_file: str = ""
    multi_label: bool = False
    label_delim: str = " "
    archive_has_root: bool = True  # False: the archive holds the dataset's folders directly; unpack into archive_root
    inner_archive: str = ""  # an archive inside the download that holds the data (Dataverse wraps files in a zip)
    credentials: str = ""  # "kaggle" when the source needs an account
    screen_images: bool = False  # the source is known to hold corrupt files: find, report and leave them out

    filename: str = ""  # the archive's file name, when the URL does not end with it

    @property
    def archive_name(self) -> str:
        return self.filename or self.url.rsplit("/", 1)[-1]


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

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
STANFORD_DOGS_URL = "http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar"
STANFORD_DOGS_LICENCE = "ImageNet terms: non-commercial research and education (Khosla et al., Stanford)"
CUB_URL = "https://s3.amazonaws.com/fast-ai-imageclas/CUB_200_2011.tgz"
CUB_LICENCE = "non-commercial research and education (Wah et al., Caltech-UCSD)"

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
        DatasetSpec(
            name="potholes",
            title="Pothole and normal street photos (Kaggle)",
            url="https://www.kaggle.com/api/v1/datasets/download/atulyakumar98/pothole-detection-dataset",
            filename="pothole-detection-dataset.zip",
            credentials="kaggle",
            archive_root="potholes",
            archive_has_root=False,
            layout="class_folders",
            train_folder="",
            classes=("normal", "potholes"),
            licence="as stated on the Kaggle dataset page (atulyakumar98/pothole-detection-dataset)",
            homepage="https://www.kaggle.com/datasets/atulyakumar98/pothole-detection-dataset",
        ),
        DatasetSpec(
            name="huskies",
            title="Stanford Dogs: Siberian husky and malamute",
            url=STANFORD_DOGS_URL,
            archive_root="Images",
            layout="class_folders",
            train_folder="",
            class_folders=("n02110063-malamute", "n02110185-Siberian_husky"),
            label_regex=r"^n\d+-(.+)$",
            classes=("Siberian_husky", "malamute"),
            licence=STANFORD_DOGS_LICENCE,
            homepage="http://vision.stanford.edu/aditya86/ImageNetDogs/",
        ),
        DatasetSpec(
            name="clouds",
            title="CCSN ground-based clouds: cirrus, cumulus, stratus",
            # Dataverse's "download all files" call; it wraps the published CCSN_v2.zip in a zip of its own.
            url="https://dataverse.harvard.edu/api/access/dataset/:persistentId/?persistentId=doi:10.7910/DVN/CADDPD",
            filename="CCSN_dataverse.zip",
            inner_archive="CCSN_v2.zip",
            archive_root="CCSN_v2",
            layout="class_folders",
            train_folder="",
            class_folders=("Ci", "Cu", "St"),
            classes=("Ci", "Cu", "St"),
            licence="as stated on the Dataverse page (Zhang et al., 2018, doi:10.7910/DVN/CADDPD)",
            homepage="https://doi.org/10.7910/DVN/CADDPD",
        ),
        DatasetSpec(
            name="pascal_2007",
            title="PASCAL VOC 2007, 20 object classes, multi-label",
            url="https://s3.amazonaws.com/fast-ai-imagelocal/pascal_2007.tgz",
            size=1637796771,
            md5="433b4706eb7c42bd74e7f784e3fdf244",
            archive_root="pascal_2007",
            layout="label_csv",
            csv_file="train.csv",
            images_folder="train",
            multi_label=True,
            classes=VOC_CLASSES,
            licence="PASCAL VOC terms: images from Flickr under their owners' licences",
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2007/",
        ),
        DatasetSpec(
            name="cifar10",
            title="CIFAR-10 (PNG)",
            url="https://s3.amazonaws.com/fast-ai-sample/cifar10.tgz",
            size=168168549,
            md5="a5f8c31371b63a406b23368042812d3c",
            archive_root="cifar10",
            layout="class_folders",
            train_folder="train",
            valid_folder="test",
            classes=CIFAR10_CLASSES,
            licence="free to use with citation (Krizhevsky, 2009)",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        ),
        DatasetSpec(
            name="cifar100",
            title="CIFAR-100 (PNG)",
            url="https://s3.amazonaws.com/fast-ai-imageclas/cifar100.tgz",
            size=169168619,
            md5="e5e65dcb54b9d3913f7b8a9ad6607e62",
            archive_root="cifar100",
            layout="class_folders",
            train_folder="train",
            valid_folder="test",
            classes=CIFAR100_CLASSES,
            licence="free to use with citation (Krizhevsky, 2009)",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        ),
        DatasetSpec(
            name="cub200",
            title="Caltech-UCSD Birds 200-2011",
            url=CUB_URL,
            size=1150585339,
            md5="d2acaa99439dff0483c7bbac1bfe2a92",
            archive_root="CUB_200_2011",
            layout="official_split",
            label_regex=r"^\d+\.(.+)$",
            classes=(),  # read from the dataset's classes.txt
            licence=CUB_LICENCE,
            homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        ),
        DatasetSpec(
            name="cats_vs_dogs",
            title="Microsoft Cats vs Dogs (Asirra), with its corrupt files",
            url="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip",
            archive_root="PetImages",
            layout="class_folders",
            train_folder="",
            classes=("Cat", "Dog"),
            screen_images=True,
            licence="CDLA-Permissive-2.0 (Microsoft)",
            homepage="https://www.microsoft.com/en-us/download/details.aspx?id=54765",
        ),
        # The backbone comparison's small sets (seed 003 used dogs, birds and butterflies among others).
        DatasetSpec(
            name="dogs6",
            title="Stanford Dogs: six breeds",
            url=STANFORD_DOGS_URL,
            archive_root="Images",
            layout="class_folders",
            train_folder="",
            class_folders=("n02085620-Chihuahua", "n02088364-beagle", "n02099601-golden_retriever",
                           "n02106662-German_shepherd", "n02110185-Siberian_husky", "n02110958-pug"),
            label_regex=r"^n\d+-(.+)$",
            classes=("Chihuahua", "German_shepherd", "Siberian_husky", "beagle", "golden_retriever", "pug"),
            licence=STANFORD_DOGS_LICENCE,
            homepage="http://vision.stanford.edu/aditya86/ImageNetDogs/",
        ),
        DatasetSpec(
            name="birds10",
            title="CUB-200-2011: the first ten species",
            url=CUB_URL,
            size=1150585339,
            md5="d2acaa99439dff0483c7bbac1bfe2a92",
            archive_root="CUB_200_2011",
            layout="official_split",
            label_regex=r"^\d+\.(.+)$",
            class_folders=("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
                           "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet", "007.Parakeet_Auklet",
                           "008.Rhinoceros_Auklet", "009.Brewer_Blackbird", "010.Red_winged_Blackbird"),
            classes=("Black_footed_Albatross", "Brewer_Blackbird", "Crested_Auklet", "Groove_billed_Ani",
                     "Laysan_Albatross", "Least_Auklet", "Parakeet_Auklet", "Red_winged_Blackbird",
                     "Rhinoceros_Auklet", "Sooty_Albatross"),
            licence=CUB_LICENCE,
            homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for `name`, or an error that lists the names there are."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; the registry has: {', '.join(sorted(DATASETS))}") from None
