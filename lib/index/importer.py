"""Import embeddings computed elsewhere into a Replica index.

Two layouts are read (:func:`find_shards`):

* clip-retrieval's output folder, shards paired by their number and read in numeric
  order (row i of ``metadata_k.parquet`` describes row i of ``img_emb_k.npy``)::

      EMBEDDINGS_DIR/img_emb/img_emb_0.npy         (n0, d) float vectors
      EMBEDDINGS_DIR/metadata/metadata_0.parquet   n0 rows: image_path, caption, url

* a plain ``.npy`` with a ``.parquet`` beside it (the same name stem, or the only pair
  in the folder) whose rows carry ``image_path`` (or ``path``) and optionally
  ``caption`` and ``url``.

The vectors must have been made by the registry embedder named on import, so that
queries are embedded the same way: the manifest records it exactly as
:func:`lib.index.build_index` does, and a dimension other than the embedder's is
refused before anything is written. Vectors are read shard by shard (memory-mapped) and
L2-normalised; those that were not unit-norm are counted in a warning. Rows of NaN or
infinite values and zero vectors are skipped with their reason, as unreadable images are
in a build. Image files are not read: ``sha256``, ``width`` and ``height`` stay empty, and
a row whose file is absent still searches (the app shows its caption or URL instead of a
thumbnail). The index is written through the same writer lock, segments, calibration,
approximate index and final rename as a build; memory stays flat (one segment of
:data:`SEGMENT_ROWS` vectors at a time). Vectors are kept at the precision they came in
(float16 shards give float16 segments, half the disk).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.embedders import Embedder
from lib.folders import swap_into_place
from lib.images import SkippedFile, display_path
from lib.index.ann import DEFAULT_MEMORY, parse_memory
from lib.index.builder import (
    _check_build_target,
    _finish,
    _make_folder,
    _new_manifest,
    _resolve_embedder,
    _sweep_leftovers,
    _wait_notice,
    staging_path,
)
from lib.index.errors import IndexError_, NoImagesError
from lib.index.lock import writer_lock
from lib.index.manifest import IndexManifest, commit_manifest
from lib.index.segments import write_segment
from lib.index.store import METADATA_COLUMNS, URL_COLUMN, BuildReport, _load, _restore_old
from lib.progress import ProgressCallback, report

log = logging.getLogger(__name__)

PATH_COLUMNS = ("image_path", "path")
"""Metadata columns that may hold a row's image path, in order of preference."""
UNIT_TOLERANCE = 1e-2
"""A vector whose L2 norm is further than this from 1 counts as not unit-norm."""
CHUNK_ROWS = 16384
"""Vectors normalised at a time within a shard (bounds the temporary memory)."""
SEGMENT_ROWS = 262_144
"""Vectors per segment written by an import."""


class EmbeddingsError(IndexError_):
    """An embeddings folder cannot be imported (layout, dtype, dimension, row counts);
    nothing is written."""


@dataclass(frozen=True)
class EmbeddingShard:
    """One embedding file and the metadata file whose row i describes its row i."""

    vectors: Path
    metadata: Path
    rows: int
    dim: int
    path_column: str

    @property
    def name(self) -> str:
        """The embedding file as ``folder/file.npy``, for messages."""
        return f"{self.vectors.parent.name}/{self.vectors.name}"


@dataclass
class ImportReport(BuildReport):
    """What an import did: a :class:`BuildReport` plus the number of shards read and of
    vectors that were not unit-norm (normalised)."""

    shards: int = 0
    normalised: int = 0

    def summary(self) -> str:
        return (
            f"imported {self.added} vector(s) from {self.shards} shard(s), skipped "
            f"{len(self.skipped)}, normalised {self.normalised}; "
            f"{self.index.count} in {self.index.path}"
        )


