"""Cached loaders for the Streamlit app: the only module in lib/ that imports streamlit.

Models and indexes are loaded once per process and shared read-only between sessions.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image

from lib.compare import fit_height
from lib.embedders import Embedder
from lib.images import ImageLoadError, load_image
from lib.index import ReplicaIndex, open_index


@st.cache_resource(show_spinner="Opening index…")
def cached_index(path: str, mtime: float) -> ReplicaIndex:
    """The index at ``path``; ``mtime`` (of its manifest) makes a rebuilt index reload."""
    return open_index(path)


@st.cache_resource(show_spinner="Loading the embedding model…")
def cached_embedder(index_path: str, mtime: float) -> Embedder:
    """The embedder an index was built with, created once."""
    return cached_index(index_path, mtime).create_embedder()


def manifest_mtime(path: str | Path) -> float:
    """Modification time of an index's manifest (0 when missing)."""
    manifest = Path(path) / "manifest.json"
    return manifest.stat().st_mtime if manifest.exists() else 0.0


@st.cache_data(show_spinner=False, max_entries=2000)
def cached_thumbnail(path: str, height: int) -> Image.Image | None:
    """A training image scaled to ``height`` pixels (None when it cannot be read)."""
    try:
        return fit_height(load_image(path).image, height)
    except ImageLoadError:
        return None
