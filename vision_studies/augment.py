"""Augmentation presets: which random changes a study's images may go through and still keep their label.

Each preset returns fastai's pair (item transforms, batch transforms). Items are resized on the CPU one by
one; the random flips, rotations, warps and lighting run on whole batches, on the GPU when there is one.
"""

from __future__ import annotations

from fastai.vision.augment import Resize, ResizeMethod, aug_transforms

__all__ = ["PRESETS", "augment_transforms"]

# Each entry: aug_transforms arguments, or None for no random augmentation at all.
PRESETS: dict[str, dict | None] = {
    "none": None,
    # Photos whose label survives a mirror image and a slight change of framing and light.
    "light": dict(do_flip=True, max_rotate=5.0, max_zoom=1.05, max_lighting=0.1, max_warp=0.0),
    # fastai's defaults: what fine-tuning on natural photos usually wants.
    "strong": dict(do_flip=True, max_rotate=10.0, max_zoom=1.1, max_lighting=0.2, max_warp=0.2),
    # Sky photos (clouds): any rotation, perspective warps, crops; no "up" to preserve.
    "perspective": dict(do_flip=True, flip_vert=True, max_rotate=45.0, max_zoom=1.5, max_lighting=0.2, max_warp=0.4),
    # Handwriting: a mirrored 2 or a 6 turned upside down is another digit, so small moves only.
    "digits": dict(do_flip=False, max_rotate=10.0, max_zoom=1.1, max_lighting=0.0, max_warp=0.0),
}


def augment_transforms(preset: str, size: int) -> tuple[list, list]:
    """(item_tfms, batch_tfms) for `preset` at a final square `size`.

    Every image is first squished to `size` x `size`; the random changes then happen at that size, in
    training batches only. So validation and prediction see exactly "resize to size, scale to [0, 1]"
    (and the pretrained model's normalisation), which an exported model can repeat without fastai.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    args = PRESETS[preset]
    return [Resize(size, method=ResizeMethod.Squish)], ([] if args is None else aug_transforms(**args))
