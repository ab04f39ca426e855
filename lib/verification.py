"""Pixel alignment of a query with its shortlisted training images.

A global copy-detection descriptor (SSCD) is strongest on edits that change the content
of a picture (a banner, a colour shift, a crop) and weakest on edits that only degrade it
(JPEG, blur, a downscale) or shrink it into a new scene, especially on small, flat
pictures such as emoji and icons, where unrelated look-alikes sit at cosine 0.85-0.95.
There, the pixels of a copy still line up with its source. This module measures that:
the zero-mean normalised cross-correlation (NCC, Lewis 1995, "Fast normalized
cross-correlation"; OpenCV's ``matchTemplate`` with ``TM_CCOEFF_NORMED``) of the two
pictures in grey, at a small fixed size, taking the best of

- the whole query against the whole training image, as it is and mirrored;
- the query as a window of the training image (a crop kept 65-85% of each side);
- the training image as a window of the query (a picture pasted at 55-76% of each side
  into a new scene).

The result, the *alignment*, is -1..1. It is not calibrated on its own: the index's
null (:mod:`lib.calibration`) measures how well unrelated images of the same collection
align with their shortlists, and the verdict uses the alignment only through that.
About 1 ms per pair on one core, plus decoding the training image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lib.allowed_paths import load_inside
from lib.images import ImageLoadError, load_image

WHOLE_SIZE = 64
"""Side (px) at which whole pictures are compared."""
WINDOW_SIZE = 96
"""Side (px) of the picture a window is searched in."""
CROP_SCALES = (0.65, 0.75, 0.85)
"""Query as a window of the training image: the window's side, as a share of its side."""
PASTE_SCALES = (0.55, 0.62, 0.69, 0.76)
"""Training image as a window of the query: the window's side, as a share."""
THUMB_SIDE = 128
"""Grey thumbnails are kept at this long side; windows are resized from them."""
SHORTLIST = 8
"""Global matches whose pixels are aligned with each query."""


@dataclass(frozen=True)
class GreyThumb:
    """A picture in grey, ready for :func:`alignment`: ``whole`` (64, 64) and ``base``
    (96, 96) float32 arrays, and ``thumb``, a grey Pillow image to cut windows from."""

    whole: np.ndarray
    base: np.ndarray
    thumb: Image.Image
    colour: np.ndarray | None = None
    """(16, 16, 3) float32 RGB, the picture squashed to a square: what two pictures whose
    grey pixels line up still differ in (a recoloured sibling, another skin tone)."""


COLOUR_SIDE = 16
"""Side (px) of :attr:`GreyThumb.colour`."""


def grey_thumb(image: Image.Image) -> GreyThumb:
    """The grey arrays of an RGB picture (any size; squashed to squares)."""
    grey = image.convert("L")
    grey.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    small = image.convert("RGB").resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX)
    return GreyThumb(
        whole=_square(grey, WHOLE_SIZE),
        base=_square(grey, WINDOW_SIZE),
        thumb=grey,
        colour=np.asarray(small, np.float32),
    )


def colour_difference(a: GreyThumb, b: GreyThumb, *, mirrored: bool = False) -> float:
    """Mean absolute difference (0..255) of the two pictures' colours, pixel by pixel,
    each channel taken from its own mean first, so that a brighter or darker copy does
    not differ but another colouring of some parts does (``b`` mirrored first when
    ``mirrored``); NaN when either has no colour thumbnail."""
    if a.colour is None or b.colour is None:
        return float("nan")
    other = b.colour[:, ::-1] if mirrored else b.colour
    one = a.colour - a.colour.mean(axis=(0, 1))
    two = other - other.mean(axis=(0, 1))
    return float(np.abs(one - two).mean())


def _square(grey: Image.Image, side: int) -> np.ndarray:
    return np.asarray(grey.resize((side, side), Image.Resampling.BILINEAR), np.float32)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


def _best_window(base: np.ndarray, template: np.ndarray) -> float:
    import cv2

    if template.std() == 0 or base.std() == 0:
        return 0.0
    return float(cv2.matchTemplate(base, template, cv2.TM_CCOEFF_NORMED).max())


def alignment(query: GreyThumb, candidate: GreyThumb) -> float:
    """How well the two pictures' pixels line up: the best NCC (-1..1) over the whole
    pictures (as they are and mirrored), the query as a window of the candidate, and
    the candidate as a window of the query (module docstring)."""
    return max(alignment_parts(query, candidate).values())


ALIGNMENT_PARTS = ("whole", "mirrored", "crop", "pasted")
"""How two pictures can line up: whole against whole, whole against the other mirrored,
the query as a window of the candidate (a crop), the candidate as a window of the query
(pasted into a new scene)."""


def alignment_parts(query: GreyThumb, candidate: GreyThumb) -> dict[str, float]:
    """The best NCC (-1..1) of each way in :data:`ALIGNMENT_PARTS`; :func:`alignment` is
    their maximum."""
    crop = max(
        _best_window(candidate.base, _square(query.thumb, _side(scale))) for scale in CROP_SCALES
    )
    pasted = max(
        _best_window(query.base, _square(candidate.thumb, _side(scale))) for scale in PASTE_SCALES
    )
    return {
        "whole": _ncc(query.whole, candidate.whole),
        "mirrored": _ncc(query.whole[:, ::-1], candidate.whole),
        "crop": crop,
        "pasted": pasted,
    }


def _side(scale: float) -> int:
    return max(8, round(WINDOW_SIZE * scale))


ThumbCache = dict[str, GreyThumb | None]
"""Training pictures' grey thumbnails by path (None: unreadable), kept for one call."""


def candidate_thumb(
    path: str, cache: ThumbCache | None = None, roots: Iterable[Path] | None = None
) -> GreyThumb | None:
    """A training picture's grey thumbnail, from ``cache`` when there; None when the file
    can no longer be read or lies outside ``roots`` (:mod:`lib.allowed_paths`; None: the
    caller vouches for the path, as a build does for the files it just read)."""
    if cache is not None and path in cache:
        return cache[path]
    try:
        loaded = (
            load_image(path, draft_short_side=THUMB_SIDE)
            if roots is None
            else load_inside(path, roots, draft_short_side=THUMB_SIDE)
        )
        thumb: GreyThumb | None = grey_thumb(loaded.image)
    except (ImageLoadError, OSError):
        thumb = None
    if cache is not None:
        cache[path] = thumb
    return thumb


def align_shortlist(
    query: Image.Image | GreyThumb,
    paths: Sequence[str],
    cache: ThumbCache | None = None,
    roots: Iterable[Path] | None = None,
) -> np.ndarray:
    """Alignment of ``query`` with each training picture in ``paths``: (len(paths),)
    float32, NaN where a training picture cannot be read or lies outside ``roots`` (see
    :func:`candidate_thumb`; the verdict then rests on the embedding alone)."""
    q = query if isinstance(query, GreyThumb) else grey_thumb(query)
    out = np.full(len(paths), np.nan, np.float32)
    allowed = None if roots is None else tuple(roots)
    for i, path in enumerate(paths):
        c = candidate_thumb(path, cache, allowed)
        if c is not None:
            out[i] = alignment(q, c)
    return out
