"""Reading an index: open a folder (format 1 or 2) as a :class:`ReplicaIndex`.

The folder layout and how it changes are described in :mod:`lib.index.manifest`;
writes live in :mod:`lib.index.builder`. Opening takes no lock: a format-2 reader uses
the segments named by the manifest it read (memory-mapped), so writers that commit
meanwhile do not disturb it.

File names that are not valid UTF-8 are stored losslessly: ``path`` holds a readable
form (each bad byte as ``\\xNN``, :func:`lib.images.display_path`) and the optional
``path_bytes`` column the raw bytes; :meth:`ReplicaIndex.file_path` gives the path that
opens the file. Indexes without the column (all older ones) read as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from lib.calibration import Calibration, fit_calibration, is_stale, needs_refit
from lib.embedders import Embedder, create_embedder
from lib.images import SkippedFile
from lib.index.ann import SegmentSearch, ann_path, read_ann
from lib.index.errors import (
    EmbedderMismatch,
    IndexLocked,
    IndexNotFound,
    IndexWriteError,
)
from lib.index.flat import search_flat
from lib.index.lock import writer_lock
from lib.index.manifest import (
    MANIFEST_FILE,
    READABLE_FORMATS,
    IndexManifest,
    read_manifest,
    require_regular,
)
from lib.index.segments import (
    SegmentInfo,
    SegmentVectors,
    pop_raw_paths,
    read_segment_metadata,
    read_segment_vectors,
)
from lib.progress import ProgressCallback

log = logging.getLogger(__name__)

FAISS_FILE = "index.faiss"
"""Format 1: the exact FAISS index."""
METADATA_FILE = "metadata.parquet"
"""Format 1: the metadata table."""
METADATA_COLUMNS = ("id", "path", "sha256", "width", "height", "caption", "source")
URL_COLUMN = "url"
"""Optional metadata column: where an imported image came from (:mod:`lib.index.importer`);
absent from built indexes, null for rows without one."""
SWAP_WAIT_S = 10.0
"""How long a reader that finds the folder missing waits for a writer's swap to finish."""
OPEN_RETRIES = 5
"""A format-2 reader whose segments vanished (a compaction committed meanwhile) reads
the new manifest and tries again, this many times."""


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
        table: SegmentVectors | None = None,
        *,
        recalibrate: bool = True,
        make_searcher: Callable[[], Any] | None = None,
    ):
        self.path = path
        self.manifest = manifest
        self.metadata = metadata
        self._faiss = faiss_index
        self.table = table
        """Format 2: the vectors of every segment, memory-mapped, in row order."""
        self._make_searcher = make_searcher
        self.raw_paths: dict[int, bytes] = dict(raw_paths or {})
        """Row -> raw path bytes, for the rows whose file name is not valid UTF-8 (their
        ``metadata["path"]`` is the readable form); see :meth:`file_path`."""
        self.calibration = Calibration.from_dict(manifest.calibration)
        self.recalibrated = False
        """True when the stored calibration was outdated and was refitted in memory on
        open (``index calibrate`` stores it)."""
        self.calibration_stale = is_stale(self.calibration, manifest.count)
        """True when the stored calibration was fitted on another number of rows than
        the index holds (a write killed before its refit); readers refit in memory."""
        if recalibrate and (needs_refit(self.calibration) or self.calibration_stale):
            why = (
                f"was fitted on {self.calibration.fitted_rows:,} of its {manifest.count:,} "
                "images (a write stopped before refitting it)"
                if self.calibration_stale
                else "was fitted by an older method"
            )
            self.calibration = self._fit_calibration()
            self.recalibrated = True
            log.warning(
                "the calibration of index %s %s; recalibrated in memory "
                "(store it with `python -m lib index calibrate %s`)",
                path,
                why,
                path,
            )

    def _fit_calibration(
        self, *, align: bool = False, progress: ProgressCallback | None = None
    ) -> Calibration:
        """A fresh null for this index, keeping its stored operating point; ``align``
        also measures the pixel-alignment null from the image files (slower)."""
        stored = Calibration.from_dict(self.manifest.calibration)
        base = Calibration(
            false_alarm_rate=stored.false_alarm_rate,
            copy_tests=stored.copy_tests,
            copy_tests_rows=stored.copy_tests_rows,
        )
        from lib.allowed_paths import index_roots

        paths = self.file_paths() if align else None
        roots = index_roots(self) if align else None
        vectors: Any = self.table if self.table is not None else self.vectors()
        return fit_calibration(
            self.faiss,
            vectors,
            base=base,
            paths=paths,
            progress=_calibrating(progress),
            roots=roots,
        )

    @property
    def faiss(self) -> Any:
        """What searches: an exact ``IndexFlatIP`` (format 1, and format 2 below
        :data:`lib.index.ann.EXACT_LIMIT`), else a :class:`lib.index.ann.SegmentSearch`
        (approximate shortlist, exact scores); both answer ``search(queries, k)``.
        Writers open an index without it and it is made on first use."""
        if self._faiss is None and self._make_searcher is not None:
            self._faiss = self._make_searcher()
        return self._faiss

    @property
    def content_version(self) -> str:
        """Changes exactly when the indexed images change (not on recalibration):
        format 2, a hash of the live segments' names (segments are immutable); format 1,
        the manifest's ``updated`` time. What derived data (the map) is keyed on."""
        if self.manifest.format < 2:
            return self.manifest.updated
        names = "\n".join(str(s["name"]) for s in self.manifest.segments)
        return "segments:" + hashlib.sha256(names.encode()).hexdigest()[:16]

    @property
    def count(self) -> int:
        return len(self.metadata)

    @property
    def embedder_name(self) -> str:
        return self.manifest.embedder_name

    def vectors(self) -> np.ndarray:
        """All stored vectors in RAM: (count, dim) float32, L2-normalised. For an index
        larger than RAM use :meth:`get_vectors` or ``table.blocks()``."""
        if self.count == 0:
            return np.zeros((0, self.manifest.dim), np.float32)
        if self.table is not None:
            return self.table.materialise()
        return self.faiss.reconstruct_n(0, self.count)

    def get_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for row ids of any shape: (*ids.shape, dim) float32; -1 gives zeros."""
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.reshape(-1)
        out = np.zeros((flat.size, self.manifest.dim), np.float32)
        valid = flat >= 0
        if valid.any() and self.table is not None:
            out[valid] = self.table[flat[valid]]
        elif valid.any():
            unique, inverse = np.unique(flat[valid], return_inverse=True)
            out[valid] = self.faiss.reconstruct_batch(unique)[inverse]
        return out.reshape(*ids.shape, self.manifest.dim)

    def search_vectors(
        self, queries: np.ndarray, k: int, *, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: similarities (n, k) float32 and row ids (n, k) int64.

        When the index holds fewer than k vectors, missing places have id -1 and
        similarity -inf. Every similarity is exact; above
        :data:`lib.index.ann.EXACT_LIMIT` vectors the candidates come from the
        approximate index, whose ``nprobe`` (lists probed) may be lowered for searches
        that only want the closest neighbours (near-duplicates); exact indexes ignore it.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.manifest.dim:
            raise ValueError(
                f"queries must have shape (n, {self.manifest.dim}), got {queries.shape}"
            )
        k = max(1, int(k))
        if nprobe is not None and isinstance(self.faiss, SegmentSearch):
            sims, ids = self.faiss.search(queries, k, nprobe=nprobe)
        else:
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


def _calibrating(progress: ProgressCallback | None) -> ProgressCallback | None:
    """``progress`` with "calibrating verdicts" as the message when none is given."""
    if progress is None:
        return None
    callback = progress

    def report(done: int, total: int, message: str = "") -> None:
        callback(done, total, message or "calibrating verdicts")

    return report


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


def _load(root: Path, *, recalibrate: bool = True, lazy: bool = False) -> ReplicaIndex:
    """Open ``root``; ``recalibrate=False`` skips refitting an outdated calibration in
    memory; ``lazy`` (writers, who hold the lock, so nothing changes under them) makes
    the searcher only when it is first used."""
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise IndexNotFound(
            f"{root} is not a Replica index (no {MANIFEST_FILE}); build one with "
            f"`python -m lib index build IMAGES_DIR --out {root}`"
        )
    for attempt in range(OPEN_RETRIES):
        try:
            manifest = read_manifest(root)  # size-capped, checked, never a FIFO
        except (OSError, ValueError, TypeError) as exc:
            raise IndexNotFound(f"index {root} is damaged or incomplete: {exc}") from exc
        if manifest.format not in READABLE_FORMATS:
            raise IndexNotFound(
                f"index {root} has format {manifest.format}; upgrade Replica to read it"
            )
        if manifest.format == 1:
            return _load_format1(root, manifest, recalibrate)
        try:
            return _load_segments(root, manifest, recalibrate, lazy)
        except FileNotFoundError:
            if attempt + 1 == OPEN_RETRIES:
                raise IndexNotFound(
                    f"index {root} is damaged: a segment its manifest names is missing"
                ) from None
            time.sleep(0.05)  # a compaction replaced the segments meanwhile: read again
    raise AssertionError("unreachable")


def _load_format1(root: Path, manifest: IndexManifest, recalibrate: bool) -> ReplicaIndex:
    import faiss

    try:
        for name in (METADATA_FILE, FAISS_FILE):
            require_regular(root / name)  # never a FIFO or a device
        metadata = pd.read_parquet(root / METADATA_FILE)
        raw_paths = pop_raw_paths(metadata)
        faiss_index = faiss.read_index(str(root / FAISS_FILE))
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise IndexNotFound(f"index {root} is damaged or incomplete: {exc}") from exc
    if faiss_index.ntotal != len(metadata) or faiss_index.d != manifest.dim:
        raise IndexNotFound(
            f"index {root} is inconsistent: {faiss_index.ntotal} vectors of dim {faiss_index.d}, "
            f"{len(metadata)} metadata rows, manifest dim {manifest.dim}"
        )
    return ReplicaIndex(root, manifest, metadata, faiss_index, raw_paths, recalibrate=recalibrate)


def _load_segments(
    root: Path, manifest: IndexManifest, recalibrate: bool, lazy: bool = False
) -> ReplicaIndex:
    """Open a format-2 index. Raises FileNotFoundError when a named segment is gone
    (the caller reads the manifest again), IndexNotFound when it is damaged."""
    infos = [SegmentInfo.from_dict(d) for d in manifest.segments]
    parts, frames = [], []
    try:
        for info in infos:
            parts.append(read_segment_vectors(root, info, manifest.dim))
            frames.append(read_segment_metadata(root, info))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise IndexNotFound(f"index {root} is damaged or incomplete: {exc}") from exc
    table = SegmentVectors(parts, manifest.dim)
    if len(table) != manifest.count:
        raise IndexNotFound(
            f"index {root} is inconsistent: its segments hold {len(table)} vectors, "
            f"its manifest says {manifest.count}"
        )
    metadata = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({c: pd.Series(dtype=object) for c in METADATA_COLUMNS})
    )
    raw_paths = pop_raw_paths(metadata)
    if lazy:
        make = _pinned_searcher(root, manifest, table)
        return ReplicaIndex(
            root, manifest, metadata, None, raw_paths, table, recalibrate=recalibrate,
            make_searcher=make,
        )  # fmt: skip
    searcher = _searcher(root, manifest, table)
    return ReplicaIndex(
        root, manifest, metadata, searcher, raw_paths, table, recalibrate=recalibrate
    )


def _pinned_searcher(
    root: Path, manifest: IndexManifest, table: SegmentVectors
) -> Callable[[], Any]:
    """A function that makes this snapshot's searcher later. The approximate index file
    is opened now and read through that descriptor, so a compaction that removes the
    file meanwhile does not take it away (Linux ``/proc/self/fd``)."""
    if not manifest.ann:
        return lambda: _searcher(root, manifest, table)
    path = ann_path(root, manifest.ann)
    fd = os.open(path, os.O_RDONLY)
    proc = Path(f"/proc/self/fd/{fd}")
    closer = _FdCloser(fd)

    def make() -> Any:
        source = proc if proc.exists() else path
        try:
            return _searcher(root, manifest, table, ann_file=source)
        finally:
            closer.close()

    make.closer = closer  # type: ignore[attr-defined]  # keeps the descriptor until used
    return make


class _FdCloser:
    """Closes a file descriptor once, when asked or when garbage-collected."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.close()


def _searcher(
    root: Path, manifest: IndexManifest, table: SegmentVectors, ann_file: Path | None = None
) -> Any:
    """Exact ``IndexFlatIP`` over every row, or, with an approximate index in the
    manifest, a :class:`SegmentSearch` (its rows approximate, the rest exact)."""
    import faiss

    covered = int(manifest.ann["rows"]) if manifest.ann else 0
    flat = faiss.IndexFlatIP(manifest.dim)
    for _, block in table.blocks(start=covered):
        flat.add(np.ascontiguousarray(block))
    if not manifest.ann:
        return flat
    ann = read_ann(root, manifest, ann_file)
    name = str(ann_path(root, manifest.ann))
    return SegmentSearch(table, ann, flat if flat.ntotal else None, name=name)


def is_index(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding a manifest."""
    return (Path(path) / MANIFEST_FILE).is_file()


def list_indexes(root: str | os.PathLike[str]) -> list[Path]:
    """Index folders directly under ``root`` (sorted by name); [] when root is missing."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if not p.name.startswith(".") and is_index(p))


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
