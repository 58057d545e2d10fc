"""The augmentation presets image by image, on the 8-bit pixels, for loaders that run on a CPU.

With a GPU the random flips, rotations, zooms, warps and lighting of a preset run on whole batches on the
device (augment.py: fastai's batch transforms), where they cost next to nothing. On a CPU the same batch
transforms resample every float pixel in the main process (a 224 px ``grid_sample``: about 4 ms an image on
one core), which then sets the pace while the loader's workers wait, and on two cores (Colab's) it competes
with them. Here each training image goes through the same random change while it is still 8-bit, in the
loader's workers: fastai's own transforms draw the change (the same distributions, the same preset
arguments), and OpenCV applies it (one ``warpAffine``, or ``warpPerspective`` when the preset warps, bilinear
with reflected borders as fastai's ``grid_sample(..., padding_mode="reflection", align_corners=True)``, and a
256-entry lookup table for brightness and contrast): about 0.3 ms a 224 px image, 0.06 ms of it drawing the
change. The pixels are fastai's to within the rounding to 8 bits (half a grey level) and OpenCV's 1/32-pixel
interpolation steps.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from fastai.vision.augment import AffineCoordTfm, LightingTfm, _WarpCoord, find_coeffs
from fastai.vision.core import PILImage
from fasttransform.transform import Transform

from .augment import PRESETS, SquishResize, augment_transforms

__all__ = ["ItemAugment", "item_augment_transforms", "pixel_matrix"]

# the 256 levels in logit space, as fastai's `logit` clamps them (torch.special.logit(x, eps=1e-7))
_LOGIT_LEVELS = torch.special.logit(torch.arange(256, dtype=torch.float64) / 255, eps=1e-7).numpy()
_IDENTITY = np.eye(3)


def pixel_matrix(mat: torch.Tensor, height: int, width: int) -> np.ndarray:
    """fastai's sampling matrix (2 x 3 or 3 x 3, output to input in normalised coordinates, ``align_corners=True``)
    as OpenCV's (3 x 3, output pixel to input pixel): pixel p sits at normalised p / ((n - 1) / 2) - 1."""
    m = np.asarray(mat, dtype=np.float64)
    m = np.vstack([m, [0.0, 0.0, 1.0]]) if m.shape == (2, 3) else m
    sx, sy = (width - 1) / 2, (height - 1) / 2
    to_pixels = np.array([[sx, 0.0, sx], [0.0, sy, sy], [0.0, 0.0, 1.0]])
    return to_pixels @ m @ np.linalg.inv(to_pixels)


def _uniform(low: float, high: float) -> float:
    return torch.empty(1).uniform_(low, high).item()


def _kept(value: float, p: float, neutral: float = 0.0) -> float:
    """fastai's `mask_tensor` for one image: `value` with probability `p`, else `neutral` (the same draw)."""
    if p == 1.0:
        return value
    return neutral + (value - neutral) * torch.empty(1).bernoulli_(p).item()


