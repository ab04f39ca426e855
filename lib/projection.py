"""A 2-D map of an index: UMAP fitted once, stored beside the index, reused.

    INDEX_DIR/projection/
      coords.npy         (n, 2) float32 UMAP coordinates
      ids.npy            (n,) int64 index row ids of the projected points (every row)
      fit_ids.npy        (m,) int64 the rows UMAP was fitted on (m <= fit_points)
      nn_similarity.npy  (n,) float32 cosine of each point to its nearest other image
      reducer.joblib     the fitted UMAP, for :func:`transform` of new images
      projection.json    n_points, n_total, n_fit, seed, UMAP parameters and the
                         manifest ``updated`` stamp of the index it was computed from

UMAP is fitted on a seeded random sample of at most ``fit_points`` images (50,000 by
default; all of them in a smaller index), then every other image is placed on the fitted
map with :func:`transform`'s method, in chunks with progress, so a map of millions costs
one fit of 50,000 plus a neighbour search per image. Neighbours among the fitted points
come from :meth:`ReplicaIndex.search_vectors` when the sample is the whole index, else
from an exact inner-product search over the sample's vectors; UMAP runs on that
precomputed sparse neighbour graph (``metric="precomputed"``): no pairwise distances in
Python and no NN-descent compilation. Euclidean distance on L2-normalised vectors,
``sqrt(2 - 2 cos)``, is what UMAP sees. Layouts start from the first two principal
components and are seeded. A page draws at most :data:`MAX_DRAWN` points
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
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.folders import swap_into_place
from lib.index import ReplicaIndex, open_index
from lib.progress import ProgressCallback, report

log = logging.getLogger(__name__)

PROJECTION_DIR = "projection"
COORDS_FILE = "coords.npy"
IDS_FILE = "ids.npy"
FIT_IDS_FILE = "fit_ids.npy"
NN_FILE = "nn_similarity.npy"
REDUCER_FILE = "reducer.joblib"
INFO_FILE = "projection.json"
MAX_POINTS = 50_000
"""UMAP is fitted on at most this many images (a seeded random sample); the rest are placed
on the fitted map."""
MAX_DRAWN = 20_000
"""A page draws at most this many points; a density image shows all of them."""
TRANSFORM_CHUNK = 10_000
"""Images placed on the fitted map per step."""
MIN_POINTS = 5
"""UMAP needs a few points to build a neighbour graph."""
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
    """The index cannot be projected (too few images) or a stored projection is unusable."""


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ProjectionInfo:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

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
    _reducer: Any = field(default=None, repr=False)
    _search: Any = field(default=None, repr=False)

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

    def reducer(self) -> Any:
        """The fitted UMAP (loaded from disk on first use)."""
        if self._reducer is None:
            if self.path is None:
                raise ProjectionError("this projection has no stored reducer")
            self._reducer = _load_reducer(self.path)
        return self._reducer

    def point_search(self, index: ReplicaIndex | None = None) -> _PointSearch:
        """Search over the fitted points' vectors (built on first use)."""
        if self._search is None:
            if index is None:
                if self.path is None:
                    raise ProjectionError("pass the index: this projection is not stored")
                index = open_index(self.path.parent)
            fitted = self.ids if self.fit_ids is None else self.fit_ids
            self._search = _PointSearch.over(index, fitted)
        return self._search


def projection_dir(index: ReplicaIndex | str | os.PathLike[str]) -> Path:
    """The folder where the projection of ``index`` (an index or its folder) is stored."""
    root = index.path if isinstance(index, ReplicaIndex) else Path(index)
    return Path(root) / PROJECTION_DIR


