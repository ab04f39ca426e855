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
sees a half-written segment. Every field of a manifest read is checked
(:meth:`IndexManifest.from_json`): a damaged one raises :class:`lib.index.errors.
ManifestError` naming the file and the field, and names of segments and of the
approximate index must stay inside their folders (:data:`SEGMENT_NAME`,
:data:`ANN_FILE`). Format 1 (``index.faiss`` + ``metadata.parquet`` +
``manifest.json`` in one folder) still opens; ``index upgrade`` converts it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lib.calibration import Calibration
from lib.index.errors import IndexWriteError, ManifestError
from lib.json_shape import ShapeError, check, check_depth, describe, fields_of
from lib.verdict.copy_tests import MAX_TESTS, CopyTest

INDEX_FORMAT = 2
"""The format every write produces."""
READABLE_FORMATS = (1, 2)
MANIFEST_FILE = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""A larger manifest.json is refused unread (a real one is a few hundred KB: the
calibration's null sample is its largest part)."""
SEGMENT_NAME = re.compile(r"seg-[0-9a-f]{1,64}")
"""The name of a segment folder under ``segments/``: what :func:`lib.index.segments.
write_segment` writes; nothing else (no ``/``, no ``..``) is read."""
ANN_FILE = re.compile(r"ann/ann-[0-9a-f]{1,64}\.faiss")
"""The manifest's ``ann.file``: a file directly under ``ann/``."""
VECTOR_DTYPES = ("float32", "float16")
"""How a segment may store its vectors."""
MAX_DIM = 65_536
MAX_ROWS = 2**40
"""Bounds on ``dim`` and on row counts: far above any real index, low enough that no
arithmetic on them overflows."""


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
    def from_json(cls, text: str, source: str = MANIFEST_FILE) -> IndexManifest:
        """The manifest in ``text``, every field checked (:func:`check_manifest`); keys
        this version does not know are ignored. ``source`` names the file in messages.

        Example:
            >>> IndexManifest.from_json("[]")
            Traceback (most recent call last):
            ...
            lib.index.errors.ManifestError: manifest.json must hold a JSON object, not a list

        Raises:
            ManifestError: not JSON, not an object, or a field missing, of the wrong type
                or out of range (the message names the file and the field).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{source} is not valid JSON: {exc}") from None
        except RecursionError:
            raise ManifestError(f"{source} is nested too deeply to be a manifest") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{source} must hold a JSON object, not {describe(data)}")
        try:
            check_depth(data, source)
            manifest = cls(**fields_of(cls, data, source))
            check_manifest(manifest, source)
        except ShapeError as exc:
            raise ManifestError(str(exc)) from None
        return manifest


def read_manifest(root: Path) -> IndexManifest:
    """The manifest of the index folder ``root``, every field checked.

    Raises:
        OSError: missing or unreadable (FileNotFoundError when there is none).
        ManifestError: too large, not UTF-8, or not a manifest (names file and field).
    """
    path = root / MANIFEST_FILE
    raw = read_regular(path, MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{path} is larger than {MAX_MANIFEST_BYTES // 2**20} MB: not a manifest"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path} is not UTF-8 text: {exc}") from None
    return IndexManifest.from_json(text, source=str(path))


def require_regular(path: Path) -> int:
    """The size in bytes of ``path`` when it is a regular file (a symlink to one counts).

    A FIFO, a device or a socket put where an index keeps a file would block a reader
    forever or stream without end; nothing is opened before this check.

    Raises:
        FileNotFoundError: it does not exist. OSError: it is not a regular file.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path} is not a regular file")
    return info.st_size


def read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file ``path``, opened without blocking (a
    FIFO swapped in after :func:`require_regular` is refused too).

    Raises:
        FileNotFoundError, OSError: as :func:`require_regular`.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_manifest(manifest: IndexManifest, source: str = MANIFEST_FILE) -> None:
    """Check what the field types do not say: ranges, the embedder's name, the
    calibration's fields, each segment (a plain ``seg-...`` name listed once, its rows
    and dtype), the approximate index (a file under ``ann/``, no more rows than the
    index) and a build's progress.

    Raises:
        ShapeError: the first problem found, naming ``source`` and the field.
    """
    _in_range(manifest.format, 1, 1_000, source, "format")
    _in_range(manifest.dim, 1, MAX_DIM, source, "dim")
    _in_range(manifest.count, 0, MAX_ROWS, source, "count")
    _in_range(manifest.generation, 0, 2**62, source, "generation")
    name = manifest.embedder.get("name")
    if not isinstance(name, str) or not name:
        raise ShapeError(source, f"embedder.name must be a non-empty string, not {describe(name)}")
    _check_calibration(manifest.calibration, source)
    for i, skipped in enumerate(manifest.skipped):
        for key in ("path", "reason"):
            if key not in skipped:
                raise ShapeError(source, f"skipped[{i}].{key} is missing")
    seen: set[str] = set()
    for i, segment in enumerate(manifest.segments):
        _check_segment(segment, source, f"segments[{i}]", seen)
    if manifest.ann is not None:
        _check_ann(manifest.ann, manifest.count, source)
    if manifest.build is not None:
        for key, kind in (("files", int), ("done", int), ("files_sha256", str), ("phase", str)):
            if key in manifest.build:
                check(manifest.build[key], kind, source, f"build.{key}")
                if kind is int:
                    _in_range(manifest.build[key], 0, MAX_ROWS, source, f"build.{key}")


