"""A 2-D map of an index: UMAP fitted once, stored beside the index as plain arrays, reused.

    INDEX_DIR/projection/
      coords.npy         (n, 2) float32 map coordinates
      ids.npy            (n,) int64 index row ids of the projected points (every row)
      fit_ids.npy        (m,) int64 the rows UMAP was fitted on (m <= fit_points)
      nn_similarity.npy  (n,) float32 cosine of each point to its nearest other image
      projection.json    n_points, n_total, n_fit, seed, UMAP parameters and the
                         content stamp of the index it was computed from

Nothing in that folder is ever unpickled: an index folder may come from someone else. The
arrays are read with ``allow_pickle=False`` and checked (shape, dtype, range) against the
index, projection.json is checked field by field, and any failure is a
:class:`ProjectionError` ("compute the map again"). Maps written by earlier versions also
hold ``reducer.joblib`` (a pickled UMAP); it is ignored, and goes when the map is rewritten.

UMAP is fitted on a seeded random sample of at most ``fit_points`` images (50,000 by
default; all of them in a smaller index). Every other image, and every image placed later
(:func:`place_vectors`, :func:`place_images`), is placed from the map positions of its
nearest mapped images, weighted by UMAP's fuzzy membership strengths as ``transform``
weighs them, within the clump that holds most of that weight (:func:`place_from_neighbours`);
an image that equals an indexed one lands on it. No fitted model is needed after the fit,
so none is kept. ``benchmarks/map_placement.py`` measures how close this comes to
``UMAP.transform``.

Neighbours among the fitted points come from :meth:`ReplicaIndex.search_vectors` when the
sample is the whole index, else from an exact inner-product search over the sample's
vectors; UMAP runs on that precomputed sparse neighbour graph (``metric="precomputed"``): no
pairwise distances in Python and no NN-descent compilation. Euclidean distance on
L2-normalised vectors, ``sqrt(2 - 2 cos)``, is what UMAP sees. Layouts start from the first
two principal components and are seeded. A page draws at most :data:`MAX_DRAWN` points
(:func:`drawn_positions`) over a density image of all of them (:func:`density_grid`).

The folder is written beside itself under a temporary name and renamed into place.
Index files are never touched. A projection whose stamp differs from its index (an add
or a rebuild since) is ignored, whether or not the write left it in the folder. Maps stored
by earlier versions projected only a random subset (``Projection.subsampled``); they still
load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lib.folders import swap_into_place
from lib.images import ImageLoadError, load_image
from lib.index import ReplicaIndex, open_index
from lib.progress import ProgressCallback, report

if TYPE_CHECKING:
    from lib.embedders import Embedder

log = logging.getLogger(__name__)

PROJECTION_DIR = "projection"
COORDS_FILE = "coords.npy"
IDS_FILE = "ids.npy"
FIT_IDS_FILE = "fit_ids.npy"
NN_FILE = "nn_similarity.npy"
INFO_FILE = "projection.json"
OLD_REDUCER_FILE = "reducer.joblib"
"""The pickled UMAP that earlier versions stored: never read, dropped when the map is rewritten."""
MAX_INFO_BYTES = 1 << 20
"""A projection.json larger than this (bytes) is refused unread."""
MAX_POINTS = 50_000
"""UMAP is fitted on at most this many images (a seeded random sample); the rest are placed
on the fitted map."""
MAX_DRAWN = 20_000
"""A page draws at most this many points; a density image shows all of them."""
TRANSFORM_CHUNK = 10_000
"""Images placed on the fitted map per step."""
MIN_POINTS = 5
"""UMAP needs a few points to build a neighbour graph."""
MAX_N_NEIGHBORS = 1000
"""The largest ``umap.n_neighbors`` a stored projection.json may give."""
SAME_IMAGE_COSINE = 0.99999
"""An image at least this similar (cosine) to a mapped one is the same picture, up to float
rounding in the embedder (about 1e-7): it lands exactly on it. A brightness step of 2% is
already below it (about 0.99994 with SSCD)."""
MIN_K_DIST_SCALE = 1e-3
"""UMAP's floor for a membership bandwidth, as a share of the mean neighbour distance."""
CLUSTER_RADIUS = 0.5
"""Map units: a new image lands at the weighted mean of its neighbours within this distance
of their weighted medoid. UMAP lays a map out with spread 1 and min_dist 0.1, so half a unit
keeps to one clump of near-duplicates."""
UMAP_PARAMS: dict[str, Any] = {
    "n_neighbors": 15,
    "min_dist": 0.1,
    "metric": "euclidean on L2-normalised vectors (precomputed FAISS neighbours)",
    "init": "pca",
    "n_components": 2,
}
NO_GROUP = "(no caption)"
OTHER_GROUP = "other"


class ProjectionError(ValueError):
    """The index cannot be projected (too few images) or a stored projection is unusable
    (then the message ends with what to do: compute the map again)."""


_INFO_TYPES: dict[str, type] = {
    "n_points": int, "n_total": int, "subsampled": bool, "seed": int, "max_points": int,
    "umap": dict, "index_updated": str, "index_count": int, "embedder": str, "created": str,
    "umap_version": str, "n_fit": int,
}  # fmt: skip
_TYPE_NAMES = {int: "an integer", bool: "true or false", str: "a string", dict: "an object"}


