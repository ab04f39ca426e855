"""Uploads: zips of images extracted safely into their own folder under the upload root,
and loose images saved for one measurement in a private temporary folder.

    UPLOAD_ROOT/<slug>-<8 hex>/                  one folder per zip, kept while an index uses it
    $TMPDIR/replica-uploads-<uid>/set-<16 hex>/  loose uploads, swept after a set age

Only image files (``lib.images.IMAGE_SUFFIXES``) and ``.txt`` caption sidecars are kept.
Entries that would land outside the folder (``../``, absolute names, drive letters),
symlinks, hidden files, ``__MACOSX`` metadata and entries compressed with anything but
deflate (bzip2 and LZMA would be decompressed a whole read at a time) are skipped and
reported. Before anything is written, an archive is refused when its kept files would
expand past the per-zip limit, past what the session may still store (an
:class:`UploadLedger`), or past the disk space that must stay free, and when it expands
suspiciously well, as a whole or per entry (zip bombs); all are judged from the central
directory and the archive's real size, and enforced again on the bytes written, since
headers can lie. Extraction goes to a hidden ``.<name>.partial`` folder that is renamed
into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from lib.app_config import (
    UPLOAD_MIN_FREE_BYTES,
    UPLOAD_ROOT,
    UPLOAD_SESSION_BYTES,
    UPLOAD_TEMP_HOURS,
    UPLOAD_ZIP_BYTES,
)
from lib.images import IMAGE_SUFFIXES, SkippedFile
from lib.progress import ProgressCallback, report

log = logging.getLogger(__name__)

MAX_FILES = 100_000
FILE_CHARGE = 4096
"""Bytes every extracted file is charged at least (a file takes a disk block and an
inode whatever its size): 100,000 empty entries cost 400 MB of allowance, not 0."""


def on_disk(size: int) -> int:
    """What a file of ``size`` bytes is charged against the upload limits."""
    return max(int(size), FILE_CHARGE)


"""Refuse archives with more entries than this."""
MAX_RATIO = 100
"""Refuse archives, or entries over :data:`RATIO_MIN_BYTES`, that expand more than this
many times: the kept files' declared sizes against the archive's real size, and an
entry's against its compressed size."""
RATIO_MIN_BYTES = 1024 * 1024
ACCEPTED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
"""Compression methods extracted; Python decompresses others (bzip2, LZMA) a whole read
at a time, so that a lying header could make one read expand without bound."""
KEEP_SUFFIXES = IMAGE_SUFFIXES | {".txt"}
"""Suffixes (lower case) extracted from an upload; everything else is skipped."""
TEMP_FOLDER_PREFIX = "replica-uploads-"
"""Loose uploads go to ``$TMPDIR/replica-uploads-<uid>/`` (private to the app's user)."""
SET_NAME = re.compile(r"^set-[0-9a-f]{16}(\.[0-9a-f]{6})?$")
"""Names of the upload sets (and their staging folders) in that folder; the age sweep
deletes nothing else."""
LEGACY_SET_NAME = re.compile(r"^replica-upload-[0-9a-f]{16}(\.[0-9a-f]{6})?$")
"""Sets written straight into ``$TMPDIR`` by earlier versions; swept the same way."""
PARTIAL_SUFFIX = ".partial"
STALE_PARTIAL_SECONDS = 24 * 3600
_CHUNK = 1024 * 1024


class UnsafeArchive(ValueError):
    """The archive is refused as a whole (zip bomb, too many files); nothing was written."""


class UploadLimitExceeded(UnsafeArchive):
    """The upload would go over the session's allowance or the disk's free-space reserve;
    nothing was written. The message says the limit and what to do."""


