"""The catalogue of indexes the app manages: one card per index read from its manifest only
(no FAISS load), and the rule for naming a new index."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lib.index.errors import ManifestError
from lib.index.manifest import read_manifest

INDEX_NAME_PATTERN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9 _-]{0,62}[A-Za-z0-9_-])?")
"""A new index's folder name: letters, digits, spaces, ``-`` and ``_``; 1 to 64 characters,
starting with a letter or digit and not ending in a space (as a case's name may)."""


@dataclass(frozen=True)
class IndexCard:
    """What the Indexes page shows about one index. ``error`` is set when the manifest
    cannot be read (the other fields are then empty)."""

    name: str
    path: str
    embedder: str = ""
    count: int = 0
    created: str = ""
    updated: str = ""
    skipped: int = 0
    sources: tuple[str, ...] = ()
    error: str = ""

    def row(self) -> dict[str, object]:
        """A table row: dates to the minute, sources joined."""
        return {
            "name": self.name,
            "embedder": self.embedder,
            "images": self.count,
            "skipped": self.skipped,
            "created": self.created[:16].replace("T", " "),
            "updated": self.updated[:16].replace("T", " "),
            "sources": ", ".join(self.sources),
            "path": self.path,
            "problem": self.error,
        }


def read_card(path: str | os.PathLike[str]) -> IndexCard:
    """The card of the index at ``path``, from ``manifest.json`` alone (checked by
    :func:`lib.index.manifest.read_manifest`). A manifest that cannot be read gives a
    card with only ``name``, ``path`` and ``error`` (why), never an exception, so that one
    damaged index does not hide the others.

    Example:
        >>> read_card("no/such/index").error.startswith("damaged: manifest.json cannot be read")
        True
    """
    root = Path(path)
    try:
        manifest = read_manifest(root)
    except (OSError, ManifestError) as exc:
        reason = exc if isinstance(exc, ManifestError) else f"manifest.json cannot be read: {exc}"
        return IndexCard(name=root.name, path=str(root), error=f"damaged: {reason}")
    return IndexCard(
        name=root.name,
        path=str(root),
        embedder=manifest.embedder_name,
        count=manifest.count,
        created=manifest.created,
        updated=manifest.updated,
        skipped=len(manifest.skipped),
        sources=tuple(manifest.sources),
    )


def new_index_path(name: str, index_root: str | os.PathLike[str]) -> Path:
    """Where a new index called ``name`` goes under ``index_root``.

    Raises:
        ValueError: the name has other characters than letters, digits, spaces, ``-`` and
            ``_``.
        FileExistsError: something of that name is already there.
    """
    name = name.strip()
    if not INDEX_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid index name: use 1 to 64 letters, digits, spaces, '-' "
            "or '_', starting with a letter or digit"
        )
    dest = Path(index_root) / name
    if dest.exists():
        raise FileExistsError(
            f"an index or folder called {name!r} already exists; pick another name"
        )
    return dest