def find_shards(embeddings: str | os.PathLike[str]) -> list[EmbeddingShard]:
    """The shards of an embeddings folder (or of one ``.npy`` file), in import order,
    checked without reading their vectors.

    Raises:
        FileNotFoundError: the folder or file does not exist.
        EmbeddingsError: no layout is recognised; a shard lacks its metadata file (or the
            other way round); a shard's vectors are not a 2-D float array, have another
            dimension than the first shard's, or another number of rows than its
            metadata; the metadata has no ``image_path`` or ``path`` column.
    """
    root = Path(embeddings).expanduser().resolve()
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if root.is_dir() and (root / "img_emb").is_dir():
        pairs = _clip_retrieval_pairs(root)
    else:
        pairs = _plain_pairs(root)
    shards = [_check_shard(npy, parquet) for npy, parquet in pairs]
    for shard in shards[1:]:
        if shard.dim != shards[0].dim:
            raise EmbeddingsError(
                f"{shard.name} holds vectors of dimension {shard.dim}, but "
                f"{shards[0].name} of dimension {shards[0].dim}; all shards must come "
                "from one embedder"
            )
    return shards


def _number(path: Path, prefix: str) -> int | None:
    match = re.fullmatch(rf"{prefix}_?(\d+)", path.stem)
    return int(match.group(1)) if match else None


def _clip_retrieval_pairs(root: Path) -> list[tuple[Path, Path]]:
    vectors = {_number(p, "img_emb"): p for p in (root / "img_emb").glob("img_emb_*.npy")}
    metadata = {_number(p, "metadata"): p for p in (root / "metadata").glob("metadata_*.parquet")}
    vectors.pop(None, None)
    metadata.pop(None, None)
    if not vectors:
        raise EmbeddingsError(f"{root / 'img_emb'} holds no img_emb_N.npy file")
    for k, path in sorted((k, p) for k, p in vectors.items() if k is not None):
        if k not in metadata:
            raise EmbeddingsError(
                f"img_emb/{path.name} has no metadata/metadata_{k}.parquet beside it in {root}"
            )
    for k, path in sorted((k, p) for k, p in metadata.items() if k is not None):
        if k not in vectors:
            raise EmbeddingsError(
                f"metadata/{path.name} has no img_emb/img_emb_{k}.npy beside it in {root}"
            )
    return [(vectors[k], metadata[k]) for k in sorted(k for k in vectors if k is not None)]


def _plain_pairs(root: Path) -> list[tuple[Path, Path]]:
    if root.is_file():
        if root.suffix.lower() != ".npy":
            raise EmbeddingsError(f"{root} is not a .npy file nor an embeddings folder")
        same = root.with_suffix(".parquet")
        if same.is_file():
            return [(root, same)]
        others = sorted(root.parent.glob("*.parquet"))
        if len(others) == 1:
            return [(root, others[0])]
        raise EmbeddingsError(
            f"{root} has no {same.name} beside it (and {len(others)} other .parquet files)"
        )
    npys = sorted(root.glob("*.npy"))
    parquets = sorted(root.glob("*.parquet"))
    paired = [(p, p.with_suffix(".parquet")) for p in npys if p.with_suffix(".parquet").is_file()]
    if paired:
        return sorted(paired, key=lambda pair: _natural(pair[0].name))
    if len(npys) == 1 and len(parquets) == 1:
        return [(npys[0], parquets[0])]
    raise EmbeddingsError(
        f"{root} holds neither clip-retrieval's img_emb/ and metadata/ folders nor a "
        f".npy file with a .parquet file beside it ({len(npys)} .npy, {len(parquets)} "
        ".parquet found)"
    )


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _check_shard(npy: Path, parquet: Path) -> EmbeddingShard:
    import pyarrow.parquet as pq

    label = f"{npy.parent.name}/{npy.name}"
    try:
        vectors = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise EmbeddingsError(f"{label} is not a readable .npy array: {exc}") from exc
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise EmbeddingsError(
            f"{label} must hold a 2-D float array (one row per image), not "
            f"{vectors.dtype} of shape {vectors.shape}"
        )
    try:
        info = pq.ParquetFile(parquet)
    except (OSError, ValueError) as exc:
        raise EmbeddingsError(f"{parquet} is not a readable parquet file: {exc}") from exc
    rows = int(info.metadata.num_rows)
    if rows != vectors.shape[0]:
        raise EmbeddingsError(
            f"shard {label} has {vectors.shape[0]} vectors but its metadata "
            f"{parquet.parent.name}/{parquet.name} has {rows} rows; row i of one must "
            "describe row i of the other"
        )
    names = set(info.schema_arrow.names)
    column = next((c for c in PATH_COLUMNS if c in names), None)
    if column is None:
        raise EmbeddingsError(
            f"{parquet.parent.name}/{parquet.name} has no image_path (or path) column; "
            f"its columns: {', '.join(sorted(names))}"
        )
    return EmbeddingShard(npy, parquet, rows, int(vectors.shape[1]), column)


