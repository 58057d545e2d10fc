"""Photo-like fixture images: random views of real photographs that scikit-image ships, one scene per class.

Fixture runs of the transfer studies fine-tune an ImageNet-pretrained body (EfficientNet-Lite0, weights.py).
A body that learnt from photographs makes little of flat colour blobs on noise: on such fixtures it reached
0.21 to 0.44 on Pets' 37 breeds and 0.125 on CUB's 200 species, below what a small CNN from scratch learns
there. So a class here is a *scene*, a region of a real photograph (the whole of it, then its quarters, then
its ninths), and every image is a fresh view of its class's scene: a crop of 60 to 100% of the region,
squished to the image's size, mirrored half the time, with light brightness, contrast and colour jitter.
Views of one scene share what ImageNet features see (texture, parts, colours), views of two scenes do not,
so a pretrained body separates the classes from a few images each, as it does real ones.

The photographs are the ones inside the scikit-image distribution (``skimage.data``: Chelsea the cat,
coffee, the astronaut, the rocket, the motorcycle, ...); those ``skimage.data`` fetches with pooch are left
out, so nothing is downloaded. Every view is drawn from the caller's `numpy` generator: the same seed
writes the same fixture. Three fixtures draw scenes rather than cut them: `road` (potholes in asphalt),
`sky` (cloud genera) and `paste_view` (objects for a multi-label picture).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

__all__ = ["PHOTOS", "Scene", "SCENES", "scene_view", "photo", "road", "sky", "paste_view"]

# (skimage.data function, structured): all of these load from the installed package without a download
# (checked with scikit-image 0.26.0: the others raise "part of the scikit-image distribution ... pooch").
# A structured photo's quarters and ninths look unlike each other, so each becomes a scene of its own; a
# texture's (brick, grass, gravel, a checkerboard) look like the whole, so only the whole is one.
PHOTOS: tuple[tuple[str, bool], ...] = (
    ("chelsea", True), ("coffee", True), ("astronaut", True), ("rocket", True), ("stereo_motorcycle", True),
    ("hubble_deep_field", True), ("immunohistochemistry", True), ("retina", True), ("colorwheel", True),
    ("camera", True), ("brick", False), ("grass", False), ("gravel", False), ("coins", True), ("clock", True),
    ("moon", True), ("page", True), ("text", True), ("cell", True), ("checkerboard", False),
)
_LONG_SIDE = 256  # every photo is shrunk once to this long side: fixture images are at most 96 px


@lru_cache(maxsize=None)
def photo(name: str) -> Image.Image:
    """``skimage.data.<name>()`` as an RGB image with a long side of 256 px (grey photos as grey RGB)."""
    try:
        from skimage import data
    except ImportError as e:  # a dependency of the package (pyproject.toml), missing from this environment
        raise ImportError("fixture images are views of scikit-image's photographs: pip install "
                          "scikit-image") from e
    pixels = getattr(data, name)()
    pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo_motorcycle: (left, right, disparity)
    img = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB")
    scale = _LONG_SIDE / max(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class Scene:
    """A region of one photograph, as fractions of its width and height: (left, top, right, bottom)."""

    photo: str
    box: tuple[float, float, float, float]


def _scenes() -> tuple[Scene, ...]:
    """Whole photos first (the most distinct classes), then the structured photos' quarters, then their ninths."""
    scenes = [Scene(name, (0.0, 0.0, 1.0, 1.0)) for name, _ in PHOTOS]
    for grid in (2, 3):
        for row in range(grid):
            for col in range(grid):
                box = (col / grid, row / grid, (col + 1) / grid, (row + 1) / grid)
                scenes += [Scene(name, box) for name, structured in PHOTOS if structured]
    return tuple(scenes)


SCENES: tuple[Scene, ...] = _scenes()  # 20 whole photos + 64 quarters + 144 ninths = 228 classes at most


