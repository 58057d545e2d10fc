"""Every study's dataset, as data: where it comes from, how to check it, how it is laid out on disk.

Adding a study's dataset is adding an entry to `DATASETS`; nothing else in the package names a URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from .small_sets import SMALL_SETS

__all__ = ["DatasetSpec", "DATASETS", "get_spec", "class_of", "CHECKSUM_SCHEMES", "PET_BREEDS", "VOC_CLASSES", "CIFAR10_CLASSES", "CIFAR100_CLASSES",
           "FASHION_MNIST_CLASSES"]


# The ways a source publishes what its bytes should be. fastai's download_checks.py (read by fastdownload)
# holds (size, md5 of the first MiB): `fastdownload.core.path_stats`, "Size of `fpath` and md5 of its first
# megabyte", reads `f.read(2**20)`. TFDS's checksum files hold the size and the whole file's sha256;
# Dataverse lists each file's whole md5.
CHECKSUM_SCHEMES: tuple[str, ...] = ("fastai_first_mib", "md5", "sha256")


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
      `label_regex` on the file name; the split is the dataset's own lists (`split_lists`) when it has
      them, else a seeded random `valid_pct` held out.
    - ``"label_csv"``: a CSV (`csv_file`) with a file-name column, a labels column (several labels
      separated by `label_delim` when `multi_label`) and an ``is_valid`` column (PASCAL VOC as fastai ships it).
    - ``"official_split"``: CUB-200-2011's own files: ``images.txt`` (id, path), ``image_class_labels.txt``
      and ``train_test_split.txt`` (id, 1 for training); with a `classes_file`, the classes are named there.
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
    # How `md5`/`sha256` were computed, as the source publishes them (one of `CHECKSUM_SCHEMES`):
    # "fastai_first_mib": `md5` of the first 2**20 bytes and `size`, fastdownload's `path_stats`;
    # "md5" / "sha256": the whole file's digest. "" when nothing is published (trusted on first use).
    checksum_scheme: str = ""
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
    # The dataset's own split lists, (training, validation), relative to the folder: one image name (no
    # extension) first on each line. Images in neither list are not used.
    split_lists: tuple[str, str] = ()
    classes_file: str = ""  # a file of "<id> <folder name>" lines that names the classes (CUB's classes.txt)
    # (name on disk, class) pairs: the class a folder or file-name label stands for, where the dataset's own
    # names are codes (Leeds' "001") or several of them make one class (Food-101's ramen and pho: noodle soup)
    label_names: tuple[tuple[str, str], ...] = ()
    # Why and how a learner sorts the images into class folders, for a source whose archive carries no labels
    sorting: str = ""
    # Small images, many of them: decoded once and held in memory, each batch gathered by index
    # (memory_data.py), when the decoded set fits `memory_data.MEMORY_BUDGET`; else read item by item
    in_memory: bool = False

    filename: str = ""  # the archive's file name, when the URL does not end with it
    # Datasets published as separate idx files (MNIST's format) instead of one archive: (file name without
    # ".gz", the publisher's md5 of the .gz, sha256 of the decompressed file), fetched from url + name + ".gz"
    # or found in a local copy and written once as class folders (idx.py)
    files: tuple[tuple[str, str, str], ...] = ()
    local_copies: tuple[str, ...] = ()  # folders where a distribution's package installs those files

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
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
)
# Stanford's own https address (the host serves https; TFDS records the http one for the same file). Size and
# sha256 as TFDS publishes them: tensorflow/datasets, tensorflow_datasets/url_checksums/stanford_dogs.txt
# ("images.tar 793579520 a443fc2f...ec58"). It is a plain (uncompressed) tar of Images/<wnid>-<breed>/<wnid>_<n>.jpg.
STANFORD_DOGS_URL = "https://vision.stanford.edu/aditya86/ImageNetDogs/images.tar"
STANFORD_DOGS_CHECKSUM = dict(size=793579520, sha256="a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58",
                              checksum_scheme="sha256")
STANFORD_DOGS_LICENCE = "ImageNet terms: non-commercial research and education (Khosla et al., Stanford)"
CUB_URL = "https://s3.amazonaws.com/fast-ai-imageclas/CUB_200_2011.tgz"
CUB_LICENCE = "non-commercial research and education (Wah et al., Caltech-UCSD)"

# fastai's mirrors: size and md5 exactly as fastai/data/download_checks.py holds them for the same URL, which
# is the md5 of the file's first MiB (fastdownload.core.path_stats), hence checksum_scheme="fastai_first_mib";
# tests/test_full_mode.py compares each entry with the installed fastai's file.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            title="MNIST handwritten digits (PNG)",
            url="https://s3.amazonaws.com/fast-ai-imageclas/mnist_png.tgz",
            size=15683414,
            md5="03639f83c4e3d19e0a3a53a8a997c487",
            checksum_scheme="fastai_first_mib",
            archive_root="mnist_png",
            layout="class_folders",
            train_folder="training",
            valid_folder="testing",
            classes=tuple(str(d) for d in range(10)),
            image_mode="L",
            in_memory=True,  # 70,000 digits of 28 x 28: 55 MB decoded
            licence="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
            homepage="https://yann.lecun.com/exdb/mnist/",
        ),
        DatasetSpec(
            name="pets",
            title="Oxford-IIIT Pets, 37 breeds",
            url="https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet.tgz",
            size=811706944,
            md5="e4db5c768afd933bb91f5f594d7417a4",
            checksum_scheme="fastai_first_mib",
            archive_root="oxford-iiit-pet",
            layout="filename_regex",
            images_folder="images",
            label_regex=r"^(.+)_\d+\.jpg$",
            # the dataset's own split (3,680 trainval / 3,669 test images), as TFDS's oxford_iiit_pet builder reads
            # it: lines "Abyssinian_100 1 1 1" (image, class id, species, breed id); seed 001's 96.24% is on test
            split_lists=("annotations/trainval.txt", "annotations/test.txt"),
            classes=PET_BREEDS,
            licence="CC BY-SA 4.0 (Parkhi, Vedaldi, Zisserman, Jawahar)",
            homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
        ),
        DatasetSpec(
            name="potholes",
            title="Pothole and normal street photos (Kaggle)",
            url="https://www.kaggle.com/api/v1/datasets/download/atulyakumar98/pothole-detection-dataset",
            filename="pothole-detection-dataset.zip",
            credentials="kaggle",  # Kaggle publishes no checksum of its zip (made per version): trusted on first use
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
            **STANFORD_DOGS_CHECKSUM,
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
            # The dataset's one file, CCSN.zip: Harvard Dataverse datafile 3569338, whole-file md5 as Dataverse's
            # file listing gives it (doi:10.7910/DVN/CADDPD). It unpacks to CCSN_v2/<genus>/<genus>-N<n>.jpg and a
            # __MACOSX/ folder of AppleDouble "._*" files (macOS metadata, not images), which unpacking skips.
            url="https://dataverse.harvard.edu/api/access/datafile/3569338",
            filename="CCSN.zip",
            md5="0787f50947a3f65630a7463206316fd3",
            checksum_scheme="md5",
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
            checksum_scheme="fastai_first_mib",
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
            checksum_scheme="fastai_first_mib",
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
            checksum_scheme="fastai_first_mib",
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
            checksum_scheme="fastai_first_mib",
            archive_root="CUB_200_2011",
            layout="official_split",
            label_regex=r"^\d+\.(.+)$",
            classes_file="classes.txt",
            classes=(),  # read from the dataset's classes.txt ("1 001.Black_footed_Albatross"), named as label_regex says
            licence=CUB_LICENCE,
            homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        ),
        DatasetSpec(
            name="cats_vs_dogs",
            title="Microsoft Cats vs Dogs (Asirra), with its corrupt files",
            # The URL TFDS's cats_vs_dogs builder downloads. No checksum for this file was found published: TFDS's
            # tensorflow_datasets/url_checksums/cats_vs_dogs.txt pins only the retired kagglecatsanddogs_3367a.zip
            # (824894548 bytes, sha256 f9553e42...b22b). So it stays trusted on first use (sources.py records its
            # sha256); a sources override can pin one.
            url="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip",
            archive_root="PetImages",
            layout="class_folders",
            train_folder="",
            classes=("Cat", "Dog"),
            screen_images=True,
            licence="CDLA-Permissive-2.0 (Microsoft)",
            homepage="https://www.microsoft.com/en-us/download/details.aspx?id=54765",
        ),
                # Zalando's files and md5s as their README's "Get the Data" table publishes them
        # (github.com/zalandoresearch/fashion-mnist, README.md). The sha256s are of the decompressed files:
        # measured on Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (re-gzipped, so its .gz md5s
        # differ) and the same as other projects record for gunzipped downloads that match Zalando's md5s.
        DatasetSpec(
            name="fashion_mnist",
            title="Fashion-MNIST (Zalando article images)",
            url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            files=(
                ("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                 "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
                ("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe",
                 "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
                ("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79",
                 "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
                ("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310",
                 "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
            ),
            local_copies=("/usr/share/datasets/fashion-mnist",),  # Debian: apt-get install dataset-fashion-mnist
            archive_root="fashion_mnist",
            layout="class_folders",
            train_folder="training",
            valid_folder="testing",
            # with TEST_PCT the official test set is kept apart and 5,000 of the 60,000 training images validate
            valid_pct=5_000 / 60_000,
            # labels 0-9 in Zalando's order, as folder names ("T-shirt/top" and "Ankle boot" cannot be folders)
            classes=FASHION_MNIST_CLASSES,
            image_mode="L",
            in_memory=True,  # 70,000 grey garments of 28 x 28; 0.29 GB decoded at study 12's 64 px
            licence="MIT (Zalando SE)",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        ),
        # The backbone comparison's small sets (seed 003 used dogs, birds and butterflies among others).
        DatasetSpec(
            name="dogs6",
            title="Stanford Dogs: six breeds",
            url=STANFORD_DOGS_URL,
            **STANFORD_DOGS_CHECKSUM,
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
            checksum_scheme="fastai_first_mib",
            archive_root="CUB_200_2011",
            layout="official_split",
            label_regex=r"^\d+\.(.+)$",
            classes_file="classes.txt",
            class_folders=("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
                           "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet", "007.Parakeet_Auklet",
                           "008.Rhinoceros_Auklet", "009.Brewer_Blackbird", "010.Red_winged_Blackbird"),
            classes=("Black_footed_Albatross", "Brewer_Blackbird", "Crested_Auklet", "Groove_billed_Ani",
                     "Laysan_Albatross", "Least_Auklet", "Parakeet_Auklet", "Red_winged_Blackbird",
                     "Rhinoceros_Auklet", "Sooty_Albatross"),
            licence=CUB_LICENCE,
            homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        ),
        *(DatasetSpec(**entry) for entry in SMALL_SETS),  # study 11's other sets: small_sets.py
    )
}


def class_of(spec: DatasetSpec, label: str) -> str:
    """The class the dataset's own `label` stands for (`label_names`), or the label itself."""
    return dict(spec.label_names).get(label, label)


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for `name`, or an error that lists the names there are."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; the registry has: {', '.join(sorted(DATASETS))}") from None