def _check_calibration(calibration: dict[str, Any], source: str) -> None:
    """The calibration's fields have :class:`Calibration`'s types and usable values."""
    values = fields_of(Calibration, calibration, source, field="calibration")
    rate = values.get("false_alarm_rate", 0.02)
    if not 0.0 < rate < 1.0:
        raise ShapeError(
            source, f"calibration.false_alarm_rate must be between 0 and 1, not {rate}"
        )
    for key, low in (("bg_rank", 0), ("bg_width", 1), ("null_sample", 0), ("fitted_rows", 0)):
        if key in values:
            _in_range(values[key], low, MAX_ROWS, source, f"calibration.{key}")
    for key, value in values.items():  # a NaN threshold silently turns verdicts off
        numbers = (
            value.values()
            if isinstance(value, dict)
            else (value if isinstance(value, list) else [value])
        )
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number):
                raise ShapeError(source, f"calibration.{key} holds {number}, not a number")
    tests = values.get("copy_tests", [])
    if len(tests) > MAX_TESTS:
        raise ShapeError(source, f"calibration.copy_tests holds {len(tests):,} tests (at most "
                         f"{MAX_TESTS:,})")  # fmt: skip
    for i, test in enumerate(tests):
        problem = CopyTest(**test).problem()
        if problem:
            raise ShapeError(source, f"calibration.copy_tests[{i}]: {problem}")
    for key in ("null_quantiles", "raw_quantiles"):
        for level in values.get(key, {}):
            try:
                ok = 0.0 <= float(level) <= 1.0
            except ValueError:
                ok = False
            if not ok:
                raise ShapeError(source, f"calibration.{key}: {level!r} is not a level 0..1")


def _check_segment(segment: dict[str, Any], source: str, where: str, seen: set[str]) -> None:
    for key in ("name", "rows"):
        if key not in segment:
            raise ShapeError(source, f"{where}.{key} is missing")
    name = segment["name"]
    check(name, str, source, f"{where}.name")
    if not SEGMENT_NAME.fullmatch(name):
        raise ShapeError(
            source,
            f"{where}.name {name!r} is not a segment name (seg- and hex digits, a folder "
            "directly under segments/)",
        )
    if name in seen:
        raise ShapeError(source, f"{where}.name: segment {name} is listed twice")
    seen.add(name)
    check(segment["rows"], int, source, f"{where}.rows")
    _in_range(segment["rows"], 0, MAX_ROWS, source, f"{where}.rows")
    dtype = segment.get("dtype", "float32")
    if dtype not in VECTOR_DTYPES:
        raise ShapeError(
            source, f"{where}.dtype must be one of {', '.join(VECTOR_DTYPES)}, not {dtype!r}"
        )


def _check_ann(ann: dict[str, Any], count: int, source: str) -> None:
    """The approximate index's entry, as :mod:`lib.index.builder` writes it."""
    kinds = {"file": str, "rows": int, "factory": str, "nprobe": int, "memory": str | int}
    for key, kind in kinds.items():
        if key not in ann:
            raise ShapeError(source, f"ann.{key} is missing")
        check(ann[key], kind, source, f"ann.{key}")
    if not ANN_FILE.fullmatch(ann["file"]):
        raise ShapeError(
            source,
            f"ann.file {ann['file']!r} is not a file directly under ann/ (ann/ann-HEX.faiss)",
        )
    _in_range(ann["rows"], 0, count, source, "ann.rows")
    _in_range(ann["nprobe"], 1, 1 << 20, source, "ann.nprobe")


def _in_range(value: int, low: int, high: int, source: str, field: str) -> None:
    if not low <= value <= high:
        raise ShapeError(source, f"{field} must be between {low:,} and {high:,}, not {value:,}")


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
