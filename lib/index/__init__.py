"""The index: embeddings of a training set on disk, with their metadata, searched by cosine.

    errors.py    what can go wrong (IndexNotFound, IndexLocked, ...)
    lock.py      one writer at a time (an OS file lock beside the folder)
    store.py     the folder on disk: open, build, add, calibrate, delete
    flat.py      exact FAISS search with per-call thread settings
    importer.py  embeddings computed elsewhere (clip-retrieval layout, .npy + .parquet)
    catalog.py   what the app shows of an index before opening it

Everything a caller needs is importable from here (``from lib.index import open_index``).
"""

from __future__ import annotations

from lib.index.errors import (
    EmbedderMismatch,
    IndexError_,
    IndexLocked,
    IndexNotFound,
    IndexWriteError,
    NoImagesError,
)
from lib.index.lock import lock_path, writer_lock
from lib.index.store import (
    INDEX_FORMAT,
    MANIFEST_FILE,
    BuildReport,
    IndexManifest,
    ReplicaIndex,
    add_to_index,
    build_index,
    calibrate_index,
    delete_index,
    is_index,
    list_indexes,
    open_index,
)

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
    "delete_index",
    "is_index",
    "list_indexes",
    "lock_path",
    "open_index",
    "writer_lock",
]
