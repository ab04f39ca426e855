"""Which folders a training image may be read from: the guard for paths that come from
index files or reports, which may have been made by someone else.

An index names each training image by path (``segments/*/metadata.parquet``, column
``path``) and a report names its match the same way. An edited file can name any picture on
the machine, so such a path is opened only when, with its symlinks resolved, it lies inside
one of the folders the index may read (``os.path.realpath``, then a containment check):

- **in the app** (:func:`app_roots`): the configured image roots, the upload root and the
  data folder (:mod:`lib.app_config`). An index's recorded ``sources`` count only where
  they lie inside one of these, so they never widen it: a manifest that claims ``"/"`` or
  ``"/etc"`` gains nothing. An administrator whose indexes were built from another folder
  adds that folder to ``image_roots``.
- **elsewhere** (the CLI and the library, :func:`recorded_roots`): the folders above, the
  index's own folder, and each recorded source that this machine itself indexed images
  from (:func:`trusted_sources`, a list kept outside every index) and that is not a
  filesystem root, the user's home (or a folder above it) or a system folder
  (:data:`SYSTEM_FOLDERS`). A source that is a label (``"openmoji"``) adds nothing. A
  received index cannot choose the folders it may read: its manifest could name ``/tmp``
  or someone's pictures.

A refused file is treated like a missing one: :func:`load_inside` raises
:class:`OutsideAllowedFolders`, an :class:`~lib.images.ImageLoadError`, so every reader that
skips unreadable training files (thumbnails, pixel alignment, regions, report pictures)
skips it too, and no message names the refused path beyond its file name.

    roots = index_roots(index)                       # the rule that applies to this index
    resolve_inside(index.file_path(0), roots)        # the resolved path, or None
    load_inside(match.path, roots).image             # or OutsideAllowedFolders
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lib.images import ImageLoadError, LoadedImage, load_image

if TYPE_CHECKING:
    from lib.app_config import AppConfig
    from lib.index import ReplicaIndex

OUTSIDE_REASON = "the training image is outside the folders this index may read"
"""What a user is told about a refused file (plain words, no server path)."""

SYSTEM_FOLDERS = ("/boot", "/dev", "/etc", "/proc", "/root", "/run", "/sys")
"""A recorded source at or inside one of these is never read from (:func:`usable_source`)."""

Roots = tuple[Path, ...]
"""Folders, resolved (no symlinks), inside which files may be read."""

RootsRule = Callable[[], Sequence[Path]]
"""A function giving the folders an index may read, asked each time they are needed."""

_RULES: weakref.WeakKeyDictionary[ReplicaIndex, RootsRule] = weakref.WeakKeyDictionary()


class OutsideAllowedFolders(ImageLoadError):
    """A path read from an index or a report lies outside every folder it may be read
    from (after resolving symlinks). Its message names only the file, never the folder."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(OUTSIDE_REASON, os.path.basename(os.fspath(path)))


