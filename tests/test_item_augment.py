"""Augmentation image by image on the CPU (item_augment.py): fastai's random changes, fastai's pixels.

The reference is fastai's own batch transforms (through augment.py, whose pixels test_benchmark checks
against fastai's originals), given the same random draws: same seed, same order of draws."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from fastai.vision.augment import AffineCoordTfm
from fastai.vision.core import PILImage, PILImageBW, TensorImage
from PIL import Image

from vision_studies.augment import PRESETS, augment_transforms
from vision_studies.data import augment_on_for, dataloaders, user_folder_spec
from vision_studies.item_augment import ItemAugment, item_augment_transforms, pixel_matrix

PHOTO = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((64, 48)))  # not square: the aspect counts
DIGIT = np.asarray(Image.fromarray(skimage.data.camera()).resize((28, 28)))


def _fastai(arr: np.ndarray, preset: str, seed: int) -> np.ndarray:
    """fastai's batch transforms on a batch of the one image, floats in [0, 1], (H, W[, C])."""
    x = torch.from_numpy(arr.astype(np.float32) / 255).reshape(arr.shape[0], arr.shape[1], -1).permute(2, 0, 1)
    x = TensorImage(x[None])
    tfms = augment_transforms(preset, arr.shape[1])[1]
    torch.manual_seed(seed)
    for t in tfms:
        t.before_call(x, split_idx=0)
    for t in tfms:
        x = t.encodes(x)
    return x[0].permute(1, 2, 0).numpy().reshape(arr.shape)


@pytest.mark.parametrize("preset", [p for p in PRESETS if PRESETS[p]])
def test_item_augmentation_gives_fastais_pixels(preset):
    for cls, arr in ((PILImage, PHOTO), (PILImageBW, DIGIT)):
        aug, changed = ItemAugment(preset, arr.shape[1]), 0
        for seed in range(12):
            torch.manual_seed(seed)
            out = aug(cls.create(arr), split_idx=0)
            assert type(out) is cls and out.size == (arr.shape[1], arr.shape[0])
            ours = np.asarray(out).astype(np.float32) / 255
            theirs = _fastai(arr, preset, seed)
            # rounding to 8 bits and OpenCV's 1/32-pixel steps: a third of a grey level on average, two at most
            assert np.abs(ours - theirs).mean() < 1.5 / 255, (preset, cls, seed)
            assert np.abs(ours - theirs).max() < 4 / 255, (preset, cls, seed)
            changed += not np.array_equal(np.asarray(out), arr)
        assert changed >= 6, f"{preset}: most draws change the image ({changed} of 12 did)"


def test_validation_images_pass_unchanged_and_presets_are_checked():
    aug = ItemAugment("strong", 64)
    image = PILImage.create(PHOTO)
    assert aug(image, split_idx=1) is image
    assert item_augment_transforms("none", 64)[0][-1].__class__.__name__ == "SquishResize"
    with pytest.raises(ValueError, match="unknown augmentation preset 'wild'"):
        item_augment_transforms("wild", 64)


@pytest.mark.parametrize("preset", ["light", "strong", "perspective"])
def test_a_colour_image_warped_with_a_fourth_channel_is_opencvs_three_channel_warp(preset):
    """`apply` warps colour images as RGBA (OpenCV's vector code), which must give exactly the pixels of
    warping the three channels themselves, then the lighting table: the same draws, both ways."""
    import cv2

    aug, pixels = ItemAugment(preset, 224), np.asarray(Image.fromarray(skimage.data.astronaut()).resize((224, 224)))
    warped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        matrix, lut = aug.draw(224, 224)
        torch.manual_seed(seed)
        got = aug.apply(pixels)
        if matrix is None:
            continue
        warp = cv2.warpAffine if np.allclose(matrix[2], [0, 0, 1], rtol=0, atol=1e-12) else cv2.warpPerspective
        expected = warp(pixels, matrix[:2] if warp is cv2.warpAffine else matrix, (224, 224),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
        expected = expected if lut is None else cv2.LUT(expected, lut)
        assert got.shape == (224, 224, 3) and np.array_equal(got, expected), f"seed {seed}"
        warped += 1
    assert warped >= 6  # most draws warp


def test_pixel_matrix_is_opencvs_view_of_fastais_grid():
    """A matrix that maps the output's corner pixels to the input's: the identity, a mirror, a shift."""
    h, w = 48, 64
    assert np.allclose(pixel_matrix(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), h, w), np.eye(3))
    mirror = pixel_matrix(torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]]), h, w)
    assert np.allclose(mirror @ [0, 0, 1], [w - 1, 0, 1]) and np.allclose(mirror @ [w - 1, 5, 1], [0, 5, 1])
    shift = pixel_matrix(torch.tensor([[1.0, 0, 2 / (w - 1)], [0, 1.0, 0]]), h, w)  # one pixel right, normalised
    assert np.allclose(shift @ [10, 10, 1], [11, 10, 1])


def _folder(root, n=12):
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        y0, x0 = rng.integers(0, 200, 2)
        Image.fromarray(skimage.data.astronaut()[y0 : y0 + 150, x0 : x0 + 200]).save(folder / f"{i}.jpg")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_cpu_loaders_augment_items_and_leave_validation_alone(tmp_path, workers):
    folder = _folder(tmp_path / "set")
    spec = user_folder_spec("items", valid_pct=0.25)
    assert augment_on_for("cpu") == "items" and augment_on_for("cuda") == "batches" and augment_on_for(None) == "items"
    dls = dataloaders(spec, folder, 32, 4, augment="strong", num_workers=workers, device="cpu", seed=0)
    batches = dataloaders(spec, folder, 32, 4, augment="strong", num_workers=0, device="cpu", seed=0, augment_on="batches")
    plain = dataloaders(spec, folder, 32, 4, augment="none", num_workers=0, device="cpu", seed=0)
    assert any(isinstance(t, ItemAugment) for t in dls.train.after_item.fs)
    assert not any(isinstance(t, AffineCoordTfm) for t in dls.train.after_batch.fs)
    assert any(isinstance(t, AffineCoordTfm) for t in batches.train.after_batch.fs)
    # validation: exactly the plain resize, whichever way training augments
    for other in (batches, plain):
        assert torch.equal(dls.valid.one_batch()[0], other.valid.one_batch()[0])
    xb, yb = dls.train.one_batch()
    assert xb.shape == (4, 3, 32, 32) and xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
    # the training images are changed: none is the plain resize of any training image
    unchanged = torch.cat([x for x, _ in plain.train.new(shuffle=False, drop_last=False)])
    assert len(unchanged) == len(dls.train_ds)
    assert all(min((x - u).abs().mean().item() for u in unchanged) > 1e-3 for x in xb)
    with pytest.raises(ValueError, match="augment_on='gpu'"):
        dataloaders(spec, folder, 32, 4, device="cpu", augment_on="gpu")


HANG_CHECK = """
import numpy as np, torch
from fastai.vision.core import PILImage
from vision_studies.item_augment import ItemAugment

augment = ItemAugment("strong", 1024)
image = PILImage.create(np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
for _ in range(8):  # in this process first, as a 0-worker run does before a 2-worker one
    augment(image, split_idx=0)

class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        return torch.from_numpy(np.asarray(augment(image, split_idx=0))).float().mean()

print(len(list(torch.utils.data.DataLoader(Images(), batch_size=2, num_workers=2))))
"""


def test_workers_forked_after_augmenting_in_this_process_do_not_hang():
    """OpenCV's thread pool, once started, is not copied into forked loader workers: they waited forever."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HANG_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "4", done.stderr[-2000:]
