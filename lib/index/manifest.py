"""What an index is: ``manifest.json``, and the one way an index changes (a commit).

Format 2 (written by every write since this module exists)::

    INDEX_DIR/
      manifest.json                 this manifest: embedder, dim, count, calibration, the
                                    live segments in row order, the approximate index
      segments/seg-XXXXXXXXXXXX/    immutable: vectors.npy (rows, dim) float32 or float16,
                                    memory-mapped; metadata.parquet, row i for vector i
      ann/ann-GGGGGG.faiss          optional: FAISS IVF index over the first ``ann.rows`` rows

A writer adds files that no manifest names yet, then commits a new manifest by atomic
rename (:func:`commit_manifest`); files the new manifest no longer names are removed only
after the commit. A reader opens the snapshot named by the manifest it read, so it never
sees a half-written segment. Format 1 (``index.faiss`` + ``metadata.parquet`` +
``manifest.json`` in one folder) still opens; ``index upgrade`` converts it.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lib.index.errors import IndexWriteError

INDEX_FORMAT = 2
"""The format every write produces."""
READABLE_FORMATS = (1, 2)
MANIFEST_FILE = "manifest.json"


@dataclass
class IndexManifest:
    """The content of manifest.json.

    ``segments``: format 2's live segments in row order, each ``{"name", "rows", "dtype"}``.
    ``ann``: the approximate index, ``{"file", "factory", "rows", "nprobe", "memory"}``,
    covering rows ``0 .. rows-1``; the rows after it are searched exactly. None: all exact.
    ``build``: only in a build's staging folder: what is done, so that ``--resume`` can
    go on from the last committed segment.
    """

    embedder: dict[str, Any]
    dim: int
    count: int
    calibration: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    metric: str = "inner_product"
    faiss_type: str = "IndexFlatIP"
    created: str = ""
    updated: str = ""
    """When the indexed images last changed (a recalibration does not change it)."""
    calibrated: str = ""
    """When the calibration was last refitted by ``index calibrate`` ("" : at build)."""
    versions: dict[str, str] = field(default_factory=dict)
    format: int = 1
    segments: list[dict[str, Any]] = field(default_factory=list)
    ann: dict[str, Any] | None = None
    generation: int = 0
    build: dict[str, Any] | None = None

    @property
    def embedder_name(self) -> str:
        return str(self.embedder["name"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> IndexManifest:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_manifest(root: Path) -> IndexManifest:
    """The manifest of the index folder ``root``.

    Raises:
        OSError: unreadable; ValueError, TypeError: not a manifest.
    """
    return IndexManifest.from_json((root / MANIFEST_FILE).read_text(encoding="utf-8"))


def commit_manifest(root: Path, manifest: IndexManifest) -> None:
    """Make ``manifest`` the index's state: write it beside the current one, flush it to
    disk, then rename it over ``manifest.json`` (atomic on POSIX). Increments
    ``manifest.generation``. The caller holds the writer lock.

    Raises:
        IndexWriteError: the write failed (disk full, permissions); the previous
            manifest, and so the index, is unchanged.
    """
    manifest.generation += 1
    target = root / MANIFEST_FILE
    tmp = target.with_name(f".{MANIFEST_FILE}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(manifest.to_json(), encoding="utf-8")
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(root)
    except OSError as exc:
        manifest.generation -= 1
        tmp.unlink(missing_ok=True)
        raise IndexWriteError(f"could not write {target}: {exc}; the index is unchanged") from exc


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
