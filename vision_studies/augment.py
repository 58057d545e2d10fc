"""Augmentation presets: which random changes a study's images may go through and still keep their label.

Each preset returns fastai's pair (item transforms, batch transforms). Items are resized on the CPU one by
one; the random flips, rotations, warps and lighting run on whole batches, on the GPU when there is one.
Three of fastai's transforms are swapped for faster ones that compute the same pixels (`SquishResize`,
`FastAffineCoordTfm`, `fast_lighting`): on a CPU they were most of the time spent loading a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastai.vision.augment import AffineCoordTfm, LightingTfm, Resize, ResizeMethod, aug_transforms
from fastai.vision.core import TensorImage
from fasttransform.transform import compose_tfms
from PIL import Image

__all__ = ["PRESETS", "augment_transforms", "SquishResize", "FastAffineCoordTfm", "fast_lighting"]

# Each entry: aug_transforms arguments, or None for no random augmentation at all.
PRESETS: dict[str, dict | None] = {
    "none": None,
    # Photos whose label survives a mirror image and a slight change of framing and light.
    "light": dict(do_flip=True, max_rotate=5.0, max_zoom=1.05, max_lighting=0.1, max_warp=0.0),
    # fastai's defaults: what fine-tuning on natural photos usually wants.
    "strong": dict(do_flip=True, max_rotate=10.0, max_zoom=1.1, max_lighting=0.2, max_warp=0.2),
    # Pictures with no "up" at all (a sky photographed straight overhead, a microscope slide): any
    # rotation, flips both ways, perspective warps, crops.
    "perspective": dict(do_flip=True, flip_vert=True, max_rotate=45.0, max_zoom=1.5, max_lighting=0.2, max_warp=0.4),
    # Ground-based sky photos (clouds): a camera pointed up from the ground keeps the horizon, trees or roofs
    # at the bottom and the sky's brightest part on top, so upside-down skies and 45-degree horizons cannot
    # happen: mirror images, slight tilts (a hand-held camera's), crops of the sky, perspective warps (the
    # camera's angle up) and lighting (time of day) can.
    "sky": dict(do_flip=True, flip_vert=False, max_rotate=10.0, max_zoom=1.5, max_lighting=0.2, max_warp=0.3),
    # Handwriting: a mirrored 2 or a 6 turned upside down is another digit, so small moves only.
    "digits": dict(do_flip=False, max_rotate=10.0, max_zoom=1.1, max_lighting=0.0, max_warp=0.0),
}


class SquishResize(Resize):
    """fastai's ``Resize(size, method="squish")`` on images, without its crop-and-pad detour.

    fastai squishes by cropping the whole image, padding it by zero pixels and then resizing: two copies
    of every image for nothing. This resizes directly (the same bilinear PIL resize, so the same pixels)
    and leaves an image that already has the size alone. Points and boxes go through fastai's code.
    """

    def __init__(self, size: int | tuple[int, int], **kwargs):
        super().__init__(size, method=ResizeMethod.Squish, **kwargs)

    def encodes(self, x: Image.Image):
        size = tuple(self.size)  # fastai keeps it as (width, height), as PIL wants it
        return x if x.size == size else x.resize(size, self.mode)


class FastAffineCoordTfm(AffineCoordTfm):
    """fastai's batch of flips, rotations, zooms and warps, with the sampling grid built in one pass.

    On a CPU, ``F.affine_grid`` multiplies every pixel's coordinates by its matrix in a batched matmul with
    an inner size of 3, the slowest part of augmenting a batch (0.1 s for 64 images at 224 px); the grid is a
    sum of a per-column and a per-row term, built here by broadcasting, six times faster. Images that keep
    their size need none of fastai's pre-shrinking, so they go straight to ``F.grid_sample``; masks, points,
    boxes and resizing go through fastai's own code.
    """

    @classmethod
    def like(cls, tfm: AffineCoordTfm) -> "FastAffineCoordTfm":
        """The same transform as `tfm` (one that `aug_transforms` composed), with the faster grid."""
        new = cls(aff_fs=tfm.aff_fs, coord_fs=tfm.coord_fs, size=tfm.size, mode=tfm.mode, pad_mode=tfm.pad_mode,
                  mode_mask=tfm.mode_mask, align_corners=tfm.align_corners)
        new.p = tfm.p
        return new

    def encodes(self, x: TensorImage):
        if self.size is not None or not self.align_corners:
            return self._encode(x, self.mode)
        if self.split_idx:  # validation: fastai resamples through the identity, which changes nothing
            return x
        n, _, h, w = x.shape
        mat = self.mat.to(x.dtype)  # (n, 2, 3): output pixel (u, v, 1) -> where to sample it from
        xs = torch.linspace(-1, 1, w, dtype=x.dtype, device=x.device)
        ys = torch.linspace(-1, 1, h, dtype=x.dtype, device=x.device)
        grid = (mat[:, None, None, :, 0] * xs[None, None, :, None] + mat[:, None, None, :, 2]) + (
            mat[:, None, None, :, 1] * ys[None, :, None, None]
        )  # (n, h, w, 2), as F.affine_grid(mat, (n, c, h, w), align_corners=True) makes it
        if self.coord_fs:  # warps move the grid's points on from there
            grid = compose_tfms(grid, tfms=self.coord_fs)
        return TensorImage(F.grid_sample(x, grid, mode=self.mode, padding_mode=self.pad_mode, align_corners=True))


def fast_lighting(x: torch.Tensor, func) -> torch.Tensor:
    """fastai's ``TensorImage.lighting`` (brightness and contrast in logit space) in two passes over the batch.

    fastai computes ``sigmoid(func(-(1 / clamp(x) - 1).log()))``: six full-size temporaries for a batch of
    images. ``torch.special.logit`` clamps and takes the logit in one pass, and the sigmoid runs in place;
    the results agree with fastai's to float rounding (1e-7).
    """
    return func(torch.special.logit(x, eps=1e-7)).sigmoid_()


def augment_transforms(preset: str, size: int) -> tuple[list, list]:
    """(item_tfms, batch_tfms) for `preset` at a final square `size`.

    Every image is first squished to `size` x `size`; the random changes then happen at that size, in
    training batches only. So validation and prediction see exactly "resize to size, scale to [0, 1]"
    (and the pretrained model's normalisation), which an exported model can repeat without fastai.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    args = PRESETS[preset]
    # aug_transforms composes flips, rotations and zooms into one transform, brightness and contrast into another
    batch_tfms = [] if args is None else aug_transforms(**args)
    for i, tfm in enumerate(batch_tfms):
        if isinstance(tfm, AffineCoordTfm):
            batch_tfms[i] = FastAffineCoordTfm.like(tfm)
        elif isinstance(tfm, LightingTfm):
            tfm.space_fn = fast_lighting
    return [SquishResize(size)], batch_tfms
