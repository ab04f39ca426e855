"""Immutable segments of a format-2 index, and the vectors of all of them as one table.

A segment is a folder ``segments/NAME/`` holding ``vectors.npy`` ((rows, dim), float32 or
float16, L2-normalised) and ``metadata.parquet`` (row i describes vector i). It is written
under a hidden temporary name, flushed, then renamed into place, and never changed after:
a manifest that names it can rely on it. Vectors are memory-mapped on open, so an index
larger than RAM opens at once and pages in only what a search touches.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib.index.errors import IndexWriteError
from lib.index.manifest import fsync_path

SEGMENTS_DIR = "segments"
VECTORS_FILE = "vectors.npy"
SEGMENT_METADATA_FILE = "metadata.parquet"
PATH_BYTES_COLUMN = "path_bytes"
"""Optional metadata column: the raw bytes of a path that is not valid UTF-8 (null elsewhere)."""
VECTOR_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class SegmentInfo:
    """A segment as the manifest lists it."""

    name: str
    rows: int
    dtype: str = "float32"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "rows": self.rows, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SegmentInfo:
        return cls(str(data["name"]), int(str(data["rows"])), str(data.get("dtype", "float32")))


def segment_dir(root: Path, name: str) -> Path:
    return root / SEGMENTS_DIR / name


def write_segment(
    root: Path,
    vectors: np.ndarray,
    metadata: pd.DataFrame,
    raw_paths: dict[int, bytes] | None = None,
    *,
    dtype: str = "float32",
) -> SegmentInfo:
    """Write a new segment under ``root/segments`` and return its manifest entry (the
    caller commits a manifest naming it).

    Args:
        vectors: (rows, dim) L2-normalised; stored as ``dtype`` (float32 or float16).
        metadata: rows rows, row i for vector i.
        raw_paths: row -> raw bytes of paths that are not valid UTF-8 (``path_bytes``).

    Raises:
        ValueError: vectors and metadata differ in length, or an unknown dtype.
        IndexWriteError: the write failed; nothing is left behind.
    """
    if len(vectors) != len(metadata):
        raise ValueError(f"{len(vectors)} vectors but {len(metadata)} metadata rows")
    if dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector dtype must be one of {VECTOR_DTYPES}, got {dtype!r}")
    name = f"seg-{uuid.uuid4().hex[:12]}"
    parent = root / SEGMENTS_DIR
    tmp = parent / f".{name}.tmp"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        np.save(tmp / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=dtype))
        stored_frame(metadata.reset_index(drop=True), raw_paths or {}).to_parquet(
            tmp / SEGMENT_METADATA_FILE, index=False
        )
        for file in (VECTORS_FILE, SEGMENT_METADATA_FILE):
            fsync_path(tmp / file)
        os.rename(tmp, parent / name)
        fsync_path(parent)
    except (OSError, ValueError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IndexWriteError(f"could not write a segment of {root}: {exc}") from exc
    return SegmentInfo(name, len(vectors), dtype)


def stored_frame(metadata: pd.DataFrame, raw_paths: dict[int, bytes]) -> pd.DataFrame:
    """The table written to a metadata file: ``path_bytes`` only when some path needs it."""
    if not raw_paths:
        return metadata
    frame = metadata.copy()
    frame[PATH_BYTES_COLUMN] = pd.Series(
        [raw_paths.get(i) for i in range(len(frame))], index=frame.index, dtype=object
    )
    return frame


def pop_raw_paths(metadata: pd.DataFrame) -> dict[int, bytes]:
    """Remove the optional ``path_bytes`` column and return its non-null entries by row."""
    if PATH_BYTES_COLUMN not in metadata.columns:
        return {}
    column = metadata.pop(PATH_BYTES_COLUMN)
    return {i: bytes(v) for i, v in enumerate(column.tolist()) if isinstance(v, bytes | bytearray)}


def read_segment_vectors(root: Path, info: SegmentInfo, dim: int) -> np.ndarray:
    """A segment's vectors, memory-mapped read-only: (rows, dim) in its stored dtype.

    Raises:
        OSError: missing or unreadable; ValueError: not the shape the manifest says.
    """
    vectors = np.load(segment_dir(root, info.name) / VECTORS_FILE, mmap_mode="r")
    _random_access(vectors)
    if vectors.shape != (info.rows, dim):
        raise ValueError(
            f"segment {info.name} holds {vectors.shape} vectors, the manifest says "
            f"({info.rows}, {dim})"
        )
    return vectors


def _random_access(vectors: np.ndarray) -> None:
    """Tell the kernel that rows are read here and there (re-ranking a shortlist), so it
    reads no pages ahead: with read-ahead, 50k scattered rows of a 10M index pulled about
    6 GB into memory (benchmarks/ann_scale.py). ``blocks`` asks for read-ahead while it
    scans."""
    _advise(vectors, "MADV_RANDOM")


def _advise(vectors: np.ndarray, flag: str) -> None:
    handle = getattr(vectors, "_mmap", None)
    if handle is not None and hasattr(mmap, flag):
        with contextlib.suppress(OSError, ValueError):
            handle.madvise(getattr(mmap, flag))


def read_segment_metadata(root: Path, info: SegmentInfo) -> pd.DataFrame:
    """A segment's metadata rows (``path_bytes`` included when stored)."""
    frame = pd.read_parquet(segment_dir(root, info.name) / SEGMENT_METADATA_FILE)
    if len(frame) != info.rows:
        raise ValueError(
            f"segment {info.name} has {len(frame)} metadata rows, the manifest says {info.rows}"
        )
    return frame


class SegmentVectors:
    """The vectors of a list of segments as one (count, dim) table, in row order.

    Indexing with an array of row ids gathers float32 rows from the memory maps
    (``table[ids]`` -> (len(ids), dim)); ``len`` is the row count. Used where code wants
    "the vectors" of an index too large to hold in RAM.
    """

    def __init__(self, parts: list[np.ndarray], dim: int):
        self.parts = parts
        self.dim = dim
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def __getitem__(self, ids: object) -> np.ndarray:
        if isinstance(ids, slice):
            ids = np.arange(len(self))[ids]
        given = np.asarray(ids)
        if given.dtype == bool or (given.size and int(given.min()) < 0):
            raise IndexError("SegmentVectors takes row ids 0..count-1 (no masks, no negatives)")
        rows = given.astype(np.int64)
        flat = rows.reshape(-1)
        out = np.empty((flat.size, self.dim), np.float32)
        part = np.searchsorted(self.offsets, flat, side="right") - 1
        for p in np.unique(part):
            where = np.flatnonzero(part == p)
            local = flat[where] - self.offsets[p]
            order = np.argsort(local, kind="stable")  # ascending reads from the memory map
            out[where[order]] = self.parts[int(p)][local[order]]
        return out.reshape(*rows.shape, self.dim)

    def blocks(self, rows: int = 65536, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (m, dim) float32 block) over the rows from ``start`` on, in order,
        m <= ``rows``. Rows before ``start`` are not read (their pages stay on disk)."""
        for p, part in enumerate(self.parts):
            first = int(self.offsets[p])
            if first + len(part) <= start:
                continue
            _advise(part, "MADV_SEQUENTIAL")
            try:
                for i in range(max(0, start - first), len(part), rows):
                    yield first + i, np.asarray(part[i : i + rows], dtype=np.float32)
            finally:
                _advise(part, "MADV_RANDOM")

    def materialise(self) -> np.ndarray:
        """All rows as one (count, dim) float32 array in RAM."""
        out = np.empty((len(self), self.dim), np.float32)
        for start, block in self.blocks():
            out[start : start + len(block)] = block
        return out