def import_embeddings(
    embeddings: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    embedder: str | Embedder,
    weights: str | None = None,
    source: str = "",
    overwrite: bool = True,
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    memory: str | int = DEFAULT_MEMORY,
) -> ImportReport:
    """Write a new index at ``out`` from precomputed embeddings, atomically.

    Args:
        embeddings: a clip-retrieval output folder, a folder with a ``.npy`` and a
            ``.parquet`` file, or one ``.npy`` file (see :func:`find_shards`). Shard k's
            vectors: (n_k, d) float (any precision); its metadata: n_k rows.
        out: the index folder; an existing index there is replaced only once the new one
            is completely written (unless ``overwrite`` is False).
        embedder: registry name (or an :class:`Embedder`) of the model that made the
            vectors; its dimension must be d. Queries are embedded with it.
        weights: local weights file, for ``timm:<model>`` embedders.
        source: a label stored per row (default: the embeddings path).
        progress: called as (vectors read, total) per shard, then over calibration.
        wait, on_wait: as in :func:`lib.index.build_index` (the writer lock).
        memory: RAM budget of the approximate index (large imports, :mod:`lib.index.ann`).

    Returns:
        An :class:`ImportReport`; the index holds the (n, d) float32 unit vectors of the
        usable rows in shard order, with ids 0..n-1.

    Raises:
        FileNotFoundError: ``embeddings`` does not exist.
        EmbeddingsError: the layout is not recognised, a shard is inconsistent
            (:func:`find_shards`) or d differs from the embedder's dimension.
        EmbedderUnavailable: unknown embedder name.
        NoImagesError: no row has a usable vector (nothing is written).
        IndexWriteError: the write failed; any previous index at ``out`` is untouched.
        IndexLocked: another writer holds the lock and ``wait`` is False.
        FileExistsError: ``out`` exists and is not an index, or ``overwrite`` is False.
    """
    dest = Path(out).expanduser().resolve()
    parse_memory(memory)
    _check_build_target(dest, overwrite)
    shards = find_shards(embeddings)
    model = _resolve_embedder(embedder, weights)
    if shards[0].dim != model.dim:
        raise EmbeddingsError(
            f"{shards[0].name} holds vectors of dimension {shards[0].dim}, but embedder "
            f"{model.name!r} makes vectors of dimension {model.dim}; name the embedder that "
            "made them (--embedder)"
        )
    label = display_path(source or str(Path(embeddings).expanduser().resolve()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(dest, wait=wait, on_wait=_wait_notice(on_wait, progress)):
        _restore_old(dest)
        _sweep_leftovers(dest)
        _check_build_target(dest, overwrite)
        stage = staging_path(dest)
        shutil.rmtree(stage, ignore_errors=True)
        _make_folder(stage)
        try:
            manifest = _new_manifest(model, 0, [], label)
            skipped, normalised = _write_shards(stage, manifest, shards, label, progress)
            if not manifest.count:
                raise NoImagesError(
                    f"none of the {sum(s.rows for s in shards)} vector(s) in {label} is usable",
                    skipped,
                )
            if normalised:
                log.warning(
                    "%d of %d vector(s) in %s were not unit-norm (L2 norm off by more than "
                    "%g); they were normalised",
                    normalised,
                    manifest.count,
                    label,
                    UNIT_TOLERANCE,
                )
            _finish(stage, manifest, memory=memory, progress=progress)
            swap_into_place(stage, dest)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return ImportReport(
        index=_load(dest),
        added=manifest.count,
        skipped=skipped,
        shards=len(shards),
        normalised=normalised,
    )


def _write_shards(
    root: Path,
    manifest: IndexManifest,
    shards: list[EmbeddingShard],
    source: str,
    progress: ProgressCallback | None,
) -> tuple[list[SkippedFile], int]:
    """Write the unit vectors of every shard's usable rows as segments of ``root``
    (committing ``manifest`` after each); returns (rows skipped, vectors normalised)."""
    total = sum(s.rows for s in shards)
    skipped: list[SkippedFile] = []
    normalised = done = 0
    buffer = _SegmentBuffer(root, manifest, source)
    report(progress, 0, total, "importing vectors")
    for shard in shards:
        rows = _shard_metadata(shard)
        vectors = np.load(shard.vectors, mmap_mode="r")
        if vectors.dtype != np.float16:
            buffer.dtype = "float32"  # float16 segments only when every shard is float16
        for start in range(0, shard.rows, CHUNK_ROWS):
            block = np.array(vectors[start : start + CHUNK_ROWS], dtype=np.float64)  # a copy
            finite = np.asarray(np.isfinite(block).all(axis=1))
            block[~finite] = 0.0
            norms = np.sqrt(np.einsum("ij,ij->i", block, block))
            usable = finite & (norms > 1e-12)
            normalised += int(np.count_nonzero(usable & (np.abs(norms - 1.0) > UNIT_TOLERANCE)))
            buffer.add(
                (block[usable] / norms[usable, None]).astype(np.float32),
                rows.iloc[start : start + len(block)][usable],
            )
            for j in np.flatnonzero(~usable):
                reason = "vector has NaN or infinite values" if not finite[j] else "zero vector"
                path = str(rows["path"].iloc[start + j])
                skipped.append(SkippedFile(path, f"{reason} ({shard.name} row {start + j})"))
            done += len(block)
            report(progress, done, total, f"importing {shard.name}")
    manifest.skipped = [s.to_dict() for s in skipped]
    buffer.flush()
    return skipped, normalised


class _SegmentBuffer:
    """Collects imported rows and writes them as segments of :data:`SEGMENT_ROWS`."""

    def __init__(self, root: Path, manifest: IndexManifest, source: str):
        self.root, self.manifest, self.source = root, manifest, source
        self.vectors: list[np.ndarray] = []
        self.frames: list[pd.DataFrame] = []
        self.rows = 0
        self.dtype = "float16"

    def add(self, vectors: np.ndarray, frame: pd.DataFrame) -> None:
        self.vectors.append(vectors)
        self.frames.append(frame)
        self.rows += len(vectors)
        if self.rows >= SEGMENT_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            commit_manifest(self.root, self.manifest)
            return
        metadata = pd.concat(self.frames, ignore_index=True)
        first = self.manifest.count
        metadata.insert(0, "id", np.arange(first, first + len(metadata), dtype=np.int64))
        metadata["sha256"] = ""
        metadata["width"] = np.zeros(len(metadata), dtype=np.int64)
        metadata["height"] = np.zeros(len(metadata), dtype=np.int64)
        metadata["source"] = self.source
        columns = list(METADATA_COLUMNS)
        if URL_COLUMN in metadata.columns and metadata[URL_COLUMN].notna().any():
            columns.append(URL_COLUMN)
        info = write_segment(
            self.root, np.concatenate(self.vectors), metadata[columns], dtype=self.dtype
        )
        self.manifest.segments = [*self.manifest.segments, info.to_dict()]
        self.manifest.count += info.rows
        commit_manifest(self.root, self.manifest)
        self.vectors, self.frames, self.rows = [], [], 0


def _shard_metadata(shard: EmbeddingShard) -> pd.DataFrame:
    """A shard's path, caption and url (null where absent) as strings, in row order."""
    import pyarrow.parquet as pq

    names = set(pq.ParquetFile(shard.metadata).schema_arrow.names)
    wanted = [shard.path_column, *(c for c in ("caption", URL_COLUMN) if c in names)]
    table = pq.read_table(shard.metadata, columns=wanted).to_pandas()
    paths = [
        str(p) if isinstance(p, str) and p else f"{shard.name}#{i}"
        for i, p in enumerate(table[shard.path_column].tolist())
    ]
    captions = table["caption"].tolist() if "caption" in table else [""] * len(paths)
    urls = table[URL_COLUMN].tolist() if URL_COLUMN in table else [None] * len(paths)
    return pd.DataFrame(
        {
            "path": [display_path(p) for p in paths],
            "caption": [c if isinstance(c, str) else "" for c in captions],
            URL_COLUMN: pd.Series(
                [u if isinstance(u, str) and u else None for u in urls], dtype=object
            ),
        }
    )