def _real(path: str | os.PathLike[str]) -> Path | None:
    """``path`` with every symlink resolved (a relative path from the current folder, as
    opening it would); None for a path no file can have (an embedded NUL byte)."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None


def resolved_roots(folders: Iterable[str | os.PathLike[str]]) -> Roots:
    """``folders`` resolved, duplicates dropped, order kept."""
    real = (_real(f) for f in folders)
    return tuple(dict.fromkeys(r for r in real if r is not None))


def resolve_inside(path: str | os.PathLike[str], roots: Iterable[Path]) -> Path | None:
    """``path`` with its symlinks resolved, when that lies strictly inside one of ``roots``
    (a root itself is not a file to read); else None. ``roots`` are resolved here too.

    >>> resolve_inside("/etc/passwd", [Path("/srv/datasets")]) is None
    True
    """
    target = _real(path)
    if target is None:
        return None
    for root in resolved_roots(roots):
        if target != root and target.is_relative_to(root):
            return target
    return None


def check_inside(path: str | os.PathLike[str], roots: Iterable[Path]) -> Path:
    """:func:`resolve_inside`, raising instead of giving None.

    Raises:
        OutsideAllowedFolders: ``path`` resolves outside every root.
    """
    found = resolve_inside(path, roots)
    if found is None:
        raise OutsideAllowedFolders(path)
    return found


def unread_reason(path: str | os.PathLike[str], roots: Iterable[Path]) -> str:
    """Why a picture that could not be shown is missing, in plain words without its path:
    :data:`OUTSIDE_REASON`, or that its file cannot be read."""
    if resolve_inside(path, roots) is None:
        return OUTSIDE_REASON
    return "the image file cannot be read"


def load_inside(
    path: str | os.PathLike[str], roots: Iterable[Path], *, draft_short_side: int | None = None
) -> LoadedImage:
    """:func:`lib.images.load_image` of ``path``, only when it lies inside ``roots``; the
    resolved path is what is opened.

    Raises:
        OutsideAllowedFolders: outside every root (nothing is opened).
        ImageLoadError: the file cannot be read or decoded.
    """
    real = check_inside(path, roots)
    return load_image(real, draft_short_side=draft_short_side, name=os.fspath(path))


def app_roots(config: AppConfig | None = None) -> Roots:
    """The folders the app reads images from: ``config``'s image roots and upload root,
    and the data folder (``config``: the app's, :func:`lib.app_config.load_config`).

    Raises:
        FileNotFoundError: ``$REPLICA_CONFIG`` names a file that does not exist.
    """
    from lib.app_config import load_config
    from lib.defaults import DATA_DIR

    config = config or load_config()
    return resolved_roots((*config.image_roots, config.upload_root, DATA_DIR))


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError, OSError):  # no home folder known for this user
        return None


def usable_source(source: str) -> Path | None:
    """A manifest's recorded source as a folder to read from, or None when it is not one
    the CLI may trust: a label (not an absolute path), not an existing folder, a
    filesystem root, the user's home or a folder above it, or a system folder."""
    if not source or not os.path.isabs(source):
        return None
    folder = _real(source)
    if folder is None or not folder.is_dir() or folder.parent == folder:
        return None
    home = _home()
    if home is not None and (folder == home or folder in home.parents):
        return None
    if any(folder.is_relative_to(s) for s in SYSTEM_FOLDERS):
        return None
    return folder


TRUST_ENV = "REPLICA_TRUSTED_SOURCES"
"""Names the file of folders this machine indexed images from (tests point it elsewhere)."""


def trust_file() -> Path:
    """Where this machine keeps the folders it indexed images from: ``$REPLICA_TRUSTED_
    SOURCES``, else ``$XDG_CONFIG_HOME/replica/trusted-sources.txt`` (``~/.config``). It
    lives outside every index, so an index made elsewhere cannot add to it."""
    override = os.environ.get(TRUST_ENV)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "replica" / "trusted-sources.txt"


def trusted_sources() -> set[Path]:
    """The folders this machine's builds and adds read images from (resolved)."""
    try:  # folder names that are not valid UTF-8 are kept byte for byte
        lines = trust_file().read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError:
        return set()
    return {Path(line) for line in lines if line.startswith("/")}


def remember_source(folder: str | os.PathLike[str]) -> None:
    """Record that this machine indexed images from ``folder`` (a build or an add did), so
    that the CLI may read training images there later (:func:`recorded_roots`). Written
    beside itself and renamed: a concurrent writer loses at most its own line."""
    real = _real(folder)
    if real is None or "\n" in str(real) or not real.is_dir() or real in trusted_sources():
        return  # (a name with a line break could smuggle a second folder into the list)
    path = trust_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = sorted({str(p) for p in trusted_sources()} | {str(real)})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, path)
    except OSError:  # a read-only home: the folder must then be listed in image_roots
        return


def recorded_roots(index: ReplicaIndex) -> Roots:
    """The CLI's rule (module docstring): :func:`app_roots`, the index's own folder and
    those of its recorded sources that :func:`usable_source` accepts and that this machine
    itself indexed (:func:`trusted_sources`): a manifest made elsewhere cannot choose the
    folders it may read (it could name ``/tmp`` or someone's pictures)."""
    trusted = trusted_sources()
    sources = (usable_source(str(s)) for s in index.manifest.sources)
    chosen = [s for s in sources if s is not None and s in trusted]
    return resolved_roots([*app_roots(), index.path, *chosen])


def restrict(index: ReplicaIndex, rule: RootsRule) -> None:
    """From now on, read ``index``'s training files only inside the folders ``rule()``
    gives (asked each time), instead of :func:`recorded_roots`. The app restricts every
    index it opens to :func:`app_roots`; a benchmark, to its own folder.

        restrict(index, app_roots)
    """
    _RULES[index] = rule


def index_roots(index: ReplicaIndex) -> Roots:
    """The folders ``index``'s training files may be read from: its :func:`restrict`
    rule, else :func:`recorded_roots`."""
    rule = _RULES.get(index)
    return resolved_roots(rule()) if rule is not None else recorded_roots(index)
