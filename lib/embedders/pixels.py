"""Raw-pixel baseline in the spirit of Carlini et al.: small image, zero-mean, unit norm.

Cosine similarity between these vectors is the Pearson correlation of the pixels,
a monotone function of the L2 distance between standardised thumbnails.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lib.embedders.base import Embedder, EmbedderConfig, l2_normalise


class PixelEmbedder(Embedder):
    """(size * size * 3)-d vectors of a squashed RGB thumbnail."""

    def __init__(self, config: EmbedderConfig):
        self.config = config

    def prepare(self, image: Image.Image) -> np.ndarray:
        """(size * size * 3,) float32 pixel values in 0..1."""
        small = self.config.preprocessing.resize(image.convert("RGB"))
        return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        centred = batch - batch.mean(axis=1, keepdims=True)
        return l2_normalise(centred)