def load_projection(index: ReplicaIndex) -> Projection | None:
    """The stored projection of ``index``, or None when missing, damaged or out of date."""
    folder = projection_dir(index)
    if not (folder / INFO_FILE).is_file():
        return None
    try:
        info = ProjectionInfo.from_json((folder / INFO_FILE).read_text(encoding="utf-8"))
        ids = np.load(folder / IDS_FILE)
        coords = np.load(folder / COORDS_FILE)
        nn = np.load(folder / NN_FILE)
        fit_ids = np.load(folder / FIT_IDS_FILE) if (folder / FIT_IDS_FILE).is_file() else None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("ignoring unreadable projection in %s: %s", folder, exc)
        return None
    if not info.matches(index):
        log.info("projection in %s is out of date for its index", folder)
        return None
    if not (len(ids) == len(coords) == len(nn) == info.n_points):
        log.warning("ignoring inconsistent projection in %s", folder)
        return None
    return Projection(
        ids, coords.astype(np.float32), nn.astype(np.float32), info, folder, fit_ids=fit_ids
    )


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
        stored = load_projection(index)
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
    reducer, fit_coords = _fit_umap(fit_vectors, _neighbour_graph(sims, positions, k), k, seed)
    coords = np.empty((n, 2), np.float32)
    coords[fit_rows] = fit_coords
    report(progress, len(fit_rows), total, f"fitted on {len(fit_rows):,}")
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), fit_rows)
    for start in range(0, len(rest), TRANSFORM_CHUNK):
        part = rest[start : start + TRANSFORM_CHUNK]
        coords[part] = _place(reducer, search, index.get_vectors(part), k)
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
    projection = Projection(
        np.arange(n, dtype=np.int64),
        coords,
        nn,
        info,
        None,
        fit_ids=fit_rows,
        _reducer=reducer,
        _search=search,
    )
    report(progress, total, total, "saving")
    projection.path = _store(projection, projection_dir(index))
    report(progress, total, total, "done")
    return projection


def transform(
    projection: Projection | str | os.PathLike[str],
    vectors: np.ndarray,
    index: ReplicaIndex | None = None,
) -> np.ndarray:
    """Place new images on an existing map.

    Args:
        projection: a :class:`Projection`, its stored folder, or the index folder.
        vectors: (m, dim) float32, L2-normalised, from the index's embedder.
        index: the projected index, when already open (else opened from the folder).

    Returns:
        (m, 2) float32 map coordinates; an image equal to a projected one lands on it.

    Raises:
        ProjectionError: no current projection is stored for that index.
        ValueError: ``vectors`` has the wrong shape.
    """
    if not isinstance(projection, Projection):
        projection = _load_for(Path(projection), index)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    search = projection.point_search(index)
    if vectors.ndim != 2 or vectors.shape[1] != search.dim:
        raise ValueError(f"vectors must have shape (m, {search.dim}), got {vectors.shape}")
    if len(vectors) == 0:
        return np.zeros((0, 2), np.float32)
    k = int(projection.info.umap["n_neighbors"])
    return _place(projection.reducer(), search, vectors, k)


def _place(reducer: Any, search: _PointSearch, vectors: np.ndarray, k: int) -> np.ndarray:
    """(m, 2) float32: ``vectors`` placed on the map fitted by ``reducer`` through their
    ``k`` nearest fitted points (``search``)."""
    import scipy.sparse

    sims, positions = search.search(vectors, k)
    distances = _distances(sims)
    graph = scipy.sparse.csr_matrix(
        (distances.ravel(), positions.ravel(), np.arange(0, distances.size + 1, k)),
        shape=(len(vectors), search.size),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Transforming new data with precomputed", UserWarning)
        return np.asarray(reducer.transform(graph), dtype=np.float32)


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


def caption_groups(metadata: pd.DataFrame) -> list[str]:
    """One label per row: the caption's first word (lower case), else the parent folder name."""
    groups = []
    for caption, path in zip(metadata["caption"], metadata["path"], strict=True):
        text = "" if caption is None or pd.isna(caption) else str(caption)
        words = re.findall(r"[^\W_]+", text.lower())
        groups.append(words[0] if words else Path(str(path)).parent.name or NO_GROUP)
    return groups


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
) -> pd.DataFrame:
    """One row per projected point (or per point at ``positions``, see
    :func:`drawn_positions`): row, x, y, nn (cosine), caption, file, group.

    ``group`` keeps the ``groups`` most frequent caption groups; the rest are ``OTHER_GROUP``.
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
            "group": top_groups(caption_groups(meta), groups),
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


def _load_reducer(folder: Path) -> Any:
    import joblib

    path = folder / REDUCER_FILE
    if not path.is_file():
        raise ProjectionError(f"no fitted map in {folder}; compute the projection first")
    return joblib.load(path)


def _store(projection: Projection, dest: Path) -> Path | None:
    """Write the projection to a temporary sibling and rename it into place.

    Returns the folder, or None when it could not be written (the projection then
    lives only in memory; the index is never affected).
    """
    import joblib

    _remove_abandoned(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        np.save(tmp / IDS_FILE, projection.ids)
        if projection.fit_ids is not None:
            np.save(tmp / FIT_IDS_FILE, projection.fit_ids)
        np.save(tmp / COORDS_FILE, projection.coords)
        np.save(tmp / NN_FILE, projection.nn_similarity)
        joblib.dump(projection._reducer, tmp / REDUCER_FILE)
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
