"""Embed image files on a Ray cluster (or a local Ray): the ``--engine ray`` of index builds.

Ray Data sends the file paths to a pool of actors, each holding one embedder (one ONNX
session) created once; each actor decodes and embeds its batches exactly as the local
engine does (:func:`lib.embedding.embed_files`), and sends back per file its facts and
its vector (2 KB for SSCD). Results stream back to the driver in input order, one slice
at a time, so memory stays flat and the driver can write and commit as they arrive.

Images must be readable at the same path on every node (shared storage). Paths cross
the Ray boundary as bytes (``os.fsencode``), so names that are not valid UTF-8 survive.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lib.embedding import EmbeddedFiles, FileRecord, embed_files
from lib.images import SkippedFile
from lib.index.errors import IndexError_
from lib.progress import ProgressCallback, report

log = logging.getLogger(__name__)

RAY_REQUIREMENT = "ray[data]==2.60.0"
"""What ``--engine ray`` needs installed (on the driver and on every node); pinned in
requirements.txt."""


CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for a cluster's address to answer before saying it cannot be reached."""


class RayEngineError(IndexError_):
    """Ray is missing, or the cluster cannot be reached or failed; says what to do."""


class _EmbedActor:
    """One actor of the pool: creates its embedder once, embeds batches of paths.

    A batch is ``{"index": (n,) int64, "path": (n,) bytes}``; the answer has, per file,
    ``ok`` (bool), ``path``/``reason`` (bytes, ``os.fsencode``), ``sha256``, ``caption``,
    ``width``, ``height`` and ``vector`` ((n, dim) float32; zeros where not ok).
    """

    def __init__(self, embedder: str, weights: str | None, batch_size: int) -> None:
        from lib.embedders import create_embedder

        # one inference thread and one decoding thread per actor: the actor pool, not
        # ONNX Runtime, spreads the work over the cores (one actor per CPU Ray gives it)
        self.embedder = create_embedder(embedder, weights=weights, threads=1)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(os.fsdecode(bytes(b))) for b in batch["path"]]
        result = embed_files(
            paths, self.embedder, batch_size=self.batch_size, workers=1, dedupe=False
        )
        n, dim = len(paths), self.embedder.dim
        out: dict[str, Any] = {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "ok": np.zeros(n, dtype=bool),
            "path": [b""] * n,
            "reason": [b""] * n,
            "sha256": [""] * n,
            "caption": [""] * n,
            "width": np.zeros(n, dtype=np.int64),
            "height": np.zeros(n, dtype=np.int64),
            "vector": np.zeros((n, dim), dtype=np.float32),
        }
        # embed_files keeps input order in records and in skipped, and (dedupe=False, no
        # skip_sha256) puts every path in exactly one of them: merge the two back
        skipped, records = iter(result.skipped), iter(enumerate(result.records))
        next_skip = next(skipped, None)
        for i, path in enumerate(paths):
            if next_skip is not None and next_skip.path == str(path):
                out["path"][i] = os.fsencode(next_skip.path)
                out["reason"][i] = os.fsencode(next_skip.reason)
                next_skip = next(skipped, None)
                continue
            row, record = next(records)
            out["ok"][i] = True
            out["path"][i] = os.fsencode(record.path)
            out["sha256"][i] = record.sha256
            out["caption"][i] = record.caption
            out["width"][i], out["height"][i] = record.width, record.height
            out["vector"][i] = result.vectors[row]
        for key in ("path", "reason", "sha256", "caption"):
            out[key] = np.array(out[key], dtype=object)
        return out


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # without the [data] extra, its dependencies are missing
    except ImportError as exc:
        raise RayEngineError(
            f"--engine ray needs Ray Data: pip install '{RAY_REQUIREMENT}' "
            "(it is in requirements.txt; install it on every node of the cluster too)"
        ) from exc
    return ray


