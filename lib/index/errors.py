"""The errors an index raises: one base class, one subclass per problem a caller handles."""

from __future__ import annotations

from lib.images import SkippedFile


class IndexError_(RuntimeError):
    """Base class for index problems (named to avoid shadowing the builtin IndexError)."""


class IndexNotFound(IndexError_):
    """The folder is not a Replica index."""


class EmbedderMismatch(IndexError_):
    """An index is used with an embedder other than the one that built it."""


class NoImagesError(IndexError_):
    """A build or add found no usable image."""

    def __init__(self, message: str, skipped: list[SkippedFile] | None = None):
        super().__init__(message)
        self.skipped = skipped or []


class IndexWriteError(IndexError_):
    """Writing the index failed (disk full, permissions); the previous index is untouched."""


class IndexLocked(IndexError_):
    """Another writer holds the index's lock and the caller asked not to wait."""
