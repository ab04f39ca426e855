"""Embedders behind one registry: see :func:`create_embedder`."""

from lib.embedders.base import Embedder, EmbedderConfig, EmbedderUnavailable, Preprocessing
from lib.embedders.registry import (
    DEFAULT_EMBEDDER,
    EMBEDDERS,
    available_embedders,
    create_embedder,
)

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "Embedder",
    "EmbedderConfig",
    "EmbedderUnavailable",
    "Preprocessing",
    "available_embedders",
    "create_embedder",
]