def _start_ray(ray: Any, address: str | None, workers: int | None) -> bool:
    """Start a local Ray (address None) or connect to a cluster; True if this call did so
    (and so must shut it down), False when Ray was already initialised in this process."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address is None:
        from lib.embedders.base import usable_cores

        # "local": a new Ray of our own, even where RAY_ADDRESS names a cluster
        # (and quieter: its token-authentication notice is about clusters others join)
        ray.init(
            address="local",
            num_cpus=workers or usable_cores(),
            **quiet | {"logging_level": logging.ERROR},
        )
        return True
    try:
        if address != "auto":
            _check_reachable(address)  # ray.init would retry an unreachable one for minutes
        # a cluster's workers run elsewhere, or from another folder: ship them this
        # package (the libraries it imports must be installed on every node)
        lib_dir = str(Path(__file__).resolve().parents[1])
        ray.init(address=address, runtime_env={"py_modules": [lib_dir]}, **quiet)
    except (OSError, RuntimeError, ValueError) as exc:  # ConnectionError is an OSError
        raise RayEngineError(
            f"cannot reach the Ray cluster at {address!r} ({exc}); start one with "
            "`ray start --head` (then `ray start --address=HEAD:6379` on each other node) "
            "and pass --address auto on a node of it, or HEAD:6379 from elsewhere"
        ) from exc
    return True


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise OSError (or ValueError) unless something listens at ``HOST:PORT``."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("the address must be auto or HOST:PORT")
    socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()


@contextmanager
def _data_context() -> Iterator[None]:
    """Ray Data settings for one run, restored after: input order kept, no progress bars
    or execution logs of its own (the caller's progress callback reports)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    data_log = logging.getLogger("ray.data")
    saved = (
        context.execution_options.preserve_order,
        context.enable_progress_bars,
        context.print_on_execution_start,
        data_log.level,
    )
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    data_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        (
            context.execution_options.preserve_order,
            context.enable_progress_bars,
            context.print_on_execution_start,
        ) = saved[:3]
        data_log.setLevel(saved[3])


def _pool_size(ray: Any, workers: int | None) -> int:
    if workers is not None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        return workers
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


MAX_BLOCK_FILES = 1024
"""Files per Ray block at most: a block is the unit an actor takes and the driver receives
(one yielded slice, 2 MB of SSCD vectors)."""


def _block_files(total: int, pool: int, batch_size: int) -> int:
    """Files per block: whole model batches, at most MAX_BLOCK_FILES, and small enough
    that every actor gets several blocks (so that none waits while another finishes);
    fewer than a batch when there are too few files to keep every actor busy."""
    per_actor = -(-total // (4 * pool))
    if per_actor < batch_size:
        return per_actor
    return min(MAX_BLOCK_FILES, per_actor) // batch_size * batch_size


def _to_embedded(
    batch: dict[str, np.ndarray], paths: Sequence[Path], start: int, dim: int
) -> EmbeddedFiles:
    """One streamed batch (the slice of ``paths`` from ``start``) as EmbeddedFiles."""
    index = np.asarray(batch["index"])
    if index.tolist() != list(range(start, start + len(index))):
        raise RayEngineError(
            f"Ray returned files out of order (expected from #{start}, got "
            f"#{int(index[0]) if len(index) else '-'}); this is a bug, please report it"
        )
    ok = np.asarray(batch["ok"], dtype=bool)
    records: list[FileRecord] = []
    skipped: list[SkippedFile] = []
    for j in range(len(index)):
        if ok[j]:
            records.append(
                FileRecord(
                    path=os.fsdecode(bytes(batch["path"][j])),
                    sha256=str(batch["sha256"][j]),
                    width=int(batch["width"][j]),
                    height=int(batch["height"][j]),
                    caption=str(batch["caption"][j]),
                )
            )
        else:
            reason = os.fsdecode(bytes(batch["reason"][j]))
            skipped.append(SkippedFile(str(paths[start + j]), reason))
    vectors = np.asarray(batch["vector"], dtype=np.float32).reshape(len(index), dim)[ok]
    return EmbeddedFiles(vectors=np.ascontiguousarray(vectors), records=records, skipped=skipped)


def embed_files_ray(
    paths: Sequence[Path],
    embedder: str,
    *,
    weights: str | None = None,
    batch_size: int = 32,
    address: str | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> Iterator[EmbeddedFiles]:
    """Embed image files with a Ray actor pool; yields results slice by slice, in order.

    Args:
        paths: image files, readable at the same path on every node.
        embedder: registry name (:func:`lib.embedders.create_embedder`); each actor
            creates its own.
        weights: local weights file for ``timm:`` embedders (same path on every node).
        batch_size: files per actor call and per model call.
        address: None starts a local Ray with ``workers`` CPUs (all usable cores by
            default); ``"auto"`` or ``"HOST:PORT"`` connects to a running cluster.
            If Ray is already initialised in this process, it is used as it is.
        workers: actors in the pool, one ONNX session each (default: one per CPU of the
            cluster).
        progress: called as progress(done, total, message) as slices arrive.

    Yields:
        :class:`EmbeddedFiles` for consecutive slices of ``paths``: every path of a
        slice appears once, as a record (with its vector row, (n, dim) float32,
        L2-normalised) or as a skipped file with its reason; no de-duplication by sha256.
        The vectors mean what :func:`lib.embedding.embed_files` would give.

    Raises:
        RayEngineError: Ray is not installed, the cluster cannot be reached, or it failed.

    Ray is shut down when the generator finishes or is closed, if this call started it.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = len(paths)
    if total == 0:
        return
    ray = _import_ray()
    from lib.embedders import create_embedder

    dim = create_embedder(embedder, weights=weights, threads=1).dim  # fails early, no model
    started = _start_ray(ray, address, workers)
    remote_args: dict[str, Any] = {"num_cpus": 1}
    try:
        actor_args = (embedder, weights, batch_size)
        yield from _stream(ray, paths, actor_args, workers, dim, remote_args, progress)
    finally:
        if started:
            ray.shutdown()


def _stream(
    ray: Any,
    paths: Sequence[Path],
    actor_args: tuple[str, str | None, int],
    workers: int | None,
    dim: int,
    remote_args: dict[str, Any],
    progress: ProgressCallback | None,
) -> Iterator[EmbeddedFiles]:
    """Run the Ray Data job and convert its batches; ``actor_args`` are
    ``(embedder, weights, batch_size)`` for :class:`_EmbedActor`."""
    from ray.data import ActorPoolStrategy

    total, done, n_skipped = len(paths), 0, 0
    pool = _pool_size(ray, workers)
    batch_size = actor_args[2]
    block = _block_files(total, pool, batch_size)
    # absolute (not resolved: the actor resolves, as the local engine does) so that the
    # actors' working directory does not matter
    items = [
        {"index": i, "path": os.fsencode(os.path.join(os.getcwd(), p))} for i, p in enumerate(paths)
    ]
    try:
        with _data_context():  # a dataset keeps the context current at its creation
            dataset = ray.data.from_items(
                items, override_num_blocks=-(-total // block)
            ).map_batches(
                _EmbedActor,
                fn_constructor_args=actor_args,
                batch_size=min(batch_size, block),
                batch_format="numpy",
                compute=ActorPoolStrategy(size=pool),
                **remote_args,
            )
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                result = _to_embedded(batch, paths, done, dim)
                done += len(result.records) + len(result.skipped)
                n_skipped += len(result.skipped)
                report(progress, done, total, f"{n_skipped} skipped" if n_skipped else "")
                yield result
    except ray.exceptions.RayError as exc:
        raise RayEngineError(f"the Ray embedding job failed: {exc}") from exc
    if done != total:
        raise RayEngineError(f"Ray returned {done} of {total} files; this is a bug")
