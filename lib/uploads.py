"""Uploaded zips of images, extracted safely into their own folder under the upload root.

    UPLOAD_ROOT/<slug>-<8 hex>/        one folder per upload, kept while an index uses it

Only image files (``lib.images.IMAGE_SUFFIXES``) and ``.txt`` caption sidecars are kept.
Entries that would land outside the folder (``../``, absolute names, drive letters),
symlinks, hidden files and ``__MACOSX`` metadata are skipped and reported. Archives
that would expand past a size or file-count budget, or that compress suspiciously well
(zip bombs), are refused before anything is written. Extraction goes to a hidden
``.<name>.partial`` folder that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from lib.app_config import UPLOAD_ROOT
from lib.images import IMAGE_SUFFIXES, SkippedFile
from lib.progress import ProgressCallback, report

log = logging.getLogger(__name__)

MAX_TOTAL_BYTES = 2 * 1024**3
"""Refuse archives whose kept files add up to more than this many uncompressed bytes."""
MAX_FILES = 100_000
"""Refuse archives with more entries than this."""
MAX_RATIO = 100
"""Refuse entries over :data:`RATIO_MIN_BYTES` that expand more than this many times."""
RATIO_MIN_BYTES = 1024 * 1024
KEEP_SUFFIXES = IMAGE_SUFFIXES | {".txt"}
"""Suffixes (lower case) extracted from an upload; everything else is skipped."""
PARTIAL_SUFFIX = ".partial"
STALE_PARTIAL_SECONDS = 24 * 3600
_CHUNK = 1024 * 1024


class UnsafeArchive(ValueError):
    """The archive is refused as a whole (zip bomb, too many files); nothing was written."""


class EmptyUpload(ValueError):
    """The archive holds no image; ``skipped`` says what was in it instead."""

    def __init__(self, message: str, skipped: list[SkippedFile] | None = None):
        super().__init__(message)
        self.skipped = skipped or []


@dataclass(frozen=True)
class ExtractedUpload:
    """An extracted upload: its folder, how many images landed there, and what was left out."""

    folder: Path
    images: int
    captions: int
    skipped: list[SkippedFile] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"extracted {self.images} image(s) and {self.captions} caption(s) to {self.folder}, "
            f"skipped {len(self.skipped)}"
        )


def extract_zip(
    source: str | os.PathLike[str] | IO[bytes],
    name: str = "upload",
    *,
    root: str | os.PathLike[str] = UPLOAD_ROOT,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_files: int = MAX_FILES,
    max_ratio: float = MAX_RATIO,
    progress: ProgressCallback | None = None,
) -> ExtractedUpload:
    """Extract the images of a zip into a new folder ``root/<slug of name>-<8 hex>``.

    Args:
        source: a zip file path or a binary file object (e.g. Streamlit's UploadedFile).
        name: the uploaded file name; its stem names the folder.
        max_total_bytes: budget for the kept files' uncompressed size (bytes).
        max_files: budget for the number of entries in the archive.
        max_ratio: largest uncompressed/compressed ratio for entries over 1 MiB.
        progress: called as progress(done, total, message) per kept file.

    Raises:
        ValueError: not a readable zip file.
        UnsafeArchive: over a budget; nothing is written.
        EmptyUpload: no image in it; nothing is kept.
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(base)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{name} is not a readable zip file ({exc}); upload a .zip") from exc
    with archive:
        keep, skipped = _plan(archive, max_total_bytes, max_files, max_ratio)
        n_images = sum(1 for _, rel in keep if rel.suffix.lower() in IMAGE_SUFFIXES)
        if n_images == 0:
            raise EmptyUpload(_empty_message(name, len(archive.infolist()), skipped), skipped)
        final = base / f"{slugify(name)}-{uuid.uuid4().hex[:8]}"
        partial = base / f".{final.name}{PARTIAL_SUFFIX}"
        try:
            partial.mkdir()
            for done, (info, rel) in enumerate(keep, start=1):
                _extract_member(archive, info, partial / rel)
                report(progress, done, len(keep), "extracting")
            os.rename(partial, final)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise ValueError(f"{name} is damaged or unsupported ({exc}); nothing was kept") from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return ExtractedUpload(final, n_images, len(keep) - n_images, skipped)


def remove_upload(
    folder: str | os.PathLike[str], root: str | os.PathLike[str] = UPLOAD_ROOT
) -> None:
    """Delete an extracted upload folder; refuses anything not directly under ``root``."""
    path = Path(folder).resolve()
    if path.parent != Path(root).resolve():
        raise PermissionError(f"{path} is not an upload folder under {root}; nothing deleted")
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def discard_on_failure(
    folder: str | os.PathLike[str] | None, root: str | os.PathLike[str] = UPLOAD_ROOT
) -> Iterator[None]:
    """Remove the upload ``folder`` if the block raises anything (errors, cancellation)."""
    try:
        yield
    except BaseException:
        if folder is not None:
            remove_upload(folder, root)
        raise


def slugify(name: str) -> str:
    """A folder-safe short name from an uploaded file name: ``"My Photos.zip" -> "my-photos"``."""
    stem = PurePosixPath(name.replace("\\", "/")).name
    stem = stem[: -len(".zip")] if stem.lower().endswith(".zip") else stem
    slug = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")
    return slug[:40] or "upload"


def _plan(
    archive: zipfile.ZipFile, max_total_bytes: int, max_files: int, max_ratio: float
) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]], list[SkippedFile]]:
    """Which entries to extract (with their safe relative paths) and which to skip, why."""
    infos = archive.infolist()
    if len(infos) > max_files:
        raise UnsafeArchive(
            f"the zip holds {len(infos):,} entries, more than the {max_files:,} allowed; "
            "split it into smaller zips"
        )
    keep: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    skipped: list[SkippedFile] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        rel, reason = _check_member(info)
        if rel is not None and rel.as_posix().lower() in seen:
            rel, reason = None, "duplicate name in the zip"
        if rel is None:
            skipped.append(SkippedFile(info.filename, reason))
            continue
        if info.file_size > RATIO_MIN_BYTES and info.file_size > max_ratio * max(
            info.compress_size, 1
        ):
            raise UnsafeArchive(
                f"{info.filename} expands {info.file_size / max(info.compress_size, 1):.0f} "
                f"times (more than {max_ratio:.0f}): refused as a possible zip bomb"
            )
        total += info.file_size
        if total > max_total_bytes:
            raise UnsafeArchive(
                f"the images in the zip add up to more than {max_total_bytes / 1024**3:.1f} GB "
                "uncompressed; split it into smaller zips"
            )
        seen.add(rel.as_posix().lower())
        keep.append((info, rel))
    return keep, skipped


