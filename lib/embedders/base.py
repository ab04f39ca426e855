"""The embedder interface and the preprocessing configs every embedder carries.

An embedder turns RGB images into float32 vectors of shape (n, dim), L2-normalised,
so that inner product equals cosine similarity. Preprocessing is described by a
frozen :class:`Preprocessing` stored in each index manifest, so queries are always
prepared exactly like the images they are compared with.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


class EmbedderUnavailable(RuntimeError):
    """The embedder cannot be created here (missing package or weights); says what to do."""


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes model input.

    ``mode="short_side"``: resize so the short side is ``size`` pixels, keep the
    aspect ratio, round the long side to a multiple of ``multiple`` (so images of
    similar shape share a batch) and centre-crop it to at most ``max_aspect`` times
    the short side. ``mode="square"``: resize to ``size`` x ``size`` ignoring aspect.
    """

    size: int
    mode: str = "short_side"
    multiple: int = 32
    max_aspect: float = 2.0
    interpolation: str = "bilinear"

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) in pixels the model sees for an image of this size."""
        if self.mode == "square":
            return self.size, self.size
        short, long_ = min(width, height), max(width, height)
        aspect = min(long_ / max(short, 1), self.max_aspect)
        long_px = max(
            self.size, math.floor(self.size * aspect / self.multiple + 0.5) * self.multiple
        )
        return (long_px, self.size) if width >= height else (self.size, long_px)

    def resize(self, image: Image.Image) -> Image.Image:
        """Resize (and, past ``max_aspect``, centre-crop) an RGB image to :meth:`target_size`."""
        tw, th = self.target_size(*image.size)
        w, h = image.size
        if self.mode != "square":
            # crop the long side so that the scaled image has exactly the target aspect
            scale = max(tw / w, th / h)
            cw, ch = min(w, round(tw / scale)), min(h, round(th / scale))
            left, top = (w - cw) // 2, (h - ch) // 2
            box = (left, top, left + cw, top + ch)
        else:
            box = (0, 0, w, h)
        if image.size == (tw, th) and box == (0, 0, w, h):
            return image
        return image.resize((tw, th), _RESAMPLE[self.interpolation], box=box, reducing_gap=3.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EmbedderConfig:
    """What identifies an embedder: vectors from two embedders with different configs
    must never be compared."""

    name: str
    dim: int
    preprocessing: Preprocessing
    description: str = ""
    weights: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The fields that must match between an index and the embedder searching it."""
        return {
            "name": self.name,
            "dim": self.dim,
            "preprocessing": self.preprocessing.to_dict(),
            "weights": self.weights,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity(), "description": self.description, "extra": dict(self.extra)}


class Embedder(ABC):
    """Turns images into L2-normalised float32 vectors of shape (n, ``config.dim``)."""

    config: EmbedderConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def draft_short_side(self) -> int:
        """Short side (pixels) a JPEG decoder may reduce to before resizing."""
        return self.config.preprocessing.size

    @abstractmethod
    def prepare(self, image: Image.Image) -> np.ndarray:
        """Model input for one RGB image; arrays of equal shape can share a batch."""

    @abstractmethod
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Embed a stacked batch of prepared inputs: returns (n, dim) float32, L2-normalised."""

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed RGB images of any sizes: (n, dim) float32, L2-normalised, input order."""
        prepared = [self.prepare(im) for im in images]
        return self.embed_arrays(prepared, batch_size)

    def embed_arrays(self, prepared: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Embed prepared inputs of possibly different shapes, batching equal shapes together."""
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, arr in enumerate(prepared):
            by_shape.setdefault(arr.shape, []).append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                out[chunk] = self.embed_prepared(np.stack([prepared[i] for i in chunk]))
        return out


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32; zero rows stay zero. Shape (n, d) -> (n, d)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
