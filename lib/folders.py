"""Replacing a folder as a whole: the one way Replica publishes a finished folder (an index
build, an exported model, a map, a benchmark)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename the complete folder ``tmp`` (a sibling of ``dest``) to ``dest``.

    An existing ``dest`` is first renamed aside to ``.NAME.old-XXXXXXXX`` and removed once
    ``tmp`` stands in its place; if that second rename fails, the old folder is put back
    and the error raised. A process killed between the two renames leaves the old folder
    under its ``.old-`` name (:func:`lib.index.store._restore_old` brings an index back).

    Raises:
        OSError: a rename failed; ``dest`` is as it was.
    """
    if not dest.exists():
        os.rename(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
