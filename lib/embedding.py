"""Embed many image files: decode in background threads while the model runs.

Decoding (Pillow releases the GIL) overlaps with inference (ONNX Runtime releases
it too). Decoded inputs are grouped by shape so that each model call gets a full
batch; results come back in input order. Bad files are skipped with a reason.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.embedders.base import Embedder, usable_cores
from lib.images import DEFAULT_MAX_PIXELS, ImageLoadError, SkippedFile, load_image, read_caption
from lib.progress import ProgressCallback, report

log = logging.getLogger(__name__)

PREFETCH_BATCHES = 4
"""Files submitted for decoding ahead of the model, in batches: enough decoded work to
fill every gap inference leaves on the cores (about 0.5 MB of uint8 input per file)."""


@dataclass(frozen=True)
class FileRecord:
    """Facts about one embedded file; becomes a row of an index's metadata table."""

    path: str
    sha256: str
    width: int
    height: int
    caption: str


@dataclass
class EmbeddedFiles:
    """Output of :func:`embed_files`.

    ``vectors``: (len(records), dim) float32, L2-normalised, row i for records[i].
    """

    vectors: np.ndarray
    records: list[FileRecord]
    skipped: list[SkippedFile]


def _load_and_prepare(
    path: Path, embedder: Embedder, max_pixels: int, skip_sha256: AbstractSet[str]
) -> tuple[FileRecord, np.ndarray | None]:
    loaded = load_image(path, max_pixels=max_pixels, draft_short_side=embedder.draft_short_side)
    record = FileRecord(
        path=str(path.resolve()),
        sha256=loaded.sha256,
        width=loaded.width,
        height=loaded.height,
        caption=read_caption(path),
    )
    if loaded.sha256 in skip_sha256:
        return record, None
    return record, embedder.prepare(loaded.image)


def embed_files(
    paths: Sequence[Path],
    embedder: Embedder,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    skip_sha256: AbstractSet[str] = frozenset(),
    dedupe: bool = True,
    progress: ProgressCallback | None = None,
) -> EmbeddedFiles:
    """Embed image files, skipping unreadable ones and files whose sha256 is in ``skip_sha256``.

    Args:
        paths: image files; order is kept in the output.
        embedder: from :func:`lib.embedders.create_embedder`.
        batch_size: images per model call.
        workers: decoding threads (default: 2, or 1 on a single core). They run beside
            the model's own threads; the ONNX embedders let their idle threads sleep, so
            decoding fills the cores whenever inference leaves one free.
        skip_sha256: content hashes to leave out (already indexed); duplicates within
            ``paths`` are embedded once, the later copies are skipped with a reason
            (unless ``dedupe`` is False).
        progress: called as progress(done, total, message) after each file.

    Returns:
        vectors (n_ok, dim) float32 L2-normalised, one record per vector, skipped files.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = len(paths)
    workers = workers or min(2, usable_cores())
    slots: list[tuple[FileRecord, np.ndarray | None] | None] = [None] * total
    skipped: list[SkippedFile] = []
    seen: dict[str, str] = {}
    pending: dict[tuple[int, ...], list[int]] = {}
    prepared: dict[int, np.ndarray] = {}
    vectors: dict[int, np.ndarray] = {}

    def run_batch(indices: list[int]) -> None:
        batch = np.stack([prepared.pop(i) for i in indices])
        for i, vec in zip(indices, embedder.embed_prepared(batch), strict=True):
            vectors[i] = vec

    window = max(PREFETCH_BATCHES * batch_size, 8)  # files decoded or decoding ahead
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        queue: deque[tuple[int, Future[tuple[FileRecord, np.ndarray | None]]]] = deque()
        next_index = 0
        while next_index < total or queue:
            while next_index < total and len(queue) < window:
                fut = pool.submit(
                    _load_and_prepare, paths[next_index], embedder, max_pixels, skip_sha256
                )
                queue.append((next_index, fut))
                next_index += 1
            i, fut = queue.popleft()
            try:
                record, arr = fut.result()
            except ImageLoadError as exc:
                skipped.append(SkippedFile(str(paths[i]), exc.reason))
            except Exception as exc:
                log.warning("unexpected error on %s", paths[i], exc_info=True)
                skipped.append(SkippedFile(str(paths[i]), f"unexpected error: {exc}"))
            else:
                if arr is None:
                    skipped.append(SkippedFile(record.path, "already in the index (same sha256)"))
                elif dedupe and record.sha256 in seen:
                    skipped.append(
                        SkippedFile(
                            record.path, f"duplicate of {seen[record.sha256]} (same sha256)"
                        )
                    )
                else:
                    seen[record.sha256] = record.path
                    slots[i] = (record, None)
                    prepared[i] = arr
                    bucket = pending.setdefault(arr.shape, [])
                    bucket.append(i)
                    if len(bucket) >= batch_size:
                        run_batch(pending.pop(arr.shape))
            done += 1
            report(progress, done, total, f"{len(skipped)} skipped" if skipped else "")
        for indices in pending.values():
            for start in range(0, len(indices), batch_size):
                run_batch(indices[start : start + batch_size])

    order = [i for i in range(total) if slots[i] is not None]
    records = [slots[i][0] for i in order]  # type: ignore[index]
    matrix = (
        np.stack([vectors[i] for i in order]).astype(np.float32)
        if order
        else np.zeros((0, embedder.dim), np.float32)
    )
    return EmbeddedFiles(vectors=matrix, records=records, skipped=skipped)