@dataclass
class UploadLedger:
    """Bytes one session (one user in the app) has stored in uploads, against its limit.

    Keep one per session (:func:`session_ledger`) and pass it to :func:`extract_zip` and
    :func:`save_uploads`, which refuse an upload that does not fit in :meth:`remaining`
    and record what they write. An upload folder that has since been deleted no longer
    counts.

    Example:
        >>> ledger = UploadLedger(limit_bytes=2 * 1024**3)
        >>> extract_zip("photos.zip", ledger=ledger).folder
        >>> ledger.used()
        52428800
    """

    limit_bytes: int = UPLOAD_SESSION_BYTES
    stored: dict[str, int] = field(default_factory=dict)
    """upload folder (str) -> bytes written to it"""

    def used(self) -> int:
        """Bytes in this session's upload folders that still exist."""
        return sum(n for folder, n in self.stored.items() if os.path.isdir(folder))

    def remaining(self) -> int:
        """Bytes this session may still store (0 when over its limit)."""
        return max(0, self.limit_bytes - self.used())

    def check(self, incoming: int, what: str) -> None:
        """Refuse ``incoming`` more bytes (``what``: "this zip", "these images") when they
        do not fit.

        Raises:
            UploadLimitExceeded: with the session's use, its limit and what to do.
        """
        if incoming > self.remaining():
            raise UploadLimitExceeded(
                f"{what} would store {format_bytes(incoming)}, but this session has already "
                f"stored {format_bytes(self.used())} of the {format_bytes(self.limit_bytes)} "
                "one session may upload (upload_session_bytes in replica.toml); work with "
                "the images already uploaded, or ask the administrator to raise the limit"
            )

    def record(self, folder: str | os.PathLike[str], n_bytes: int) -> None:
        """Count ``n_bytes`` written to ``folder`` (a folder counted before is replaced)."""
        self.stored[str(folder)] = n_bytes


LEDGER_KEY = "upload_ledger"
"""Key of the session's :class:`UploadLedger` in a session-state mapping."""


def session_ledger(state: MutableMapping[str, Any], limit_bytes: int) -> UploadLedger:
    """The session's ledger kept in ``state`` (Streamlit's ``st.session_state``), created on
    first use; ``limit_bytes`` (from the app config) always applies."""
    ledger = state.get(LEDGER_KEY)
    if not isinstance(ledger, UploadLedger):
        ledger = UploadLedger(limit_bytes)
        state[LEDGER_KEY] = ledger
    ledger.limit_bytes = limit_bytes
    return ledger


