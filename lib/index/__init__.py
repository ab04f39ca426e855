"""The index: embeddings of a training set on disk, with their metadata, searched by cosine.

    errors.py    what can go wrong (IndexNotFound, IndexLocked, ...)
    lock.py      one writer at a time (an OS file lock beside the folder)
    manifest.py  what an index is (manifest.json), the folder layout, the atomic commit
    segments.py  immutable segments: vectors (memory-mapped) and metadata rows
    store.py     reading: open a folder (format 1 or 2) as a ReplicaIndex
    builder.py   writing: build (streaming, resumable), add, compact, upgrade, calibrate
    ann.py       approximate search (IVF-HNSW with SQ/PQ codes) re-ranked exactly
    flat.py      exact FAISS search with per-call thread settings
    ray_engine.py  embedding on a Ray cluster (index build --engine ray)
    importer.py  embeddings computed elsewhere (clip-retrieval layout, .npy + .parquet)
    catalog.py   what the app shows of an index before opening it

Everything a caller needs is importable from here (``from lib.index import open_index``).
"""

from __future__ import annotations

from lib.index.builder import (
    add_to_index,
    build_index,
    calibrate_index,
    compact_index,
    delete_index,
    record_copy_tests,
    upgrade_index,
)
from lib.index.errors import (
    EmbedderMismatch,
    IndexError_,
    IndexLocked,
    IndexNotFound,
    IndexWriteError,
    NoImagesError,
)
from lib.index.lock import lock_path, writer_lock
from lib.index.manifest import INDEX_FORMAT, MANIFEST_FILE, IndexManifest
from lib.index.store import BuildReport, ReplicaIndex, is_index, list_indexes, open_index

__all__ = [
    "INDEX_FORMAT",
    "MANIFEST_FILE",
    "BuildReport",
    "EmbedderMismatch",
    "IndexError_",
    "IndexLocked",
    "IndexManifest",
    "IndexNotFound",
    "IndexWriteError",
    "NoImagesError",
    "ReplicaIndex",
    "add_to_index",
    "build_index",
    "calibrate_index",
    "compact_index",
    "delete_index",
    "is_index",
    "list_indexes",
    "lock_path",
    "open_index",
    "record_copy_tests",
    "upgrade_index",
    "writer_lock",
]
