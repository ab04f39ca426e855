"""Cached loaders for the Streamlit app: the only module in lib/ that imports streamlit.

Models and indexes are loaded once per process and shared read-only between sessions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image

from lib.allowed_paths import app_roots, resolve_inside, restrict
from lib.compare import fit_height
from lib.duplicates import (
    DEFAULT_KEEP_RULE,
    DEFAULT_NEIGHBOURS,
    ContaminationReport,
    DuplicateReport,
    PixelCheck,
    find_contamination,
    find_duplicates,
)
from lib.embedders import Embedder
from lib.images import ImageLoadError, load_image
from lib.index import ReplicaIndex, open_index
from lib.progress import ProgressCallback
from lib.projection import (
    INFO_FILE,
    MAX_DRAWN,
    Projection,
    drawn_positions,
    load_projection,
    map_table,
    projection_dir,
)


@st.cache_resource(show_spinner="Opening index…")
def cached_index(path: str, mtime: float) -> ReplicaIndex:
    """The index at ``path``; ``mtime`` (of its manifest) makes a rebuilt index reload.
    Its training files are read only inside the app's folders
    (:func:`lib.allowed_paths.app_roots`, whatever its manifest records)."""
    index = open_index(path)
    restrict(index, app_roots)
    return index


@st.cache_data(show_spinner=False, max_entries=32)
def cached_missing_files(path: str, mtime: float) -> str:
    """One line saying how many of the index's files are not on this server ("" when all
    are found), counted once per index version (:func:`lib.index.health.missing_files`)."""
    from lib.index.health import missing_files

    return missing_files(cached_index(path, mtime)).words()


@st.cache_resource(show_spinner="Loading the embedding model…")
def cached_embedder(index_path: str, mtime: float) -> Embedder:
    """The embedder an index was built with, created once."""
    return cached_index(index_path, mtime).create_embedder()


def manifest_mtime(path: str | Path) -> float:
    """Modification time of an index's manifest (0 when missing)."""
    manifest = Path(path) / "manifest.json"
    return manifest.stat().st_mtime if manifest.exists() else 0.0


def cached_thumbnail(path: str, height: int) -> Image.Image | None:
    """An image scaled to ``height`` pixels; None when it cannot be read or lies outside
    the app's folders (:func:`lib.allowed_paths.app_roots`, symlinks resolved: then it is
    not opened; :func:`lib.allowed_paths.resolve_inside` tells the two apart)."""
    inside = resolve_inside(path, app_roots())
    return None if inside is None else _thumbnail(str(inside), height)


def cached_query_thumbnail(path: str, height: int) -> Image.Image | None:
    """A query file the app itself holds (an upload it wrote, a generation) scaled to
    ``height`` pixels, or None when it cannot be read. No folder check: never pass a path
    read from an index or a report here (use :func:`cached_thumbnail`)."""
    return _thumbnail(path, height)


@st.cache_data(show_spinner=False, max_entries=2000)
def _thumbnail(path: str, height: int) -> Image.Image | None:
    """The picture at ``path`` scaled to ``height`` pixels, or None when unreadable."""
    try:
        return fit_height(load_image(path).image, height)
    except ImageLoadError:
        return None


def projection_mtime(path: str | Path) -> float:
    """Modification time of an index's stored projection (0 when there is none)."""
    info = projection_dir(path) / INFO_FILE
    return info.stat().st_mtime if info.exists() else 0.0


@st.cache_resource(show_spinner="Loading the map…", max_entries=8)
def cached_projection(path: str, mtime: float, projection_stamp: float) -> Projection | None:
    """The stored, current projection of an index (None when there is none yet).

    Keyed by both mtimes, so computing or replacing the projection loads the new one.
    Shared read-only between sessions; its reducer loads on the first ``transform``.
    """
    return load_projection(cached_index(path, mtime))


@st.cache_data(show_spinner=False, max_entries=8)
def cached_map_points(
    path: str, mtime: float, projection_stamp: float, groups: int, max_drawn: int = MAX_DRAWN
) -> pd.DataFrame | None:
    """The points of the stored projection to draw, at most ``max_drawn`` (a seeded sample,
    :func:`lib.projection.drawn_positions`), as a table (:func:`lib.projection.map_table`);
    None if there is no stored projection."""
    projection = cached_projection(path, mtime, projection_stamp)
    if projection is None:
        return None
    positions = drawn_positions(projection, max_drawn)
    index = cached_index(path, mtime)
    return map_table(projection, index.metadata, groups, positions, index.manifest.sources)


def cached_duplicates(
    path: str,
    mtime: float,
    threshold: float,
    keep: str = DEFAULT_KEEP_RULE,
    k: int = DEFAULT_NEIGHBOURS,
    pixels: PixelCheck | None = None,
    progress: ProgressCallback | None = None,
) -> DuplicateReport:
    """Near-duplicate clusters of an index at a cosine threshold, keep rule, neighbours
    per image and pixel check, computed once per combination in this session (the last
    :data:`DUPLICATE_REPORTS` kept). Not a ``st.cache_data`` function: ``progress`` draws
    on the page while the work runs, which a cached function may not do."""
    key = (path, mtime, threshold, keep, k, pixels)
    memo: dict[Any, DuplicateReport] = st.session_state.setdefault("_duplicate_reports", {})
    if key not in memo:
        index = cached_index(path, mtime)
        memo[key] = find_duplicates(index, threshold, keep=keep, k=k, pixels=pixels,
                                    progress=progress)  # fmt: skip
        while len(memo) > DUPLICATE_REPORTS:
            memo.pop(next(iter(memo)))
    return memo[key]


DUPLICATE_REPORTS = 8
"""Duplicate reports kept per session by :func:`cached_duplicates`."""


def cached_contamination(
    path: str,
    mtime: float,
    other: str,
    other_mtime: float,
    threshold: float,
    k: int = DEFAULT_NEIGHBOURS,
    pixels: PixelCheck | None = None,
    progress: ProgressCallback | None = None,
) -> ContaminationReport:
    """The images of the index at ``path`` found in the index at ``other``
    (:func:`lib.duplicates.find_contamination`), computed once per combination in this
    session (as :func:`cached_duplicates`, so that ``progress`` may draw)."""
    key = (path, mtime, other, other_mtime, threshold, k, pixels)
    memo: dict[Any, ContaminationReport] = st.session_state.setdefault("_contamination_reports", {})
    if key not in memo:
        memo[key] = find_contamination(
            cached_index(path, mtime),
            cached_index(other, other_mtime),
            threshold,
            k=k,
            pixels=pixels,
            progress=progress,
        )
        while len(memo) > DUPLICATE_REPORTS:
            memo.pop(next(iter(memo)))
    return memo[key]