def format_bytes(n: int) -> str:
    """``1536 * 1024**2 -> "1.5 GiB"``; ``"320 MiB"``; ``"12 KiB"``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{n} bytes"


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
    max_total_bytes: int = UPLOAD_ZIP_BYTES,
    max_files: int = MAX_FILES,
    max_ratio: float = MAX_RATIO,
    ledger: UploadLedger | None = None,
    min_free_bytes: int = UPLOAD_MIN_FREE_BYTES,
    progress: ProgressCallback | None = None,
) -> ExtractedUpload:
    """Extract the images of a zip into a new folder ``root/<slug of name>-<8 hex>``.

    Args:
        source: a zip file path or a seekable binary file object (Streamlit's UploadedFile).
        name: the uploaded file name; its stem names the folder.
        max_total_bytes: limit on the kept files' uncompressed size for this zip (bytes).
        max_files: limit on the number of entries in the archive.
        max_ratio: largest expansion, kept bytes over the archive's size (when they are over
            1 MiB), and uncompressed over compressed size for each entry over 1 MiB.
        ledger: the session's uploads so far; the zip must fit in what it has left, and
            is recorded in it. None: no session limit.
        min_free_bytes: bytes that must stay free on ``root``'s disk after extraction.
        progress: called as progress(done, total, message) per kept file.

    Raises:
        ValueError: not a readable zip file, or damaged.
        UnsafeArchive: over a limit or a likely zip bomb (:class:`UploadLimitExceeded` for
            the session's allowance and the disk); nothing is written.
        EmptyUpload: no image in it; nothing is kept.

    Example:
        >>> ledger = UploadLedger(limit_bytes=2 * 1024**3)
        >>> extract_zip("photos.zip", "photos.zip", root="data/uploads", ledger=ledger).summary()
        'extracted 120 image(s) and 120 caption(s) to data/uploads/photos-1a2b3c4d, skipped 0'
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(base)
    size = _archive_size(source)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{name} is not a readable zip file ({exc}); upload a .zip") from exc
    with archive:
        keep, skipped = _plan(archive, max_total_bytes, max_files, max_ratio)
        n_images = sum(1 for _, rel in keep if rel.suffix.lower() in IMAGE_SUFFIXES)
        if n_images == 0:
            raise EmptyUpload(_empty_message(name, len(archive.infolist()), skipped), skipped)
        total = sum(info.file_size for info, _ in keep)
        _check_expansion(total, size, max_ratio)
        charged = sum(on_disk(info.file_size) for info, _ in keep)
        _check_room(base, charged, "this zip", ledger, min_free_bytes)
        final = base / f"{slugify(name)}-{uuid.uuid4().hex[:8]}"
        partial = base / f".{final.name}{PARTIAL_SUFFIX}"
        try:
            partial.mkdir()
            budget = _Budget(total)
            for done, (info, rel) in enumerate(keep, start=1):
                _extract_member(archive, info, partial / rel, budget)
                report(progress, done, len(keep), "extracting")
            os.rename(partial, final)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise ValueError(f"{name} is damaged or unsupported ({exc}); nothing was kept") from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    if ledger is not None:
        ledger.record(final, charged)
    return ExtractedUpload(final, n_images, len(keep) - n_images, skipped)


def _archive_size(source: str | os.PathLike[str] | IO[bytes]) -> int:
    """The zip's real size in bytes (a file object is left at its start)."""
    if isinstance(source, str | os.PathLike):
        try:
            return os.stat(source).st_size
        except OSError:
            return 0  # zipfile says why it cannot be read
    end = source.seek(0, os.SEEK_END)
    source.seek(0)
    return end


def _check_expansion(total: int, archive_size: int, max_ratio: float) -> None:
    """Refuse kept files that declare far more bytes than the whole archive holds: many
    small entries of zeros, each under the per-entry check, or compressed sizes that lie."""
    if total > RATIO_MIN_BYTES and total > max_ratio * max(archive_size, 1):
        raise UnsafeArchive(
            f"the zip ({format_bytes(archive_size)}) would expand to {format_bytes(total)}, "
            f"{total / max(archive_size, 1):,.0f} times its size (more than {max_ratio:.0f}): "
            "refused as a possible zip bomb (images rarely compress more than a few times); "
            "convert uncompressed images such as BMP to PNG before zipping them"
        )


def _check_room(
    base: Path, incoming: int, what: str, ledger: UploadLedger | None, min_free_bytes: int
) -> None:
    """Refuse ``incoming`` bytes that do not fit in the session's allowance or would leave
    less than ``min_free_bytes`` free on ``base``'s disk.

    Raises:
        UploadLimitExceeded: with the limit and what to do.
    """
    if ledger is not None:
        ledger.check(incoming, what)
    free = shutil.disk_usage(base).free
    if free - incoming < min_free_bytes:
        raise UploadLimitExceeded(
            f"{what} would store {format_bytes(incoming)}, but the server has only "
            f"{format_bytes(free)} of disk free and keeps {format_bytes(min_free_bytes)} "
            "free (upload_min_free_bytes in replica.toml); upload fewer images, or ask the "
            "administrator to free disk space"
        )


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


def save_uploads(
    files: Sequence[tuple[str, bytes]],
    *,
    root: str | os.PathLike[str] | None = None,
    ledger: UploadLedger | None = None,
    max_age_hours: float = UPLOAD_TEMP_HOURS,
    min_free_bytes: int = UPLOAD_MIN_FREE_BYTES,
) -> Path:
    """Write uploaded files (name, bytes) once into ``root/set-<16 hex of their content>``
    as ``0000_<name>``, ``0001_<name>``, ...; the same files give the same folder, so a
    rerun does not look like new inputs. Sets older than ``max_age_hours`` are deleted
    first (:func:`sweep_temp_uploads`); a set in use is kept fresh by each call.

    Args:
        root: where sets go; default :func:`temp_upload_root` (then sets left in
            ``$TMPDIR`` by earlier versions are swept too).
        ledger: the session's uploads; a new set must fit in it and is recorded.
        min_free_bytes: bytes that must stay free on ``root``'s disk.

    Raises:
        UploadLimitExceeded: over the session's allowance or the disk's reserve.
        PermissionError: ``root`` is a symbolic link or another user's folder.

    Example:
        >>> save_uploads([("cat.png", data)], ledger=UploadLedger())
        PosixPath('/tmp/replica-uploads-1000/set-3f2a...')
    """
    base = Path(root) if root is not None else temp_upload_root()
    _private_folder(base)
    sweep_temp_uploads(base, max_age_hours)
    if root is None:
        sweep_temp_uploads(base.parent, max_age_hours, names=LEGACY_SET_NAME)
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0" + data)
    folder = base / f"set-{digest.hexdigest()[:16]}"
    if folder.is_dir():
        os.utime(folder)  # in use: the sweep measures age from here
        return folder
    total = sum(len(data) for _, data in files)
    _check_room(base, total, "these images", ledger, min_free_bytes)
    staging = base / f"{folder.name}.{uuid.uuid4().hex[:6]}"
    staging.mkdir()
    try:
        for i, (name, data) in enumerate(files):
            (staging / _numbered_name(i, name)).write_bytes(data)
        os.rename(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.is_dir():  # not a race with another session writing the same files
            raise
    if ledger is not None:
        ledger.record(folder, total)
    return folder


def temp_upload_root() -> Path:
    """``$TMPDIR/replica-uploads-<uid>``: where :func:`save_uploads` writes by default."""
    uid = getattr(os, "getuid", lambda: 0)()
    return Path(tempfile.gettempdir()) / f"{TEMP_FOLDER_PREFIX}{uid}"


def sweep_temp_uploads(
    folder: str | os.PathLike[str],
    max_age_hours: float = UPLOAD_TEMP_HOURS,
    *,
    names: re.Pattern[str] = SET_NAME,
    now: float | None = None,
) -> list[Path]:
    """Delete the upload sets in ``folder`` not modified for ``max_age_hours``: only
    folders (never symbolic links) whose name matches ``names`` and that this user owns.

    Returns:
        The folders deleted.
    """
    cutoff = (time.time() if now is None else now) - max_age_hours * 3600
    uid = getattr(os, "getuid", lambda: None)()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not names.match(entry.name):
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            mine = uid is None or info.st_uid == uid
            if stat.S_ISDIR(info.st_mode) and mine and info.st_mtime < cutoff:
                shutil.rmtree(entry.path)
                removed.append(Path(entry.path))
    if removed:
        log.info(
            "removed %d upload set(s) older than %g h from %s", len(removed), max_age_hours, folder
        )
    return removed


def _private_folder(base: Path) -> None:
    """Create ``base`` for this user only (0700), refusing a link or another user's folder."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(base)
    uid = getattr(os, "getuid", lambda: info.st_uid)()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise PermissionError(
            f"{base} is a link or belongs to another user; refusing to store uploads there"
        )
    if info.st_mode & 0o077:
        os.chmod(base, 0o700)


def _numbered_name(i: int, name: str) -> str:
    """``0003_<name>``: the browser's file name without folders, at most 200 bytes."""
    leaf = re.split(r"[\\/]", name)[-1].replace("\0", "")
    stem, suffix = os.path.splitext(leaf)
    stem = stem.encode("utf-8", "surrogateescape")[:160].decode("utf-8", "ignore")
    return f"{i:04d}_{stem}{suffix[:16]}"


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
        total += on_disk(info.file_size)
        if total > max_total_bytes:
            raise UnsafeArchive(
                f"the images in the zip add up to more than the {format_bytes(max_total_bytes)} "
                "one zip may expand to (upload_zip_bytes in replica.toml); split it into "
                "smaller zips"
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
    if info.compress_type not in ACCEPTED_COMPRESSION:
        return None, (
            f"compressed with method {info.compress_type} (only stored and deflate are "
            "accepted; zip it again with your system's usual zip tool)"
        )
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


@dataclass
class _Budget:
    """Bytes an extraction may still write: the kept entries' declared total."""

    left: int
    written: int = 0

    def spend(self, n: int, entry: str) -> None:
        self.left -= n
        self.written += n
        if self.left < 0:
            raise UnsafeArchive(f"{entry} expands past the sizes the zip declares; refused")


def _extract_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: _Budget
) -> None:
    """Stream one entry to ``dest``, never writing more than its declared size, nor more
    than the archive's declared total (``budget``): headers can lie."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as src, open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise UnsafeArchive(f"{info.filename} is larger than its header says; refused")
            budget.spend(len(chunk), info.filename)
            out.write(chunk)


def _empty_message(name: str, n_entries: int, skipped: list[SkippedFile]) -> str:
    if n_entries == 0 or not skipped:
        return f"{name} holds no files; put image files in it"
    reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
    extensions = ".jpg, .png, .webp, .avif, .gif, .bmp, .tif and the other formats Pillow reads"
    return f"{name} holds no image files ({extensions}). Left out: {reasons}"


def _remove_stale_partials(base: Path) -> None:
    """Delete half-extracted folders left by a process that died more than a day ago."""
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for path in base.glob(f".*{PARTIAL_SUFFIX}"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_mtime < cutoff:
                log.warning("removing a stale partial upload %s", path)
                shutil.rmtree(path, ignore_errors=True)
