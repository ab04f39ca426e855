"""Which files under a folder are images, decided by content, and why every other one is not.

    listing = list_folder("data/train")
    listing.images     # sorted paths to decode
    listing.skipped    # SkippedFile(path, reason) for every other file, sorted

Every regular file is opened with Pillow (its header only) and kept when a decodable format
(:func:`lib.images.decodable_formats`) recognises it, whatever its suffix (``.jpe``,
``.avif``, no suffix at all). A file with an image suffix is kept too, so that the loader
says why it cannot be read ("truncated", "empty file"). Anything else is listed in
``skipped`` with its reason: "HEIC/HEIF: no decoder installed (pip install pillow-heif)",
"SVG: vector image, ...", "not an image (unrecognised format)", "symbolic link leaving the
folder", "broken symbolic link", "not a regular file (FIFO, socket or device)", "cannot
read folder (...)".

Left out silently, and only these (see :func:`list_folder`):

* hidden files and folders (a name starting with ``.``: ``.DS_Store``, ``.git/``, ``._x``);
* operating-system metadata: ``Thumbs.db``, ``ehthumbs.db``, ``desktop.ini``, ``__MACOSX/``;
* sidecars: a ``.txt``, ``.dat``, ``.ogg``, ``.wav``, ``.mp3``, ``.xmp`` or ``.json`` file
  named after another file beside it, its stem followed by ``.`` or ``_`` (a caption
  ``cat.txt`` beside ``cat.png``; Tux Paint's ``cat.dat`` and ``cat_desc_fr.ogg``);
* a symbolic link to a folder inside the listed folder (its files are listed where they
  are), and, when not recursive, sub-folders.

A symbolic link is followed only when its target, resolved, stays inside the listed folder.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lib.images import (
    HEAD_BYTES,
    IMAGE_SUFFIXES,
    SkippedFile,
    decodable_formats,
    unreadable_reason,
)

SIDECAR_SUFFIXES = frozenset({".txt", ".dat", ".ogg", ".wav", ".mp3", ".xmp", ".json"})
"""Suffixes (lower case) of files left out silently when named after a file beside them."""

SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx"})
"""Operating-system metadata (lower-case names) left out silently, files or folders."""

OUTSIDE_LINK = "symbolic link leaving the folder"
"""The reason given for a symbolic link whose target lies outside the listed folder."""


@dataclass(frozen=True)
class FolderListing:
    """The images under a folder (sorted paths), every other file with the reason it is
    left out, and how many hidden, system or sidecar files were left out silently."""

    images: list[Path]
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: int = 0


def list_folder(folder: str | os.PathLike[str], recursive: bool = True) -> FolderListing:
    """List ``folder``: its images by content, and every other file with its reason.

    Paths are returned under ``folder`` as given (not resolved). The module docstring
    lists what is left out silently; everything else that is not an image is in
    ``skipped``. A symbolic link whose resolved target is outside ``folder`` is never
    followed (it is skipped with :data:`OUTSIDE_LINK`).

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file.

    Example:
        >>> listing = list_folder("data/openmoji/train")
        >>> len(listing.images), [s.reason for s in listing.skipped][:1]
        (1000, [])
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    walk = _Walk(root.resolve(), recursive)
    walk.walk(root)
    return FolderListing(sorted(walk.images), sorted(walk.skipped, key=_by_path), walk.ignored)


def _by_path(skipped: SkippedFile) -> str:
    return skipped.path


class _Walk:
    """One listing: the folder's resolved path, what was found so far."""

    def __init__(self, real_root: Path, recursive: bool) -> None:
        self.real_root = real_root
        self.recursive = recursive
        self.images: list[Path] = []
        self.skipped: list[SkippedFile] = []
        self.ignored = 0

    def walk(self, top: Path) -> None:
        """List ``top``'s entries and, when recursive, its sub-folders' (no recursion in
        Python: a folder nested thousands deep is fine)."""
        pending = [top]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.skipped.append(SkippedFile(str(folder), f"cannot read folder ({_why(exc)})"))
                continue
            files: list[Path] = []
            for entry in entries:
                try:
                    self._entry(entry, files, pending)
                except OSError as exc:  # vanished or unreadable while listing
                    self.skipped.append(SkippedFile(entry.path, f"cannot read file ({_why(exc)})"))
            self._classify(files)

    def _entry(self, entry: os.DirEntry[str], files: list[Path], pending: list[Path]) -> None:
        """Sort one entry: ignored, a link, a folder to visit, a file to classify, or skipped."""
        path = Path(entry.path)
        if entry.name.startswith(".") or entry.name.lower() in SYSTEM_FILES:
            self.ignored += 1
        elif entry.is_symlink():
            self._link(path, files)
        elif entry.is_dir(follow_symlinks=False):
            if self.recursive:
                pending.append(path)
            else:
                self.ignored += 1
        elif entry.is_file(follow_symlinks=False):
            files.append(path)
        else:
            self.skipped.append(SkippedFile(str(path), _special_file(path)))

    def _link(self, path: Path, files: list[Path]) -> None:
        """A symbolic link: followed to a file when its target stays inside the folder."""
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing target or a loop of links
            self.skipped.append(SkippedFile(str(path), "broken symbolic link"))
            return
        if target != self.real_root and self.real_root not in target.parents:
            self.skipped.append(SkippedFile(str(path), OUTSIDE_LINK))
        elif target.is_dir():
            self.ignored += 1  # its files are listed where they are
        elif target.is_file():
            files.append(path)
        else:
            self.skipped.append(SkippedFile(str(path), _special_file(target)))

    def _classify(self, files: list[Path]) -> None:
        """Images by content; sidecars of another file left out silently; the rest skipped."""
        stems = {p.stem for p in files if p.suffix.lower() not in SIDECAR_SUFFIXES}
        for path in files:
            if path.suffix.lower() in SIDECAR_SUFFIXES and _names_a_stem(path.name, stems):
                self.ignored += 1
                continue
            reason = not_an_image(path)
            if reason is None:
                self.images.append(path)
            else:
                self.skipped.append(SkippedFile(str(path), reason))


def _names_a_stem(name: str, stems: set[str]) -> bool:
    """``name`` is ``<stem>.<...>`` or ``<stem>_<...>`` for one of ``stems``."""
    return any(name[:i] in stems for i, char in enumerate(name) if char in "._" and i > 0)


def not_an_image(path: Path) -> str | None:
    """None when ``path`` (a regular file) is an image to decode, else why it is not.

    It is an image when a decodable format recognises its header, or when its suffix is an
    image suffix (the loader then says why it cannot be read).
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; errors here are the file's)
    except OSError as exc:
        return f"cannot read file ({_why(exc)})"
    with f:
        try:
            with Image.open(f, formats=decodable_formats()):
                return None
        except UnidentifiedImageError:
            pass
        except Exception:  # recognised, but over a limit or corrupt: the loader says which
            return None
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return None
        f.seek(0)
        return unreadable_reason(f.read(HEAD_BYTES))


def _special_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"cannot read file ({_why(exc)})"
    kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
    return f"not a regular file ({kind})"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