def _check_member(info: zipfile.ZipInfo) -> tuple[PurePosixPath | None, str]:
    """The entry's safe relative path, or None and the reason it is skipped."""
    raw = info.filename.replace("\\", "/")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        return None, "absolute path (would be written outside the upload folder)"
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        return None, "path with '..' (would be written outside the upload folder)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return None, "symbolic link"
    if info.flag_bits & 0x1:
        return None, "encrypted"
    if not parts:
        return None, "empty name"
    if "__MACOSX" in parts:
        return None, "macOS metadata (__MACOSX)"
    if any(p.startswith(".") for p in parts):
        return None, "hidden file"
    rel = PurePosixPath(*parts)
    if rel.suffix.lower() not in KEEP_SUFFIXES:
        return None, f"not an image or caption ({rel.suffix or 'no suffix'})"
    return rel, ""


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """Stream one entry to ``dest``, never writing more than its declared size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as src, open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise UnsafeArchive(f"{info.filename} is larger than its header says; refused")
            out.write(chunk)


def _empty_message(name: str, n_entries: int, skipped: list[SkippedFile]) -> str:
    if n_entries == 0 or not skipped:
        return f"{name} holds no files; put image files in it"
    reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
    extensions = ", ".join(sorted(IMAGE_SUFFIXES))
    return f"{name} holds no image files ({extensions}). Left out: {reasons}"


def _remove_stale_partials(base: Path) -> None:
    """Delete half-extracted folders left by a process that died more than a day ago."""
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for path in base.glob(f".*{PARTIAL_SUFFIX}"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_mtime < cutoff:
                log.warning("removing a stale partial upload %s", path)
                shutil.rmtree(path, ignore_errors=True)
