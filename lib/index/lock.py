"""One writer at a time: an OS file lock (``flock``) on ``.NAME.lock`` beside the index folder.

The lock file lives outside the folder so that it survives the folder being swapped; it
holds the writer's process id and is removed when the writer finishes. A writer that dies
releases the lock with its process. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from lib.index.errors import IndexLocked, IndexNotFound, IndexWriteError

log = logging.getLogger(__name__)


def lock_path(index_dir: str | os.PathLike[str]) -> Path:
    """The lock file of an index folder: ``.NAME.lock`` in its parent (outside the
    folder, so that it survives the folder being swapped)."""
    root = Path(index_dir).expanduser().resolve()
    return root.with_name(f".{root.name}.lock")


@contextlib.contextmanager
def writer_lock(
    index_dir: str | os.PathLike[str],
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the index's writer lock (``flock`` on :func:`lock_path`) for the block.

    Only one writer at a time, across processes and threads. When another holds it,
    ``on_wait`` (default: a log warning) is called once with "waiting for another
    writer of INDEX..." and the call blocks until the lock is free. The lock file
    holds the writer's process id and is removed when the block ends; a writer that
    dies releases the lock with its process. Yields the resolved index folder.

    Raises:
        IndexLocked: another writer holds the lock and ``wait`` is False.
        IndexNotFound: the folder's parent does not exist.
        IndexWriteError: the lock file cannot be created (read-only folder).
    """
    root = Path(index_dir).expanduser().resolve()
    path = lock_path(root)
    if not path.parent.is_dir():
        raise IndexNotFound(f"{root} is not a Replica index (its folder {path.parent} is missing)")
    notified = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise IndexWriteError(f"cannot create the lock file {path}: {exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                if not wait:
                    raise IndexLocked(
                        f"another writer{holder} is changing the index {root}; try again "
                        "once it has finished (without --no-wait the command waits for it)"
                    ) from None
                if not notified:
                    notified = True
                    (on_wait or log.warning)(f"waiting for another writer of {root}{holder}…")
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not _is_current_file(fd, path):
                # the previous holder removed the file as it finished: lock the new one
                os.close(fd)
                continue
        except BaseException:
            os.close(fd)
            raise
        break
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield root
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still locked: a waiter on this file will see it was removed
        os.close(fd)


def _lock_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
        return f" (process {pid})"
    return ""


def _is_current_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