@dataclass(frozen=True)
class ProjectionInfo:
    """What a stored projection is: serialised as projection.json."""

    n_points: int
    n_total: int
    subsampled: bool
    seed: int
    max_points: int
    umap: dict[str, Any]
    index_updated: str
    index_count: int
    embedder: str
    created: str = ""
    umap_version: str = ""
    n_fit: int = 0
    """Images UMAP was fitted on (0 in maps stored before fitting on a sample)."""

    @property
    def n_neighbors(self) -> int:
        """UMAP's neighbours per point (checked by :meth:`from_json`)."""
        return int(self.umap["n_neighbors"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ProjectionInfo:
        """Parse a projection.json, checking every field: keys it does not know are
        ignored, optional ones (``created``, ``umap_version``, ``n_fit``) may be missing.

        Raises:
            ProjectionError: not UTF-8 JSON, not an object, a required field missing, a
                field of the wrong type, a negative count, or ``umap.n_neighbors`` missing
                or not an integer in 1..:data:`MAX_N_NEIGHBORS`.

        Example:
            >>> info = ProjectionInfo.from_json(Path("IDX/projection/projection.json").read_text())
            >>> info.n_neighbors
            15
        """
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise ProjectionError(f"{INFO_FILE} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ProjectionError(f"{INFO_FILE} must hold an object, not {type(data).__name__}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is MISSING:
                    raise ProjectionError(f"{INFO_FILE} lacks the field {f.name!r}")
                continue
            value, kind = data[f.name], _INFO_TYPES[f.name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ProjectionError(
                    f"{INFO_FILE}: {f.name!r} must be {_TYPE_NAMES[kind]}, not {value!r:.60}"
                )
            if isinstance(value, int) and f.name != "seed" and value < 0:
                raise ProjectionError(f"{INFO_FILE}: {f.name!r} must be >= 0, not {value}")
            values[f.name] = value
        k = values["umap"].get("n_neighbors")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_N_NEIGHBORS:
            raise ProjectionError(
                f"{INFO_FILE}: 'umap.n_neighbors' must be an integer in 1..{MAX_N_NEIGHBORS}, "
                f"not {k!r:.60}"
            )
        return cls(**values)

    def matches(self, index: ReplicaIndex) -> bool:
        """True when this projection was computed from the current state of ``index``."""
        return (
            self.index_updated in (index.content_version, index.manifest.updated)
            and self.index_count == index.count
            and self.embedder == index.embedder_name
        )


@dataclass
class Projection:
    """Projected points of one index.

    ``ids``: (n,) int64 index row ids. ``coords``: (n, 2) float32. ``nn_similarity``:
    (n,) float32 cosine (-1..1) of each point to its nearest other indexed image.
    ``path``: the stored folder, or None when it could not be written.
    """

    ids: np.ndarray
    coords: np.ndarray
    nn_similarity: np.ndarray
    info: ProjectionInfo
    path: Path | None = None
    fit_ids: np.ndarray | None = None
    """(m,) int64 the rows UMAP was fitted on (None: ``ids``, as in older maps)."""

    @property
    def subsampled(self) -> bool:
        return self.info.subsampled

    @property
    def n_total(self) -> int:
        """Images in the index (the map may show fewer)."""
        return self.info.n_total

    @property
    def n_points(self) -> int:
        return len(self.ids)

    def position(self, row: int) -> int | None:
        """Where index row ``row`` is among the projected points (None when not projected)."""
        found = np.flatnonzero(self.ids == int(row))
        return int(found[0]) if found.size else None

    def row_positions(self, count: int) -> np.ndarray:
        """(count,) int64: for each index row, its position among the projected points
        (-1 where it is not projected)."""
        where = np.full(count, -1, np.int64)
        where[self.ids] = np.arange(len(self.ids), dtype=np.int64)
        return where


@dataclass(frozen=True)
class PlacedImages:
    """Images placed on a map by :func:`place_images`.

    ``names``: the readable images, in input order. ``vectors``: (m, dim) float32,
    L2-normalised, their embeddings. ``coords``: (m, 2) float32 map positions.
    ``errors``: ``"name: reason"`` for each file that could not be read (skipped).
    """

    names: list[str]
    vectors: np.ndarray
    coords: np.ndarray
    errors: list[str]


def projection_dir(index: ReplicaIndex | str | os.PathLike[str]) -> Path:
    """The folder where the projection of ``index`` (an index or its folder) is stored."""
    root = index.path if isinstance(index, ReplicaIndex) else Path(index)
    return Path(root) / PROJECTION_DIR


def load_projection(index: ReplicaIndex) -> Projection | None:
    """The stored projection of ``index``, or None when there is none or it is out of date
    (the index changed since it was computed).

    Only plain arrays are read (``allow_pickle=False``), each checked against the index;
    a ``reducer.joblib`` left by an earlier version is never opened.

    Raises:
        ProjectionError: a stored map that cannot be used: projection.json malformed
            (:meth:`ProjectionInfo.from_json`), an array missing, unreadable or of the wrong
            shape, type or range, or a file that resolves outside the index folder. The
            message ends with "compute it again"; :func:`project` does so.

    Example:
        >>> projection = load_projection(open_index("data/indexes/openmoji-sscd"))
        >>> projection.coords.shape if projection else "no map yet"
    """
    folder = projection_dir(index)
    if not (folder / INFO_FILE).is_file():
        return None
    try:
        text = _read_file(index.path, folder / INFO_FILE, MAX_INFO_BYTES)
        info = ProjectionInfo.from_json(text)
        if not info.matches(index):
            log.info("projection in %s is out of date for its index", folder)
            return None
        projection = _read_arrays(index, folder, info)
    except ProjectionError as exc:
        raise ProjectionError(
            f"the stored map in {folder} cannot be used ({exc}); compute it again"
        ) from None
    return projection


def _read_arrays(index: ReplicaIndex, folder: Path, info: ProjectionInfo) -> Projection:
    """The arrays of a stored map, each checked for shape, dtype and range."""
    n = info.n_points
    if n < MIN_POINTS:
        raise ProjectionError(f"{INFO_FILE} says the map has {n} points, fewer than {MIN_POINTS}")
    ids = _rows(_read_array(index.path, folder / IDS_FILE, n), IDS_FILE, index.count)
    coords = _read_array(index.path, folder / COORDS_FILE, n)
    nn = _read_array(index.path, folder / NN_FILE, n)
    if len(ids) != n:
        raise ProjectionError(f"{IDS_FILE} holds {len(ids)} rows, {INFO_FILE} says {n}")
    if np.unique(ids).size != n:
        raise ProjectionError(f"{IDS_FILE} names a row twice")
    for name, array, shape in ((COORDS_FILE, coords, (n, 2)), (NN_FILE, nn, (n,))):
        if array.shape != shape or array.dtype.kind != "f" or not np.isfinite(array).all():
            raise ProjectionError(
                f"{name} must be finite floats of shape {shape}, not {array.dtype} {array.shape}"
            )
    fit_ids = None
    if (folder / FIT_IDS_FILE).exists() or (folder / FIT_IDS_FILE).is_symlink():
        fit_ids = _rows(
            _read_array(index.path, folder / FIT_IDS_FILE, n), FIT_IDS_FILE, index.count
        )
    return Projection(
        ids, coords.astype(np.float32), nn.astype(np.float32), info, folder, fit_ids=fit_ids
    )


def _rows(array: np.ndarray, name: str, count: int) -> np.ndarray:
    """``array`` as (n,) int64 index rows, refused unless every one is in 0..count-1."""
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ProjectionError(
            f"{name} must be integers of shape (n,), not {array.dtype} {array.shape}"
        )
    if array.size and (array.min() < 0 or array.max() >= count):
        raise ProjectionError(f"{name} names rows outside 0..{count - 1}")
    return array.astype(np.int64)


def _inside(root: Path, path: Path) -> Path:
    """``path`` resolved, refused unless it is a regular file inside ``root`` (resolved)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ProjectionError(f"{path.name} points outside the index folder")
    if not resolved.is_file():
        raise ProjectionError(f"{path.name} is missing or not a regular file")
    return resolved


def _read_file(root: Path, path: Path, limit: int) -> bytes:
    """The bytes of a small file of the map (at most ``limit``)."""
    resolved = _inside(root, path)
    try:
        with resolved.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ProjectionError(f"{path.name} cannot be read: {exc}") from None
    if len(data) > limit:
        raise ProjectionError(f"{path.name} is larger than {limit:,} bytes")
    return data


def _read_array(root: Path, path: Path, n: int) -> np.ndarray:
    """A ``.npy`` array of the map, read without unpickling anything, and only if its file
    is no larger than ``n`` rows of two float64 need (plus a header)."""
    resolved = _inside(root, path)
    try:
        if resolved.stat().st_size > 16 * n + 65_536:
            raise ProjectionError(f"{path.name} is too large for {n:,} points")
        with resolved.open("rb") as f:
            array = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # pickled or damaged data: ValueError
        raise ProjectionError(f"{path.name} cannot be read: {exc}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
        raise ProjectionError(f"{path.name} is not a single array")
    return array


def project(
    index: ReplicaIndex,
    progress: ProgressCallback | None = None,
    max_points: int = MAX_POINTS,
    seed: int = 0,
    *,
    force: bool = False,
) -> Projection:
    """The 2-D UMAP map of every image of ``index``: the stored one when it is current,
    else fitted and stored.

    Args:
        max_points: UMAP is fitted on a seeded random sample of at most this many images;
            the others are then placed on the fitted map, :data:`TRANSFORM_CHUNK` at a time.
        seed: seeds the sample and UMAP (which then runs single-threaded).
        force: refit even when a current projection is stored.
        progress: called as (images placed, total) through the stages; when the sample is
            not the whole index the total also counts the nearest-neighbour search of
            every image (2 n), else it is n.

    Raises:
        ProjectionError: the index holds fewer than ``MIN_POINTS`` images.
        ValueError: ``max_points`` below ``MIN_POINTS``.
    """
    if max_points < MIN_POINTS:
        raise ValueError(f"max_points must be at least {MIN_POINTS}, got {max_points}")
    if index.count < MIN_POINTS:
        raise ProjectionError(
            f"a map needs at least {MIN_POINTS} images; this index has {index.count}"
        )
    if not force:
        try:
            stored = load_projection(index)
        except ProjectionError as exc:
            log.warning("%s", exc)
            stored = None
        if stored and _same_request(stored.info, max_points, seed):
            report(progress, 1, 1, "loaded the stored map")
            return stored
    n = index.count
    fit_rows = _sample_rows(n, max_points, seed)
    whole = len(fit_rows) == n
    total = n if whole else 2 * n
    report(progress, 0, total, f"finding neighbours of {len(fit_rows):,} images to fit on")
    fit_vectors = index.get_vectors(fit_rows)
    search = _PointSearch.over(index, fit_rows, fit_vectors)
    k = _n_neighbors(len(fit_rows))
    sims, positions = search.search(fit_vectors, k + 1)
    report(progress, 0, total, f"fitting UMAP on {len(fit_rows):,} points (no per-step progress)")
    _, fit_coords = _fit_umap(fit_vectors, _neighbour_graph(sims, positions, k), k, seed)
    coords = np.empty((n, 2), np.float32)
    coords[fit_rows] = fit_coords
    report(progress, len(fit_rows), total, f"fitted on {len(fit_rows):,}")
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), fit_rows)
    for start in range(0, len(rest), TRANSFORM_CHUNK):
        part = rest[start : start + TRANSFORM_CHUNK]
        part_sims, found = search.search(index.get_vectors(part), k)
        coords[part] = place_from_neighbours(part_sims, _coords_at(fit_coords, found))
        done = len(fit_rows) + start + len(part)
        report(progress, done, total, f"placed {done:,} of {n:,} on the map")
    if whole:
        nn = _nearest_other(sims, positions, np.arange(n))
    else:
        nn = nearest_neighbour_similarity(
            index,
            np.arange(n, dtype=np.int64),
            progress=lambda d, t, m="": report(progress, n + d, total, m),
        )
    info = ProjectionInfo(
        n_points=n,
        n_total=n,
        subsampled=False,
        seed=seed,
        max_points=max_points,
        umap={**UMAP_PARAMS, "n_neighbors": k},
        index_updated=index.content_version,
        index_count=n,
        embedder=index.embedder_name,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        umap_version=_umap_version(),
        n_fit=len(fit_rows),
    )
    projection = Projection(np.arange(n, dtype=np.int64), coords, nn, info, None, fit_ids=fit_rows)
    report(progress, total, total, "saving")
    projection.path = _store(projection, projection_dir(index))
    report(progress, total, total, "done")
    return projection


def place_vectors(
    projection: Projection | str | os.PathLike[str],
    vectors: np.ndarray,
    index: ReplicaIndex | None = None,
) -> np.ndarray:
    """Place new images on an existing map from their nearest mapped images
    (:func:`place_from_neighbours`), found through the index's own search.

    Args:
        projection: a :class:`Projection`, its stored folder, or the index folder.
        vectors: (m, dim) float32, L2-normalised, from the index's embedder.
        index: the projected index, when already open (else opened from the folder).

    Returns:
        (m, 2) float32 map coordinates; an image equal to a mapped one lands on it. An
        image for which the search finds no mapped image lands at the map's median.

    Raises:
        ProjectionError: no current, usable projection is stored for that index.
        ValueError: ``vectors`` has the wrong shape.

    Example:
        >>> index = open_index("data/indexes/openmoji-sscd")
        >>> vectors = index.create_embedder().embed_images([image])
        >>> xy = place_vectors(index.path, vectors, index)  # (1, 2)
    """
    if not isinstance(projection, Projection):
        projection = _load_for(Path(projection), index)
    if index is None:
        if projection.path is None:
            raise ProjectionError("pass the index: this projection is not stored")
        index = open_index(projection.path.parent)
    dim = int(index.manifest.dim)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must have shape (m, {dim}), got {vectors.shape}")
    if len(vectors) == 0:
        return np.zeros((0, 2), np.float32)
    k = min(projection.info.n_neighbors, projection.n_points)
    where = projection.row_positions(index.count)
    # a map of a subset (stored by earlier versions): fetch more, keep the k mapped ones
    spare = math.ceil(index.count / projection.n_points)
    fetch = min(index.count, k * spare if spare == 1 else min(4 * k * spare, 2048))
    sims, rows = index.search_vectors(vectors, fetch)
    positions = np.where(rows >= 0, where[np.clip(rows, 0, None)], -1)
    keep = np.argsort(positions < 0, axis=1, kind="stable")[:, :k]
    sims = np.take_along_axis(sims, keep, axis=1)
    positions = np.take_along_axis(positions, keep, axis=1)
    coords = place_from_neighbours(sims, _coords_at(projection.coords, positions))
    lost = ~np.isfinite(coords).all(axis=1)
    if lost.any():
        log.warning("%d image(s) found no mapped neighbour: placed at the centre", lost.sum())
        coords[lost] = np.median(projection.coords, axis=0)
    return coords


def place_images(
    projection: Projection | str | os.PathLike[str],
    images: Sequence[tuple[str, bytes | str | os.PathLike[str]]],
    index: ReplicaIndex,
    embedder: Embedder | None = None,
) -> PlacedImages:
    """Decode, embed and place images (uploads, generations) on the map of ``index``.

    Args:
        projection: as for :func:`place_vectors`.
        images: (name, raw bytes or a path) pairs; unreadable ones are skipped and named in
            :attr:`PlacedImages.errors` with the reason.
        embedder: the index's embedder, when already loaded (else created).

    Raises:
        ProjectionError: no current, usable projection is stored for that index.
        EmbedderMismatch: ``embedder`` is not the one the index was built with.

    Example:
        >>> index = open_index("data/indexes/openmoji-sscd")
        >>> placed = place_images(index.path, [("mine.png", Path("mine.png").read_bytes())], index)
        >>> placed.coords  # (1, 2) float32
    """
    model = embedder or index.create_embedder()
    index.check_embedder(model)
    names, decoded, errors = [], [], []
    for name, data in images:
        try:
            loaded = load_image(data, name=name, draft_short_side=model.draft_short_side)
        except ImageLoadError as exc:
            errors.append(f"{name}: {exc.reason}")
            continue
        names.append(name)
        decoded.append(loaded.image)
    vectors = model.embed_images(decoded) if decoded else np.zeros((0, model.dim), np.float32)
    return PlacedImages(names, vectors, place_vectors(projection, vectors, index), errors)


def place_from_neighbours(
    similarities: np.ndarray, neighbour_coords: np.ndarray, radius: float | None = None
) -> np.ndarray:
    """Map positions of new images from the positions of their nearest mapped images.

    Each neighbour weighs UMAP's fuzzy membership strength, as ``UMAP.transform`` weighs it
    (:func:`_membership_weights`). An image whose cosine to its most similar neighbour is at
    least :data:`SAME_IMAGE_COSINE` lands on that one. Any other lands in the clump of the
    map that holds most of its neighbours' weight: at the weighted mean of the neighbours
    within ``radius`` map units of the weighted medoid (the neighbour whose summed weighted
    map distance to the others is least). UMAP's own starting point, the weighted mean of
    all of them, falls between clumps when the neighbours are split; this stays closer to
    where ``transform`` ends (``benchmarks/map_placement.py``).

    Args:
        similarities: (m, k) cosine to each image's k nearest mapped images; -inf (or NaN
            coordinates) where a neighbour is missing.
        neighbour_coords: (m, k, 2) their map positions.
        radius: in map units (default :data:`CLUSTER_RADIUS`).

    Returns:
        (m, 2) float32; NaN for an image without any neighbour.

    Raises:
        ValueError: the shapes do not fit together.

    Example:
        >>> sims = np.array([[0.9, 0.8, 0.7]], np.float32)
        >>> coords = np.array([[[0.0, 0.0], [0.2, 0.0], [9.0, 9.0]]])
        >>> place_from_neighbours(sims, coords)  # between the first two; UMAP's start: (2.9, 2.8)
        array([[0.09693526, 0.        ]], dtype=float32)
    """
    sims, coords, valid = _neighbour_arrays(similarities, neighbour_coords)
    weights = _membership_weights(sims, valid)
    rows = np.arange(len(sims))
    spread = np.linalg.norm(coords[:, :, None, :] - coords[:, None, :, :], axis=3)
    cost = np.where(valid, (spread * weights[:, None, :]).sum(axis=2), np.inf)
    centre = coords[rows, cost.argmin(axis=1)]
    near = valid & (np.linalg.norm(coords - centre[:, None, :], axis=2) <= _radius(radius))
    local = weights * near
    total = local.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.einsum("mk,mkc->mc", local, coords) / total[:, None]
    out = np.where((total > 0)[:, None], out, centre)
    best = np.where(valid, sims, -np.inf).argmax(axis=1)
    same = valid[rows, best] & (sims[rows, best] >= SAME_IMAGE_COSINE)
    out[same] = coords[rows, best][same]
    out[~valid.any(axis=1)] = np.nan
    return out.astype(np.float32)


def _radius(radius: float | None) -> float:
    return CLUSTER_RADIUS if radius is None else float(radius)


def _umap_start(similarities: np.ndarray, neighbour_coords: np.ndarray) -> np.ndarray:
    """(m, 2) float32: where ``UMAP.transform`` starts new points before optimising
    (``umap.umap_.init_graph_transform``): the membership-weighted mean of the neighbours'
    positions, or the position of a neighbour at distance 0. NaN without neighbours."""
    sims, coords, valid = _neighbour_arrays(similarities, neighbour_coords)
    weights = _membership_weights(sims, valid)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.einsum("mk,mkc->mc", weights, coords) / total[:, None]
    rows = np.arange(len(sims))
    best = np.where(valid, sims, -np.inf).argmax(axis=1)
    same = valid[rows, best] & (sims[rows, best] >= 1.0)
    out[same] = coords[rows, best][same]
    out[total <= 0] = np.nan
    return out.astype(np.float32)


def _neighbour_arrays(
    similarities: np.ndarray, neighbour_coords: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 similarities (m, k), coordinates (m, k, 2) with 0 where missing, and the
    (m, k) mask of the neighbours that are there."""
    sims = np.asarray(similarities, dtype=np.float64)
    coords = np.asarray(neighbour_coords, dtype=np.float64)
    if sims.ndim != 2 or coords.shape != (*sims.shape, 2):
        raise ValueError(
            f"similarities (m, k) and neighbour_coords (m, k, 2) must agree, got {sims.shape} "
            f"and {coords.shape}"
        )
    valid = np.isfinite(sims) & np.isfinite(coords).all(axis=2)
    return sims, np.where(valid[..., None], coords, 0.0), valid


def _membership_weights(sims: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(m, k) UMAP's fuzzy membership strength of each neighbour, as ``UMAP.transform``
    computes it (local connectivity 0): ``exp(-d / sigma)``, ``d = sqrt(2 - 2 cos)``; 0 for
    a missing neighbour."""
    dist = np.where(valid, np.sqrt(np.clip(2.0 - 2.0 * np.where(valid, sims, 0.0), 0, 4)), np.inf)
    return np.exp(-dist / _membership_sigma(dist)[:, None])


def _membership_sigma(dist: np.ndarray, n_iter: int = 64) -> np.ndarray:
    """(m,) UMAP's ``smooth_knn_dist`` bandwidth per row of ``dist`` ((m, k) distances,
    inf where missing) with local connectivity 0: the sigma at which the memberships
    ``exp(-d / sigma)`` of neighbours 2..k add up to log2(k), by bisection, floored at
    :data:`MIN_K_DIST_SCALE` times the mean distance."""
    m, k = dist.shape
    target = math.log2(k) if k else 0.0
    rest = dist[:, 1:]
    lo, hi, mid = np.zeros(m), np.full(m, np.inf), np.ones(m)
    for _ in range(n_iter):
        high = np.exp(-rest / mid[:, None]).sum(axis=1) > target
        hi = np.where(high, mid, hi)
        lo = np.where(high, lo, mid)
        mid = np.where(np.isinf(hi), mid * 2.0, (lo + hi) / 2.0)
    finite = dist[np.isfinite(dist)]
    return np.maximum(mid, MIN_K_DIST_SCALE * float(finite.mean()) if finite.size else 0.0)


def _coords_at(coords: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(m, k, 2) float32: ``coords[positions]``, NaN where a position is -1."""
    out = np.asarray(coords, dtype=np.float32)[np.clip(positions, 0, None)]
    out[positions < 0] = np.nan
    return out


def nearest_neighbour_similarity(
    index: ReplicaIndex,
    rows: np.ndarray,
    chunk: int = 4096,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """(n,) float32: cosine of each row's vector to its most similar *other* indexed image."""
    out = np.empty(len(rows), np.float32)
    for start in range(0, len(rows), chunk):
        part = np.asarray(rows[start : start + chunk], dtype=np.int64)
        sims, ids = index.search_vectors(index.get_vectors(part), 2)
        out[start : start + len(part)] = _nearest_other(sims, ids, part)
        report(progress, start + len(part), len(rows), "nearest other image of each")
    return out


CAPTION_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "and",
        "or",
        "with",
        "in",
        "on",
        "at",
        "for",
        "to",
        "by",
        "from",
        "my",
        "our",
        "your",
        "his",
        "her",
        "its",
        "their",
        "this",
        "that",
        "some",
        "two",
        "three",
    ]
)
"""Words that name no group of pictures ("a", "the": Tux Paint captions start with them)."""


def caption_groups(metadata: pd.DataFrame, sources: Sequence[str] = ()) -> list[str]:
    """One label per row: the collection's own category where it has one, the first
    folder under the source folder the image was indexed from (Tux Paint's ``animals``,
    ``vehicles``...); else the caption's first meaningful word (lower case, articles and
    prepositions skipped); else the image's folder name.

    ``sources``: the index's recorded source folders (``manifest.sources``); labels that
    are not folders are ignored.

    Example:
        >>> caption_groups(meta, ["/usr/share/tuxpaint/stamps"])  # doctest: +SKIP
        ['animals', 'animals', 'vehicles', ...]
    """
    roots = [PurePath(str(s)) for s in sources if str(s).startswith("/")]
    groups = []
    for caption, path in zip(metadata["caption"], metadata["path"], strict=True):
        folder = _category(PurePath(str(path)), roots)
        if folder:
            groups.append(folder)
            continue
        text = "" if caption is None or pd.isna(caption) else str(caption)
        words = [w for w in re.findall(r"[^\W_]+", text.lower()) if w not in CAPTION_STOPWORDS]
        groups.append(words[0] if words else Path(str(path)).parent.name or NO_GROUP)
    return groups


def _category(path: PurePath, roots: Sequence[PurePath]) -> str | None:
    """The first folder of ``path`` below the root it lies in, when it lies deeper."""
    for root in roots:
        if path.is_relative_to(root):
            parts = path.relative_to(root).parts
            return parts[0] if len(parts) >= 2 else None
    return None


def find_rows(metadata: pd.DataFrame, text: str, limit: int = 50) -> list[int]:
    """Index rows whose file name or caption contains ``text`` (case-insensitive): exact
    file names first, then file names, then captions; at most ``limit``.

    Example:
        >>> find_rows(index.metadata, "car")  # doctest: +SKIP
        [812, 97, ...]
    """
    needle = text.strip().lower()
    if not needle:
        return []
    names = pd.Series([PurePath(str(p)).name.lower() for p in metadata["path"]], dtype=object)
    stems = names.map(lambda n: n.rsplit(".", 1)[0])
    captions = pd.Series(metadata["caption"].fillna("").astype(str).str.lower().to_numpy())
    exact = np.flatnonzero(((names == needle) | (stems == needle)).to_numpy())
    in_name = np.flatnonzero(names.str.contains(needle, regex=False).to_numpy())
    in_caption = np.flatnonzero(captions.str.contains(needle, regex=False).to_numpy())
    rows = dict.fromkeys(int(r) for r in (*exact, *in_name, *in_caption))
    return list(rows)[:limit]


def top_groups(groups: list[str], k: int = 12) -> list[str]:
    """``groups`` with all but the ``k`` most frequent labels replaced by ``OTHER_GROUP``."""
    counts = pd.Series(groups, dtype=object).value_counts()
    keep = set(counts.index[:k])
    return [g if g in keep else OTHER_GROUP for g in groups]


def drawn_positions(
    projection: Projection,
    max_drawn: int = MAX_DRAWN,
    seed: int = 0,
    keep: Sequence[int] = (),
) -> np.ndarray:
    """(m,) int64 sorted positions of the points to draw: all of them up to ``max_drawn``,
    else a seeded random ``max_drawn``, plus the positions of the index rows in ``keep``
    (a selected image and its neighbours) that are projected."""
    n = projection.n_points
    if n <= max_drawn:
        return np.arange(n, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(n, size=max(0, max_drawn), replace=False)
    extra = [p for p in (projection.position(r) for r in keep) if p is not None]
    return np.unique(np.concatenate([chosen, np.asarray(extra, dtype=np.int64)]))


def density_grid(coords: np.ndarray, bins: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How many points fall in each cell of a ``bins`` x ``bins`` grid over ``coords``
    ((n, 2) map positions): counts (bins, bins) int64 indexed [y, x], and the cell centres
    along x and y, (bins,) float64 each."""
    if len(coords) == 0:
        return np.zeros((bins, bins), np.int64), np.zeros(bins), np.zeros(bins)
    counts, x_edges, y_edges = np.histogram2d(coords[:, 0], coords[:, 1], bins=bins)
    centre = lambda e: (e[:-1] + e[1:]) / 2  # noqa: E731
    return counts.T.astype(np.int64), centre(x_edges), centre(y_edges)


def map_table(
    projection: Projection,
    metadata: pd.DataFrame,
    groups: int = 12,
    positions: np.ndarray | None = None,
    sources: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per projected point (or per point at ``positions``, see
    :func:`drawn_positions`): row, x, y, nn (cosine), caption, file, group.

    ``group`` (:func:`caption_groups`, with the index's ``sources``) keeps the ``groups``
    most frequent groups; the rest are ``OTHER_GROUP``.
    """
    at = np.arange(projection.n_points) if positions is None else np.asarray(positions)
    ids = projection.ids[at]
    meta = metadata.iloc[ids]
    return pd.DataFrame(
        {
            "row": ids.astype(np.int64),
            "x": projection.coords[at, 0],
            "y": projection.coords[at, 1],
            "nn": projection.nn_similarity[at],
            "caption": meta["caption"].fillna("").astype(str).to_numpy(),
            "file": [Path(str(p)).name for p in meta["path"]],
            "group": top_groups(caption_groups(meta, sources), groups),
        }
    )


def _same_request(info: ProjectionInfo, max_points: int, seed: int) -> bool:
    """Whether a stored projection is what ``max_points`` and ``seed`` would compute."""
    if info.seed != seed or info.subsampled:
        return False
    fitted = info.n_fit or info.n_points  # maps stored before n_fit were fitted on all
    return fitted == min(info.n_total, max_points)


def _sample_rows(n: int, max_points: int, seed: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False)).astype(np.int64)


def _n_neighbors(n_points: int) -> int:
    return int(min(UMAP_PARAMS["n_neighbors"], n_points - 1))


def _nearest_other(sims: np.ndarray, ids: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per row, the similarity of the first result that is not the row itself."""
    first_is_self = ids[:, 0] == own
    return np.where(first_is_self, sims[:, 1], sims[:, 0]).astype(np.float32)


@dataclass
class _PointSearch:
    """Top-k inner-product search over the fitted points, giving positions among them:
    the index itself (:meth:`ReplicaIndex.search_vectors`) when they are all of its rows,
    else an exact FAISS search over their vectors."""

    dim: int
    size: int
    index: ReplicaIndex | None = None
    flat: Any = None

    @classmethod
    def over(
        cls, index: ReplicaIndex, rows: np.ndarray, vectors: np.ndarray | None = None
    ) -> _PointSearch:
        dim = int(index.manifest.dim)
        if len(rows) == index.count and np.array_equal(rows, np.arange(index.count)):
            return cls(dim, len(rows), index=index)
        import faiss

        flat = faiss.IndexFlatIP(dim)
        points = index.get_vectors(rows) if vectors is None else vectors
        flat.add(np.ascontiguousarray(points, dtype=np.float32))
        return cls(dim, len(rows), flat=flat)

    def search(self, vectors: np.ndarray, k: int, chunk: int = 4096) -> tuple[Any, Any]:
        """Top-k (similarities (n, k) float32, positions (n, k) int64), in chunks."""
        sims = np.empty((len(vectors), k), np.float32)
        positions = np.empty((len(vectors), k), np.int64)
        for start in range(0, len(vectors), chunk):
            part = np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32)
            if self.index is not None:
                found = self.index.search_vectors(part, k)
            else:
                found = self.flat.search(part, k)
            sims[start : start + len(part)], positions[start : start + len(part)] = found
        return sims, positions


def _distances(sims: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their cosine, floored above 0 so that
    sparse matrices never drop an exact duplicate."""
    return np.sqrt(np.clip(2.0 - 2.0 * sims, 1e-12, 4.0)).astype(np.float32)


def _neighbour_graph(sims: np.ndarray, positions: np.ndarray, k: int) -> Any:
    """A symmetric sparse (n, n) distance matrix: each point's k nearest others, both ways,
    and a zero diagonal (what UMAP's ``metric="precomputed"`` expects)."""
    import scipy.sparse

    n = len(positions)
    own = np.arange(n)[:, None]
    others = positions != own
    # keep the first k results that are not the point itself (duplicates may outrank it)
    keep = others & (np.cumsum(others, axis=1) <= k)
    rows = np.broadcast_to(own, positions.shape)[keep]
    cols = positions[keep]
    dist = _distances(sims[keep])
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    _, first = np.unique(low * n + high, return_index=True)
    low, high, dist = low[first], high[first], dist[first]
    diagonal = np.arange(n)
    graph = scipy.sparse.coo_matrix(
        (
            np.concatenate([dist, dist, np.zeros(n, np.float32)]),
            (np.concatenate([low, high, diagonal]), np.concatenate([high, low, diagonal])),
        ),
        shape=(n, n),
    )
    return graph.tocsr()


def _pca_init(vectors: np.ndarray) -> np.ndarray:
    """(n, 2) float32: the first two principal components, signs fixed, scaled to +-10."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, eigvecs = np.linalg.eigh(centred.T @ centred)
    coords = centred @ eigvecs[:, ::-1][:, :2]
    coords *= np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    return (10.0 * coords / max(float(np.abs(coords).max()), 1e-12)).astype(np.float32)


def _fit_umap(vectors: np.ndarray, graph: Any, k: int, seed: int) -> tuple[Any, np.ndarray]:
    import umap  # slow to import (numba): only here

    reducer = umap.UMAP(
        n_neighbors=k,
        min_dist=UMAP_PARAMS["min_dist"],
        n_components=UMAP_PARAMS["n_components"],
        metric="precomputed",
        init=_pca_init(vectors),
        random_state=seed,
        n_jobs=1,  # random_state forces a single thread anyway; saying so avoids a warning
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "using precomputed metric", UserWarning)
        coords = reducer.fit_transform(graph)
    return reducer, np.asarray(coords, dtype=np.float32)


def _umap_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("umap-learn")
    except metadata.PackageNotFoundError:
        return ""


def _load_for(folder: Path, index: ReplicaIndex | None) -> Projection:
    """The current stored projection of the index at ``folder`` (or its projection folder)."""
    if folder.name == PROJECTION_DIR and not (folder / "manifest.json").is_file():
        folder = folder.parent
    current = index if index is not None else open_index(folder)
    stored = load_projection(current)
    if stored is None:
        raise ProjectionError(f"no current map stored for {folder}; compute the projection first")
    return stored


def _store(projection: Projection, dest: Path) -> Path | None:
    """Write the projection to a temporary sibling and rename it into place.

    Returns the folder, or None when it could not be written (the projection then
    lives only in memory; the index is never affected). A ``reducer.joblib`` left by an
    earlier version goes with the folder it was in.
    """
    _remove_abandoned(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        np.save(tmp / IDS_FILE, projection.ids)
        if projection.fit_ids is not None:
            np.save(tmp / FIT_IDS_FILE, projection.fit_ids)
        np.save(tmp / COORDS_FILE, projection.coords)
        np.save(tmp / NN_FILE, projection.nn_similarity)
        (tmp / INFO_FILE).write_text(projection.info.to_json(), encoding="utf-8")
        swap_into_place(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("could not store the projection in %s: %s", dest, exc)
        return None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _remove_abandoned(dest: Path, older_than_s: float = 86_400) -> None:
    """Remove temporary folders left by writes that died over a day ago (not running ones)."""
    cutoff = datetime.now(UTC).timestamp() - older_than_s
    for old in dest.parent.glob(f".{dest.name}.*-*"):
        with contextlib.suppress(OSError):
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)


def grid_representatives(
    coords: np.ndarray, cells: int = 14, limit: int = 60
) -> tuple[np.ndarray, float]:
    """Pictures for a map: the plane cut into square cells (``cells`` along its longer side),
    for the ``limit`` most crowded cells the point nearest that cell's mean position.

    Args:
        coords: (n, 2) map positions.

    Returns:
        (m,) int64 positions into ``coords`` (most crowded cell first) and the cell's side in
        map units.
    """
    if len(coords) == 0:
        return np.zeros(0, dtype=np.int64), 1.0
    low = coords.min(axis=0)
    side = float(max(np.ptp(coords, axis=0).max(), 1e-6)) / cells
    cell = np.floor((coords - low) / side).astype(np.int64)
    keys = cell[:, 0] * (cells + 1) + cell[:, 1]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    picks = []
    for k in np.argsort(-counts, kind="stable")[:limit]:
        members = np.flatnonzero(inverse == k)
        centre = coords[members].mean(axis=0)
        picks.append(int(members[np.argmin(np.linalg.norm(coords[members] - centre, axis=1))]))
    return np.array(picks, dtype=np.int64), side
