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
from tokenize import TokenError

import numpy as np
import pandas as pd

from lib.index.errors import IndexCorrupt, IndexWriteError
from lib.index.manifest import (
    MAX_ROWS,
    SEGMENT_NAME,
    VECTOR_DTYPES,
    fsync_path,
    require_regular,
)

SEGMENTS_DIR = "segments"
VECTORS_FILE = "vectors.npy"
SEGMENT_METADATA_FILE = "metadata.parquet"
PATH_BYTES_COLUMN = "path_bytes"
"""Optional metadata column: the raw bytes of a path that is not valid UTF-8 (null elsewhere)."""
REQUIRED_COLUMNS = ("id", "path", "sha256")
"""Metadata columns every segment has (readers look rows up by them)."""


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
        """The entry of a manifest checked by :func:`lib.index.manifest.check_manifest`.

        Raises:
            IndexCorrupt: not a segment entry (a manifest that was not checked).
        """
        name, rows, dtype = data.get("name"), data.get("rows"), data.get("dtype", "float32")
        if (
            not isinstance(name, str)
            or not SEGMENT_NAME.fullmatch(name)
            or not isinstance(rows, int)
            or isinstance(rows, bool)
            or not 0 <= rows <= MAX_ROWS
            or dtype not in VECTOR_DTYPES
        ):
            raise IndexCorrupt(f"not a segment entry of a manifest: {str(data)[:200]}")
        return cls(name, rows, str(dtype))


def segment_dir(root: Path, name: str) -> Path:
    """The folder of segment ``name`` (a plain ``seg-...`` name) under ``root/segments``.

    Raises:
        IndexCorrupt: ``name`` is not a segment name.
    """
    if not SEGMENT_NAME.fullmatch(name):
        raise IndexCorrupt(f"{name!r} is not a segment name (seg- and hex digits)")
    return root / SEGMENTS_DIR / name


def segment_file(root: Path, name: str, file: str) -> Path:
    """``root/segments/name/file``, checked to stay inside ``root/segments`` once
    symbolic links are resolved (a segment is never a link to another folder).

    Raises:
        IndexCorrupt: the name is not a segment name, or the path leads outside.
    """
    path = segment_dir(root, name) / file
    base = root.resolve() / SEGMENTS_DIR  # segments/ itself may not be a link elsewhere
    if not path.resolve().is_relative_to(base):
        raise IndexCorrupt(
            f"segment {name} of index {root}: {file} leads outside {base} (a symbolic "
            "link); refusing to read it"
        )
    if os.path.lexists(path):
        try:
            require_regular(path)
        except FileNotFoundError:
            raise
        except OSError:
            raise IndexCorrupt(
                f"segment {name} of index {root}: {file} is not a regular file (a FIFO, "
                "device or socket would block or never end); rebuild the index"
            ) from None
    return path


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

    Only the .npy format is read (never a pickle or a zip), and the file must hold the
    rows, dimension and dtype the manifest says, all of them (not truncated).

    Raises:
        FileNotFoundError: the file is missing (a compaction may have removed it: the
            caller reads the manifest again).
        IndexCorrupt: anything else: unreadable, not an .npy file, truncated, or another
            shape or dtype than the manifest's (the message names the segment).
    """
    path = segment_file(root, info.name, VECTORS_FILE)
    try:
        vectors = np.lib.format.open_memmap(path, mode="r")
    except FileNotFoundError:
        raise
    except (
        OSError,
        ValueError,
        EOFError,
        OverflowError,
        TypeError,
        SyntaxError,
        TokenError,
    ) as exc:
        # numpy parses the .npy header as a Python literal: a damaged one can raise the
        # tokenizer's and parser's errors too
        raise IndexCorrupt(
            f"segment {info.name} of index {root}: {VECTORS_FILE} is damaged or not a "
            f"vector file ({exc}); rebuild the index"
        ) from None
    _random_access(vectors)
    if vectors.shape != (info.rows, dim) or vectors.dtype != np.dtype(info.dtype):
        raise IndexCorrupt(
            f"segment {info.name} of index {root}: {VECTORS_FILE} holds {vectors.shape} "
            f"{vectors.dtype} vectors, the manifest says ({info.rows}, {dim}) {info.dtype}; "
            "rebuild the index"
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
    """A segment's metadata rows (``path_bytes`` included when stored).

    Raises:
        FileNotFoundError: the file is missing (as in :func:`read_segment_vectors`).
        IndexCorrupt: not a readable Parquet file, another number of rows than the
            manifest says, or without the columns of :data:`REQUIRED_COLUMNS`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = segment_file(root, info.name, SEGMENT_METADATA_FILE)
    try:
        shape = pq.ParquetFile(path).metadata  # the footer only: nothing decoded yet
        decoded = sum(shape.row_group(i).total_byte_size for i in range(shape.num_row_groups))
        if shape.num_rows != info.rows or decoded > MAX_METADATA_BYTES_PER_ROW * info.rows + (
            64 << 20
        ):
            raise IndexCorrupt(
                f"segment {info.name} of index {root}: {SEGMENT_METADATA_FILE} holds "
                f"{shape.num_rows:,} rows ({decoded:,} bytes decoded), the manifest says "
                f"{info.rows:,}; refusing to decode it; rebuild the index"
            )
        frame = pd.read_parquet(path)
    except (FileNotFoundError, IndexCorrupt):
        raise
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        NotImplementedError,
        EOFError,
        pa.ArrowException,
    ) as exc:
        raise IndexCorrupt(
            f"segment {info.name} of index {root}: {SEGMENT_METADATA_FILE} is damaged or "
            f"not a Parquet table ({str(exc)[:300]}); rebuild the index"
        ) from None
    problem = ""
    if len(frame) != info.rows:
        problem = f"has {len(frame)} rows, the manifest says {info.rows}"
    elif missing := [c for c in REQUIRED_COLUMNS if c not in frame.columns]:
        problem = f"has no column {', '.join(missing)}"
    elif len(frame) and not pd.api.types.is_integer_dtype(frame["id"]):
        problem = f"has ids of type {frame['id'].dtype}, not integers"
    if problem:
        raise IndexCorrupt(
            f"segment {info.name} of index {root}: {SEGMENT_METADATA_FILE} {problem}; "
            "rebuild the index"
        )
    return frame


MAX_METADATA_BYTES_PER_ROW = 16 << 10
"""A segment's metadata may decode to at most this much per row (paths, captions, URLs)
plus 64 MB: a small Parquet file can otherwise decode to gigabytes."""


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