class ItemAugment(Transform):
    """A preset's random changes to one training image (a PIL image already squished to its size), applied by
    OpenCV to the 8-bit pixels. Validation images pass unchanged.

    The changes are drawn as fastai's transforms draw them (its formulas, its order of draws from torch's
    generator, the amounts read off the transforms `augment.augment_transforms` builds), one image at a time
    with plain tensors: fastai's own draw code, made for batches, spends about 2 ms an image on its tensor
    subclass's bookkeeping, four times the resampling itself.
    """

    order = SquishResize.order + 1  # after the resize, before ToTensor
    split_idx = 0  # training images only, as fastai's RandTransforms

    def __init__(self, preset: str, size: int):
        super().__init__()
        self.preset = preset
        batch = augment_transforms(preset, size)[1]  # raises on an unknown preset
        affine = next((t for t in batch if isinstance(t, AffineCoordTfm)), None)
        lighting = next((t for t in batch if isinstance(t, LightingTfm)), None)
        self.affine = [(f.func.__name__, dict(f.keywords)) for f in (affine.aff_fs if affine else [])]
        self.warps = [dict(magnitude=w.magnitude, p=w.p) for w in (affine.coord_fs if affine else [])]
        self.lights = [(type(f).__name__, dict(max_lighting=f.max_lighting, p=f.p)) for f in (lighting.fs if lighting else [])]
        known = {"flip_mat", "dihedral_mat", "rotate_mat", "zoom_mat"}
        odd = [name for name, kw in self.affine if name not in known or kw.get("draw") is not None or kw.get("batch")]
        odd += [name for name, _ in self.lights if name not in ("_BrightnessLogit", "_ContrastLogit")]
        if odd or (affine and any(not isinstance(w, _WarpCoord) for w in affine.coord_fs)):
            raise ValueError(f"preset {preset!r}: item_augment.py does not draw {odd or 'its coordinate transforms'} "
                             "image by image; use augment_on='batches'")

    def _affine_matrix(self, height: int, width: int) -> np.ndarray:
        """fastai's `AffineCoordTfm._get_affine_mat` for one image: the product of its draws, then the aspect."""
        m = np.eye(3)
        for name, kw in self.affine:
            if name == "flip_mat":
                m = m @ np.diag([1.0 - 2.0 * _kept(1.0, kw["p"]), 1.0, 1.0])
            elif name == "dihedral_mat":
                idx = int(_kept(float(torch.randint(0, 8, (1,)).item()), kw["p"]))
                xs, ys = (1, -1, 1, -1, -1, 1, 1, -1)[idx], (1, 1, -1, 1, -1, -1, 1, -1)[idx]
                m0, m1 = (1, 1, 1, 0, 1, 0, 0, 0)[idx], (0, 0, 0, 1, 0, 1, 1, 1)[idx]
                m = m @ np.array([[xs * m0, xs * m1, 0.0], [ys * m1, ys * m0, 0.0], [0.0, 0.0, 1.0]])
            elif name == "rotate_mat":
                theta = _kept(_uniform(-kw["max_deg"], kw["max_deg"]), kw["p"]) * math.pi / 180
                m = m @ np.array([[math.cos(theta), math.sin(theta), 0.0], [-math.sin(theta), math.cos(theta), 0.0],
                                  [0.0, 0.0, 1.0]])
            else:  # zoom_mat
                s = 1 / _kept(_uniform(kw["min_zoom"], kw["max_zoom"]), kw["p"], neutral=1.0)
                col, row = _uniform(0, 1), _uniform(0, 1)
                m = m @ np.array([[s, 0.0, (1 - s) * (2 * col - 1)], [0.0, s, (1 - s) * (2 * row - 1)], [0.0, 0.0, 1.0]])
        m[0, 1] *= height / width
        m[1, 0] *= width / height
        for kw in self.warps:  # fastai's `_WarpCoord`: the corners moved, the perspective that moves them
            x_t = _kept(_uniform(-kw["magnitude"], kw["magnitude"]), kw["p"])
            y_t = _kept(_uniform(-kw["magnitude"], kw["magnitude"]), kw["p"])
            orig = torch.tensor([[[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]])
            targ = torch.tensor([[[-1 - y_t, -1 - x_t], [-1 + y_t, 1 + x_t], [1 + y_t, -1 + x_t], [1 - y_t, 1 - x_t]]])
            c = find_coeffs(orig, targ)[0].double().numpy().reshape(8)
            m = np.array([[c[0], c[1], c[2]], [c[3], c[4], c[5]], [c[6], c[7], 1.0]]) @ m
        return m

    def _levels(self) -> np.ndarray | None:
        """fastai's brightness and contrast (in logit space) for one image, as a table of the 256 levels."""
        shift, scale = 0.0, 1.0
        for name, kw in self.lights:
            m, p = kw["max_lighting"], kw["p"]
            if name == "_BrightnessLogit":
                b = _kept(_uniform(0.5 * (1 - m), 0.5 * (1 + m)), p, neutral=0.5)
                b = min(max(b, 1e-7), 1 - 1e-7)
                shift = math.log(b / (1 - b))
            else:
                scale = _kept(math.exp(_uniform(math.log(1 - m), -math.log(1 - m))), p, neutral=1.0)
        if shift == 0.0 and scale == 1.0:
            return None
        levels = 255 / (1 + np.exp(-(_LOGIT_LEVELS + shift) * scale))
        return np.rint(levels).astype(np.uint8)

    def draw(self, height: int, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(the 3 x 3 matrix from output pixels to input pixels, or None; the lookup table of levels, or None)."""
        matrix = pixel_matrix(self._affine_matrix(height, width), height, width) if self.affine or self.warps else None
        if matrix is not None and np.abs(matrix - _IDENTITY).max() < 1e-9:  # np.allclose: 50 us, a tenth of a warp
            matrix = None
        return matrix, self._levels() if self.lights else None

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """One random change to `pixels` (height, width[, channels]) uint8: new pixels, or `pixels` unchanged."""
        # No OpenCV thread pool, in the main process or a worker: a pool started before the loader forks its
        # workers leaves them waiting on threads that were not copied (a hang, met with 2 workers after a run with
        # 0), and one worker per core already keeps the cores busy. OpenCV: setNumThreads(0) runs sequentially.
        cv2.setNumThreads(0)
        height, width = pixels.shape[:2]
        matrix, lut = self.draw(height, width)
        if matrix is None:
            return pixels if lut is None else cv2.LUT(pixels, lut).reshape(pixels.shape)
        flags, border = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, cv2.BORDER_REFLECT_101
        channels = pixels.shape[2:]
        # OpenCV's bilinear warp has vector code for 1 and 4 channels, not 3: a colour image warped with a fourth
        # channel takes 150 us instead of 285 (224 px), the same pixels in the first three (tests/test_item_augment.py)
        colour = channels == (3,)
        source = cv2.cvtColor(pixels, cv2.COLOR_RGB2RGBA) if colour else pixels
        if np.abs(matrix[2] - _IDENTITY[2]).max() < 1e-12:
            warped = cv2.warpAffine(source, matrix[:2], (width, height), flags=flags, borderMode=border)
        else:
            warped = cv2.warpPerspective(source, matrix, (width, height), flags=flags, borderMode=border)
        if lut is not None:
            warped = cv2.LUT(warped, lut)
        # a view of the first three channels (callers copy it into their batch), or the single channel's axis back
        return warped[:, :, :3] if colour else warped.reshape(height, width, *channels)

    def encodes(self, x: PILImage):
        pixels = np.asarray(x)
        changed = self.apply(pixels)
        return x if changed is pixels else type(x).create(np.ascontiguousarray(changed))


def item_augment_transforms(preset: str, size: int) -> tuple[list, list]:
    """(item_tfms, batch_tfms) for `preset` at `size` with the random changes made image by image on the
    CPU: the squish to size, then `ItemAugment`; no batch transforms."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return [SquishResize(size)] + ([ItemAugment(preset, size)] if PRESETS[preset] else []), []
