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


class IndexCorrupt(IndexNotFound, ValueError):
    """A file of the index is damaged or not what its manifest says: the manifest, a
    segment's vectors or metadata, or the approximate index. The message names the file
    and what is wrong. A subclass of :class:`IndexNotFound` (the index cannot be used;
    the command line exits 2) and of ValueError (callers that caught the ValueError
    a damaged file used to raise keep working)."""


class ManifestError(IndexCorrupt):
    """``manifest.json`` is not a manifest this version reads: not JSON, not an object,
    a field missing or of the wrong type, or a segment or file name that points outside
    the index folder. The message names the file and the field."""


class AnnDamaged(IndexCorrupt):
    """The approximate index file (``ann/*.faiss``) cannot be read or does not match the
    manifest (dimension, rows, row ids)."""