def scene_view(k: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A new random view of scene `k` (0 <= k < len(SCENES)), `size` = (width, height), drawn from `rng`.

    A crop of 60-100% of the scene's width and height at a random place inside it, squished to `size`,
    mirrored with probability 1/2, then brightness, contrast and saturation each scaled by 0.85-1.15.
    """
    if not 0 <= k < len(SCENES):
        raise ValueError(f"scene {k} does not exist: there are {len(SCENES)} (0 to {len(SCENES) - 1}); a fixture "
                         f"with more classes needs more photos in fixture_images.PHOTOS")
    scene = SCENES[k]
    img = photo(scene.photo)
    left, top, right, bottom = (f * s for f, s in zip(scene.box, (img.width, img.height) * 2))
    w, h = (right - left) * rng.uniform(0.6, 1.0), (bottom - top) * rng.uniform(0.6, 1.0)
    x, y = left + rng.uniform(0, right - left - w), top + rng.uniform(0, bottom - top - h)
    view = img.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + w, y + h), reducing_gap=2.0)
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhance(view).enhance(rng.uniform(0.85, 1.15))
    return view


def paste_view(img: Image.Image, k: int, rng: np.random.Generator, min_frac: float = 0.3, max_frac: float = 0.5,
               within: tuple[int, int, int, int] | None = None) -> None:
    """Paste a view of scene `k`, `min_frac` to `max_frac` of `img`'s sides, at a random place inside `within`
    (left, top, right, bottom in pixels; default: anywhere): "an object" in a multi-label picture."""
    W, H = img.size
    left, top, right, bottom = within or (0, 0, W, H)
    w = min(int(rng.uniform(min_frac, max_frac) * W), right - left)
    h = min(int(rng.uniform(min_frac, max_frac) * H), bottom - top)
    x, y = int(rng.integers(left, right - w + 1)), int(rng.integers(top, bottom - h + 1))
    img.paste(scene_view(k, (w, h), rng), (x, y))


def _soft(size: tuple[int, int], draw_shapes, blur: float) -> Image.Image:
    """A soft-edged mask: what `draw_shapes(ImageDraw)` draws in white on black, blurred by `blur` px."""
    mask = Image.new("L", size, 0)
    draw_shapes(ImageDraw.Draw(mask))
    return mask.filter(ImageFilter.GaussianBlur(blur))


def road(potholes: bool, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A street seen from above: a view of the gravel photograph, greyed like asphalt; with `potholes`, one or
    two dark, soft-edged hollows in it (the asphalt's own grain, darkened and browned)."""
    img = ImageEnhance.Color(scene_view(SCENES.index(Scene("gravel", (0.0, 0.0, 1.0, 1.0))), size, rng)).enhance(0.3)
    if potholes:
        W, H = size
        def hollows(draw: ImageDraw.ImageDraw) -> None:
            for _ in range(int(rng.integers(1, 3))):
                w, h = int(rng.uniform(0.25, 0.5) * W), int(rng.uniform(0.2, 0.45) * H)
                x, y = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
                draw.ellipse((x, y, x + w, y + h), fill=255)
        dark = Image.fromarray((np.asarray(img, dtype=float) * (0.35, 0.3, 0.27)).astype(np.uint8))
        img = Image.composite(dark, img, _soft(size, hollows, 1.5))
    return img


def sky(genus: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A photo-like sky with clouds of one genus, soft-edged as real ones: "Ci" thin white streaks on blue,
    "Cu" white heaps with grey bases on blue, "St" a flat grey overcast layer, "Cb" a dark towering cloud."""
    W, H = size
    t = np.linspace(0, 1, H)[:, None, None]
    top, bottom = np.array([35, 85, 175]), np.array([150, 185, 230])
    if genus == "St":
        top, bottom = np.full(3, rng.uniform(120, 150)), np.full(3, rng.uniform(160, 185))
    base = top + (bottom - top) * t + rng.normal(0, 3, size=(H, W, 3))
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    if genus == "St":  # an overcast layer: brighter and darker patches, no edges
        patches = Image.fromarray(rng.normal(0, 15, size=(4, 5)).astype(np.float32))
        shade = np.asarray(patches.resize(size, Image.Resampling.BICUBIC))[..., None]
        return Image.fromarray((np.asarray(img, dtype=float) + shade).clip(0, 255).astype(np.uint8))

    def streaks(draw: ImageDraw.ImageDraw) -> None:
        for _ in range(int(rng.integers(4, 8))):
            x, y = rng.uniform(-10, W), rng.uniform(0, H)
            draw.line((x, y, x + rng.uniform(25, 60), y - rng.uniform(3, 18)), fill=255, width=int(rng.integers(1, 4)))

    def heaps(draw: ImageDraw.ImageDraw) -> None:
        for _ in range(int(rng.integers(2, 4))):
            cx, cy, r = rng.uniform(0, W), rng.uniform(0.3 * H, 0.9 * H), rng.uniform(0.08, 0.14) * W
            for _ in range(7):
                x, y = cx + rng.normal(0, r), cy - abs(rng.normal(0, r * 0.7))
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)

    def tower(draw: ImageDraw.ImageDraw) -> None:
        cx, w = rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.5) * W
        draw.rectangle((cx - w / 2, 0.25 * H, cx + w / 2, H), fill=255)
        draw.ellipse((cx - w, 0.05 * H, cx + w, 0.4 * H), fill=255)  # the anvil

    shapes, colour, blur = {"Ci": (streaks, 245, 1.0), "Cu": (heaps, 250, 1.5), "Cb": (tower, 70, 2.5)}[genus]
    mask = _soft(size, shapes, blur)
    cloud = Image.new("RGB", size, (colour,) * 3)
    if genus == "Cu":  # lit from above: the heaps' bases are grey
        cloud = Image.fromarray((np.asarray(cloud, dtype=float) * (1 - 0.35 * t)).astype(np.uint8))
    return Image.composite(cloud, img, mask)
