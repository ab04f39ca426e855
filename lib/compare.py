"""Pictures for comparing a query with a training match: same-height rows, blends,
blink animations and difference images. Pure Pillow/numpy; the app only displays them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageChops, ImageOps


def fit_height(image: Image.Image, height: int) -> Image.Image:
    """Scale an RGB image to ``height`` pixels, keeping its aspect ratio."""
    w, h = image.size
    width = max(1, round(w * height / max(h, 1)))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def pair_strip(
    left: Image.Image | None, right: Image.Image | None, height: int, gap: int = 8
) -> Image.Image:
    """Two pictures side by side at one ``height`` (pixels) on white, so that a page draws
    a pair at one size whatever the pictures' shapes (a missing one leaves a grey box of
    the same height).

    Example:
        >>> pair_strip(Image.new("RGB", (10, 40)), Image.new("RGB", (80, 20)), 50).size
        (220, 50)
    """
    parts = [
        fit_height(im.convert("RGB"), height)
        if im is not None
        else Image.new("RGB", (height, height), (236, 236, 236))
        for im in (left, right)
    ]
    out = Image.new("RGB", (parts[0].width + gap + parts[1].width, height), (255, 255, 255))
    out.paste(parts[0], (0, 0))
    out.paste(parts[1], (parts[0].width + gap, 0))
    return out


def aligned_pair(
    query: Image.Image, match: Image.Image, size: int = 384
) -> tuple[Image.Image, Image.Image]:
    """Both images letterboxed on white into the same ``size`` x ``size`` square."""

    def square(im: Image.Image) -> Image.Image:
        return ImageOps.pad(im.convert("RGB"), (size, size), color=(255, 255, 255))

    return square(query), square(match)


def blend(query: Image.Image, match: Image.Image, mix: float, size: int = 384) -> Image.Image:
    """``mix`` in 0..1: 0 shows the query, 1 the match, values between cross-fade them."""
    a, b = aligned_pair(query, match, size)
    return Image.blend(a, b, float(np.clip(mix, 0.0, 1.0)))


def difference(query: Image.Image, match: Image.Image, size: int = 384) -> Image.Image:
    """Absolute per-pixel difference of the aligned pair, contrast-stretched so that small
    differences are visible (black = identical)."""
    a, b = aligned_pair(query, match, size)
    diff = ImageChops.difference(a, b).convert("L")
    return ImageOps.autocontrast(diff, cutoff=1).convert("RGB")


def blink_gif(
    query: Image.Image, match: Image.Image, size: int = 384, period_ms: int = 600
) -> bytes:
    """An animated GIF alternating query and match (a blink comparator), as bytes."""
    a, b = aligned_pair(query, match, size)
    buf = io.BytesIO()
    a.save(buf, format="GIF", save_all=True, append_images=[b], duration=period_ms, loop=0)
    return buf.getvalue()
