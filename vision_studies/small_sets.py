"""Seed 003's other small sets for the backbone comparison (study 11), as registry entries' fields.

Study 11 trains every backbone on five small sets: noodles, leaves, dogs, birds and butterflies. Dogs and
birds are carved from Stanford Dogs and CUB-200-2011 (registry.py, beside the studies that use those sets
whole); the other three are here, as plain data `registry.DATASETS` turns into `DatasetSpec`s. Each comment
names the evidence for its source, checksum, layout and labels, and what could not be checked.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LEEDS_SPECIES", "SMALL_SETS"]

# The species the Leeds file names' first three digits stand for (001 Danaus plexippus ... 010 Vanessa cardui),
# in the order public code reading the set labels them (0: Danaus_plexippus, ..., 6: Papilio_cresphontes, ...);
# not checked here against the dataset's own descriptions/<code>.txt. Scientific names, "_" for the space.
LEEDS_SPECIES: tuple[tuple[str, str], ...] = (
    ("001", "Danaus_plexippus"), ("002", "Heliconius_charitonius"), ("003", "Heliconius_erato"),
    ("004", "Junonia_coenia"), ("005", "Lycaena_phlaeas"), ("006", "Nymphalis_antiopa"),
    ("007", "Papilio_cresphontes"), ("008", "Pieris_rapae"), ("009", "Vanessa_atalanta"), ("010", "Vanessa_cardui"),
)

SMALL_SETS: tuple[dict[str, Any], ...] = (
    # Seed 003's noodles came from Open Images' per-URL lists (nothing to pin), so Food-101 stands in: pad
    # thai for fried noodles, ramen and pho for noodle soup. fastai's mirror (URLs.FOOD), size and first-MiB md5
    # as fastai/data/download_checks.py holds them. The layout is ETH's: food-101/images/<class>/<id>.jpg, the
    # official split in food-101/meta/train.txt and test.txt, lines "<class>/<id>" (the entries torchvision's
    # Food101 reads from meta/<split>.json). 750 training and 250 test photos a class; the test photos were
    # checked by hand, the training ones left noisy on purpose (Bossard et al., 2014).
    dict(
        name="noodles",
        title="Food-101 as a stand-in for seed 003's noodles: fried noodles (pad thai), noodle soup (ramen, pho)",
        url="https://s3.amazonaws.com/fast-ai-imageclas/food-101.tgz",
        size=5686607260,
        md5="1a540ebf1fb40b2bf3f2294234ba7907",
        checksum_scheme="fastai_first_mib",
        archive_root="food-101",
        layout="class_folders",
        train_folder="images",
        class_folders=("pad_thai", "pho", "ramen"),
        split_lists=("meta/train.txt", "meta/test.txt"),
        label_names=(("pad_thai", "fried_noodles"), ("pho", "noodle_soup"), ("ramen", "noodle_soup")),
        classes=("fried_noodles", "noodle_soup"),
        licence="research use; photos from foodspotting.com under their owners' terms (Bossard et al., 2014)",
        homepage="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
    ),
    # Caltech's leaves (Markus Weber): 186 photos of leaves against varied backgrounds, 896x592 JPEGs, at the
    # address seed 003 names. Caltech publishes no checksum for it: trusted on first use (sources.py records
    # the sha256 of the first download). Neither its current home (Caltech's older sets moved to
    # data.caltech.edu) nor its inner layout could be checked from here, hence archive_has_root=False: it
    # unpacks into leaves/ whatever its top folder. It carries no species labels: seed 003 sorted 177 of the
    # photos by hand into Leaf_01, Leaf_02 and Leaf_03 (63, 57, 57: its leaves_data_train_validate_test_split_V1
    # notebook prints the counts), so the reader expects those folders and says how to make them.
    dict(
        name="leaves",
        title="Caltech leaves (Weber), three kinds sorted by hand as seed 003 sorted them",
        url="https://www.vision.caltech.edu/Image_Datasets/leaves/leaves.tar",  # the host serves https (CUB's page)
        archive_root="leaves",
        archive_has_root=False,
        layout="class_folders",
        train_folder="",
        classes=("Leaf_01", "Leaf_02", "Leaf_03"),
        sorting=("Caltech's leaves.tar holds its 186 photos without species labels; seed 003 sorted 177 of them by "
                 "hand into three folders (63, 57 and 57 photos). Move each photo under {path} into {path}/Leaf_01, "
                 "Leaf_02 or Leaf_03 by its kind of leaf, leave out those you cannot tell, and run again; or leave "
                 "'leaves' out of DATASETS."),
        licence="research use (Caltech Computational Vision group; photos by Markus Weber)",
        homepage="http://www.vision.caltech.edu/Image_Datasets/leaves/",
    ),
    # The Leeds Butterfly Dataset v1.0 (Wang, Markert, Everingham, BMVC 2009): 832 photos of 10 species. Its
    # current home is Zenodo record 7558895; seed 003 names the old Leeds page (www.comp.leeds.ac.uk/scs6jwks/),
    # and the first author's site (josiahwang.com/dataset/leedsbutterfly/) served the same file name. Zenodo
    # shows each file's md5 on the record page, which could not be read from here; a public loader pins md5
    # d395ad65a68cf6b31c7c9e1e2f735e3c for the josiahwang.com copy, a third party's record, not the publisher's.
    # So the archive is trusted on first use until Zenodo's md5 is checked (and, if it is that one, pinned here
    # with checksum_scheme="md5"). Layout: leedsbutterfly/images/<code><n>.png ("0010001.png": three digits of
    # species, four of photo) beside segmentations/<image>_seg0.png masks and descriptions/<code>.txt; the
    # dataset publishes no split.
    dict(
        name="butterflies",
        title="Leeds Butterfly Dataset: 10 species, 832 photos",
        url="https://zenodo.org/records/7558895/files/leedsbutterfly_dataset_v1.0.zip",
        archive_root="leedsbutterfly",
        layout="filename_regex",
        images_folder="images",
        label_regex=r"^(\d{3})\d{4}\.png$",
        label_names=LEEDS_SPECIES,
        classes=tuple(name for _, name in LEEDS_SPECIES),
        licence="research use (Wang, Markert and Everingham, University of Leeds)",
        homepage="https://doi.org/10.5281/zenodo.7558895",
    ),
)
