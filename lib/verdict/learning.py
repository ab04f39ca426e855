"""Learning a collection at index time: self-made edited copies and a learned whitening.

A copy-detection descriptor (SSCD) is trained on photographs; on a collection of one kind
of picture (flat icons, product shots) the directions in which its own images differ
from each other are not the directions in which an edit moves an image. Learned
whitening (Radenović, Tolias and Chum, "Fine-tuning CNN image retrieval with no human
annotation", TPAMI 2018, section 3.3) fixes that from matching pairs alone:

1. the pairs' differences give the covariance ``C_S`` of what an edit changes;
   whitening by ``C_S^{-1/2}`` shrinks those directions;
2. in the whitened space, principal components of the collection's images (``C_D``)
   keep the directions in which distinct works differ, projected to ``dim``;
3. vectors are centred on the collection's mean, projected and L2-normalised again:
   the inner product stays a cosine.

The matching pairs are made here from the collection's own images with a broad random
family of edits (:func:`training_copy`): crops of any size and aspect, rotations,
colour and greyscale, blur, JPEG, downscaling, mirroring, text and banners, borders and
pastes onto other images or noise. The family is deliberately wider than, and different
from, the benchmark's fixed edits (:mod:`lib.bench.edits`), so that a benchmark of the
learned score stays a fair test.

Example:
    >>> rng = np.random.default_rng(0)
    >>> copy, kinds = training_copy(Image.new("RGB", (64, 64), "white"), rng)
    >>> w = fit_whitening(originals, copies, dim=256)  # doctest: +SKIP
    >>> w.apply(vectors).shape  # doctest: +SKIP
    (n, 256)
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

TrainingEdit = Callable[[Image.Image, np.random.Generator, Image.Image | None], Image.Image]

WHITENING_VERSION = 1
"""Bumped when the fitting method changes; stored with what was learned."""


# ---------------------------------------------------------------- the edit family
def paste_scaled(
    image: Image.Image, canvas: Image.Image, scale: float, rng: np.random.Generator
) -> Image.Image:
    """``image`` scaled to ``scale`` of the canvas's sides (the canvas has the image's
    size) and pasted at a random position on ``canvas``, which is returned."""
    w, h = canvas.size
    small = image.resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS
    )
    x = int(rng.integers(0, w - small.width + 1))
    y = int(rng.integers(0, h - small.height + 1))
    canvas.paste(small, (x, y))
    return canvas


def _crop(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    w, h = image.size
    area = float(rng.uniform(0.3, 0.95))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    cw = max(1, min(w, round(w * np.sqrt(area * aspect))))
    ch = max(1, min(h, round(h * np.sqrt(area / aspect))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def _rotate(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    fill = tuple(int(c) for c in rng.integers(0, 256, 3)) if rng.random() < 0.5 else (255,) * 3
    angle = float(rng.uniform(-30, 30))
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=rng.random() < 0.5,
                        fillcolor=fill)  # fmt: skip


def _colour(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    if rng.random() < 0.2:
        return ImageOps.grayscale(image).convert("RGB")
    out = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.6, 1.4)))
    out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.5, 1.5)))
    out = ImageEnhance.Color(out).enhance(float(rng.uniform(0.3, 1.7)))
    hsv = np.asarray(out.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(0, 256))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _blur(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    radius = max(0.5, min(image.size) * float(rng.uniform(0.003, 0.025)))
    return image.filter(ImageFilter.GaussianBlur(radius))


def _jpeg(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(rng.integers(10, 80)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _downscale(
    image: Image.Image, rng: np.random.Generator, other: Image.Image | None
) -> Image.Image:
    w, h = image.size
    f = float(rng.uniform(0.15, 0.6))
    small = image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST if rng.random() < 0.3 else
                        Image.Resampling.BICUBIC)  # fmt: skip


def _mirror(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    return ImageOps.mirror(image) if rng.random() < 0.8 else ImageOps.flip(image)


def _text(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    out = image.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    size = max(6, int(h * float(rng.uniform(0.06, 0.2))))
    if rng.random() < 0.5:  # a band behind the text
        top = int(rng.integers(0, max(1, h - size)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle((0, top, w, top + int(size * 1.4)), fill=colour)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except TypeError:
        font = ImageFont.load_default()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789 #@"))
    text = "".join(rng.choice(letters, int(rng.integers(3, 14))))
    xy = (int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h - size))))
    draw.text(xy, text, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), font=font)
    return out


def _border(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    w, h = image.size
    pad = [int(rng.integers(0, max(2, int(s * 0.25)))) for s in (w, h, w, h)]
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    return ImageOps.expand(image, border=tuple(pad), fill=colour)


def _paste(image: Image.Image, rng: np.random.Generator, other: Image.Image | None) -> Image.Image:
    """The image scaled to 30-85% of each side, onto another image or noise."""
    w, h = image.size
    if other is not None and rng.random() < 0.7:
        canvas = other.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    else:
        noise = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        canvas = Image.fromarray(noise).resize((w, h), Image.Resampling.BILINEAR)
    return paste_scaled(image, canvas, float(rng.uniform(0.3, 0.85)), rng)


TRAINING_EDITS: dict[str, TrainingEdit] = {
    "crop": _crop,
    "rotate": _rotate,
    "colour": _colour,
    "blur": _blur,
    "jpeg": _jpeg,
    "downscale": _downscale,
    "mirror": _mirror,
    "text": _text,
    "border": _border,
    "paste": _paste,
}
"""The broad random family of edits a collection learns from (each ``(image, rng,
other) -> image``; ``other`` is another image of the collection, for pastes)."""


def training_copy(
    image: Image.Image,
    rng: np.random.Generator,
    other: Image.Image | None = None,
    *,
    max_edits: int = 3,
    edits: Sequence[str] | None = None,
) -> tuple[Image.Image, list[str]]:
    """An edited copy of ``image`` made by 1..``max_edits`` edits drawn at random from
    :data:`TRAINING_EDITS` (only those named in ``edits`` when given), in random order,
    plus a JPEG re-encode half the time.

    Returns the copy (RGB) and the names of the edits applied, in order.
    """
    names = list(edits) if edits is not None else list(TRAINING_EDITS)
    chosen = list(rng.choice(names, size=int(rng.integers(1, max_edits + 1)), replace=False))
    out = image.convert("RGB")
    for name in chosen:
        out = TRAINING_EDITS[name](out, rng, other)
    if "jpeg" not in chosen and rng.random() < 0.5:
        out, chosen = _jpeg(out, rng, None), [*chosen, "jpeg"]
    return out, [str(n) for n in chosen]


# ---------------------------------------------------------------- learned whitening
@dataclass(frozen=True)
class Whitening:
    """A learned whitening: ``apply(x) = normalise((x - mean) @ projection)``.

    ``mean``: (d,) float32; ``projection``: (d, dim) float32. ``pairs``: how many
    matching pairs it was fitted on; ``version``: :data:`WHITENING_VERSION`.
    """

    mean: np.ndarray
    projection: np.ndarray
    pairs: int
    version: int = WHITENING_VERSION

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) float32 L2-normalised -> (n, dim) float32 L2-normalised."""
        x = (np.asarray(vectors, np.float32) - self.mean) @ self.projection
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def fit_whitening(
    originals: np.ndarray,
    copies: np.ndarray,
    pair_rows: Sequence[int] | np.ndarray,
    *,
    dim: int = 256,
    shrinkage: float = 0.1,
) -> Whitening:
    """Fit a learned whitening (Radenović et al. 2018) on matching pairs.

    Args:
        originals: (n, d) float32, L2-normalised: descriptors of the collection's images
            (their mean centres the space; their spread gives the kept directions).
        copies: (m, d) float32, L2-normalised: descriptors of edited copies.
        pair_rows: (m,) row in ``originals`` of each copy's source.
        dim: output dimension (at most d).
        shrinkage: ``C_S`` is shrunk towards its mean eigenvalue by this share, which
            keeps ``C_S^{-1/2}`` stable when pairs are few (0: none).

    Raises:
        ValueError: shapes that do not match, or fewer than 2 pairs.
    """
    originals = np.asarray(originals, np.float64)
    copies = np.asarray(copies, np.float64)
    rows = np.asarray(pair_rows, np.int64)
    if originals.ndim != 2 or copies.ndim != 2 or originals.shape[1] != copies.shape[1]:
        raise ValueError(f"shapes {originals.shape} and {copies.shape} do not match")
    if len(rows) != len(copies) or len(rows) < 2:
        raise ValueError(f"need one source row per copy and at least 2 pairs, got {len(rows)}")
    d = originals.shape[1]
    dim = min(dim, d)
    mean = originals.mean(axis=0)
    diff = originals[rows] - copies
    c_s = diff.T @ diff / len(diff)
    c_s = (1 - shrinkage) * c_s + shrinkage * np.trace(c_s) / d * np.eye(d)
    values, vectors = np.linalg.eigh(c_s)
    whiten = vectors @ np.diag(1.0 / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
    centred = (originals - mean) @ whiten
    c_d = centred.T @ centred / len(centred)
    values_d, vectors_d = np.linalg.eigh(c_d)
    top = vectors_d[:, np.argsort(values_d)[::-1][:dim]]
    projection = whiten @ top
    return Whitening(
        mean=mean.astype(np.float32), projection=projection.astype(np.float32), pairs=len(rows)
    )
