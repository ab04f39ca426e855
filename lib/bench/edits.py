"""Image edits that make a "copy" of a source image, as in copy-detection benchmarks.

Every edit is a function ``(image, rng) -> image`` on RGB Pillow images; ``rng`` is a
``numpy.random.Generator`` so that results are reproducible from a seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from lib.verdict.learning import paste_scaled

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]


def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep a random window of 65-85% of each side."""
    w, h = image.size
    f = rng.uniform(0.65, 0.85)
    cw, ch = max(1, int(w * f)), max(1, int(h * f))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Re-encode as JPEG at quality 20-50."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(rng.integers(20, 51)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Jitter brightness, contrast and saturation by up to 40%, and shift the hue."""
    out = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.6, 1.4))
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.5, 1.5))
    hsv = np.asarray(out.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(10, 40))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate by 8-20 degrees either way, filling corners with white."""
    angle = float(rng.uniform(8, 20) * rng.choice([-1, 1]))
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))


def flip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror left to right."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur with a radius of 0.5-1.5% of the short side."""
    radius = max(0.8, min(image.size) * float(rng.uniform(0.005, 0.015)))
    return image.filter(ImageFilter.GaussianBlur(radius))


def text_overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Write a caption in a band across the image."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    size = max(8, h // 8)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except TypeError:
        font = ImageFont.load_default()
    words = ["COPY", "SALE", "#art", "generated", "2026", "hello"]
    y = int(rng.uniform(0.1, 0.75) * h)
    draw.text((int(0.05 * w), y), " ".join(rng.choice(words, 2)), fill=(0, 0, 0), font=font)
    return out


def downscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Shrink to a quarter to a half of the size, then scale back up."""
    w, h = image.size
    f = rng.uniform(0.25, 0.5)
    small = image.resize((max(1, int(w * f)), max(1, int(h * f))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def paste(
    image: Image.Image, rng: np.random.Generator, background: Image.Image | None = None
) -> Image.Image:
    """Paste the image, scaled to 60-80% of the width, onto another image or noise."""
    w, h = image.size
    if background is None:
        noise = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        background = Image.fromarray(noise).resize((w, h), Image.Resampling.BILINEAR)
    canvas = background.convert("RGB").resize((w, h))
    f = rng.uniform(0.6, 0.8)
    small = image.resize((max(1, int(w * f)), max(1, int(h * f))), Image.Resampling.BILINEAR)
    x = int(rng.integers(0, w - small.width + 1))
    y = int(rng.integers(0, h - small.height + 1))
    canvas.paste(small, (x, y))
    return canvas


def combined(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Crop, colour jitter and JPEG together."""
    return jpeg(colour(crop(image, rng), rng), rng)


EDITS: dict[str, Edit] = {
    "crop": crop,
    "jpeg": jpeg,
    "colour": colour,
    "rotate": rotate,
    "flip": flip,
    "blur": blur,
    "text": text_overlay,
    "downscale": downscale,
    "paste": paste,
    "combined": combined,
}
"""Every named edit; ``paste`` uses a noise background unless one is given."""


# ---------------------------------------------------------------------------------------------
# The verdict benchmark's edits (benchmarks/verdicts.py): one fixed strength per kind, the
# kinds a user meets most, so that the share flagged per kind can be compared across domains.
# ---------------------------------------------------------------------------------------------


def crop70(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep a window of 70% of each side at a random place."""
    w, h = image.size
    cw, ch = max(1, round(w * 0.7)), max(1, round(h * 0.7))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def jpeg25(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Re-encode as JPEG at quality 25."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=25)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def colour_rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Colour jitter (:func:`colour`) then a rotation of 8 degrees either way on white."""
    angle = 8.0 * float(rng.choice([-1, 1]))
    return colour(image, rng).rotate(
        angle, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255)
    )


def flip_blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror left to right, then blur (:func:`blur`)."""
    return blur(flip(image, rng), rng)


def banner(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A dark band over 18-25% of the height with white text, at the top or the bottom."""
    out = image.copy()
    w, h = out.size
    band = max(2, round(h * float(rng.uniform(0.18, 0.25))))
    top = 0 if rng.random() < 0.5 else h - band
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, top, w, top + band), fill=(20, 20, 28))
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(
            size=max(6, int(band * 0.6))
        )
    except TypeError:
        font = ImageFont.load_default()
    words = ["SALE", "NEW", "#art", "generated", "2026", "my design", "for sale"]
    text = " ".join(rng.choice(words, 2))
    draw.text((max(1, w // 20), top + band // 6), text, fill=(255, 255, 255), font=font)
    return out


def downscale4(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Shrink to a quarter of each side, then scale back up (bilinear both ways)."""
    w, h = image.size
    small = image.resize((max(1, w // 4), max(1, h // 4)), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def composed(
    image: Image.Image, rng: np.random.Generator, background: Image.Image | None = None
) -> Image.Image:
    """The whole source, scaled to 55-75% of each side, pasted onto a photograph.

    ``background``: an unrelated photograph (a random window of it fills the canvas, which
    has the source's size); noise when None.
    """
    w, h = image.size
    if background is None:
        noise = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        canvas = Image.fromarray(noise).resize((w, h), Image.Resampling.BILINEAR)
    else:
        canvas = _random_window(background.convert("RGB"), (w, h), rng)
    return paste_scaled(image, canvas, float(rng.uniform(0.55, 0.75)), rng)


def _random_window(
    photo: Image.Image, size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """A random window of ``photo`` with the aspect of ``size``, 30-100% of its short side,
    resized to ``size``."""
    w, h = size
    pw, ph = photo.size
    scale = float(rng.uniform(0.3, 1.0)) * min(pw / w, ph / h)
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    return photo.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR)


VERDICT_EDITS: dict[str, Edit] = {
    "crop70": crop70,
    "jpeg25": jpeg25,
    "colour+rotate8": colour_rotate,
    "flip+blur": flip_blur,
    "banner": banner,
    "downscale4": downscale4,
}
"""The edited-copy kinds of the verdict benchmark; ``composed`` is separate because it
needs a background photograph."""
