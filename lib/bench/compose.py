"""Object-level copies: a source object or box pasted into another image.

- **segmix** (after the "segmix" copies of Somepalli et al.): cut the source's object out
  (its alpha channel when it has one; else a foreground mask from the difference with
  the border colour; else a centred ellipse), scale it to 30-60% of the canvas width,
  rotate it by up to 30 degrees and paste it at a random place in a background.
- **cutmix**: a rectangular box of 50-80% of each side of the source, scaled to 40-70% of
  the canvas width, pasted unrotated at a random place in a background.

The canvas is the background scaled to a long side of 384 pixels (aspect capped at 2:1 by
a centre crop). Every function takes a ``numpy.random.Generator`` so that results are
reproducible; each returns the picture and the pasted box ``(left, top, right, bottom)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CANVAS_LONG_SIDE = 384
MAX_ASPECT = 2.0
SEGMIX_WIDTH = (0.3, 0.6)
SEGMIX_MAX_DEGREES = 30.0
CUTMIX_BOX_SIDE = (0.5, 0.8)
CUTMIX_WIDTH = (0.4, 0.7)
MAX_OBJECT_HEIGHT = 0.9
BORDER_DIFFERENCE = 40
"""A pixel differing from the border colour by more than this (0..255, any channel) is
foreground when a source has no alpha channel."""
FOREGROUND_SHARE = (0.05, 0.9)
"""A border-difference mask is trusted only when it covers this share of the image."""

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Cutout:
    """An object: RGB pixels and an L mask of the same size (255 = object), cropped tight."""

    image: Image.Image
    mask: Image.Image
    method: str
    """"alpha", "border" or "centre": how the mask was found."""


def centre_mask(size: tuple[int, int]) -> Image.Image:
    """An ellipse covering the central 80% of each side: the fallback object."""
    w, h = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h), fill=255)
    return mask


def border_mask(image: Image.Image) -> Image.Image | None:
    """Foreground as pixels far from the median border colour; None when the result covers
    too little or too much of the image to be an object on a plain background."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    colour = np.median(border, axis=0)
    far = np.abs(rgb - colour).max(axis=2) > BORDER_DIFFERENCE
    mask = Image.fromarray((far * 255).astype(np.uint8), "L").filter(ImageFilter.MedianFilter(5))
    share = float(np.asarray(mask).mean()) / 255.0
    if not FOREGROUND_SHARE[0] <= share <= FOREGROUND_SHARE[1]:
        return None
    return mask


def object_cutout(image: Image.Image, alpha: Image.Image | None = None) -> Cutout:
    """The source's object, cropped to its mask's bounding box.

    Args:
        image: RGB source.
        alpha: its alpha channel (L, same size) if it has a transparent part.
    """
    method = "alpha"
    mask = alpha if alpha is not None and _has_object(alpha) else None
    if mask is None:
        method, mask = "border", border_mask(image)
    if mask is None:
        method, mask = "centre", centre_mask(image.size)
    box = mask.point(lambda v: 255 if v > 16 else 0).getbbox() or (0, 0, *image.size)
    return Cutout(image.convert("RGB").crop(box), mask.crop(box), method)


def _has_object(alpha: Image.Image) -> bool:
    values = np.asarray(alpha)
    return bool(values.max() > 16 and values.min() < 240)


def make_canvas(background: Image.Image, long_side: int = CANVAS_LONG_SIDE) -> Image.Image:
    """The background as an RGB canvas with a long side of ``long_side`` pixels."""
    w, h = background.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        if w > h:
            cw = int(MAX_ASPECT * h)
            background = background.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
        else:
            ch = int(MAX_ASPECT * w)
            background = background.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
        w, h = background.size
    scale = long_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return background.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def _fit(size: tuple[int, int], canvas: tuple[int, int], width_share: float) -> tuple[int, int]:
    """Object size for a target width share of the canvas, shrunk to fit its height."""
    w, h = size
    scale = width_share * canvas[0] / w
    scale = min(scale, MAX_OBJECT_HEIGHT * canvas[1] / h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _place(
    canvas: Image.Image, patch: Image.Image, mask: Image.Image | None, rng: np.random.Generator
) -> tuple[Image.Image, Box]:
    """Paste ``patch`` (shrunk if it does not fit) at a random place fully inside."""
    cw, ch = canvas.size
    if patch.width > cw or patch.height > ch:
        scale = min(cw / patch.width, ch / patch.height)
        size = (max(1, int(patch.width * scale)), max(1, int(patch.height * scale)))
        patch = patch.resize(size, Image.Resampling.BICUBIC)
        mask = mask.resize(size, Image.Resampling.BILINEAR) if mask is not None else None
    x = int(rng.integers(0, cw - patch.width + 1))
    y = int(rng.integers(0, ch - patch.height + 1))
    out = canvas.copy()
    out.paste(patch, (x, y), mask)
    return out, (x, y, x + patch.width, y + patch.height)


def segmix(
    cutout: Cutout, background: Image.Image, rng: np.random.Generator
) -> tuple[Image.Image, Box]:
    """Paste the object, scaled to 30-60% of the canvas width and rotated up to 30 degrees."""
    canvas = make_canvas(background)
    size = _fit(cutout.image.size, canvas.size, float(rng.uniform(*SEGMIX_WIDTH)))
    image = cutout.image.resize(size, Image.Resampling.BICUBIC)
    mask = cutout.mask.resize(size, Image.Resampling.BILINEAR)
    angle = float(rng.uniform(-SEGMIX_MAX_DEGREES, SEGMIX_MAX_DEGREES))
    image = image.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    mask = mask.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    return _place(canvas, image, mask, rng)


def cutmix(
    source: Image.Image, background: Image.Image, rng: np.random.Generator
) -> tuple[Image.Image, Box]:
    """Paste a box of 50-80% of each side of ``source``, scaled to 40-70% of the canvas width."""
    canvas = make_canvas(background)
    w, h = source.size
    bw = max(1, round(w * rng.uniform(*CUTMIX_BOX_SIDE)))
    bh = max(1, round(h * rng.uniform(*CUTMIX_BOX_SIDE)))
    x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    box = source.convert("RGB").crop((x, y, x + bw, y + bh))
    size = _fit(box.size, canvas.size, float(rng.uniform(*CUTMIX_WIDTH)))
    return _place(canvas, box.resize(size, Image.Resampling.BICUBIC), None, rng)
