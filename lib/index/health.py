"""What an index can still show: how many of its rows' image files are no longer on this
machine (an import in the clip-retrieval layout often holds vectors whose files stayed
elsewhere; a moved folder leaves the same)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lib.index.store import ReplicaIndex

MISSING_SAMPLE = 20_000
"""Rows checked at most; above this many the count is estimated from a seeded sample."""


@dataclass(frozen=True)
class MissingFiles:
    """``missing`` of ``checked`` rows' files were not found; ``total`` rows in the index.
    ``estimated``: the rows checked were a sample, and :attr:`approx_missing` scales it."""

    missing: int
    checked: int
    total: int

    @property
    def estimated(self) -> bool:
        return self.checked < self.total

    @property
    def approx_missing(self) -> int:
        """Missing files in the whole index (scaled from the sample when estimated)."""
        if not self.checked:
            return 0
        return round(self.missing * self.total / self.checked)

    def words(self) -> str:
        """One line for a card: "" when every file checked was found.

        Example:
            >>> MissingFiles(5, 10, 10).words()
            '5 of 10 files not found on this server'
        """
        if not self.missing:
            return ""
        if self.estimated:
            return (
                f"about {self.approx_missing:,} of {self.total:,} files not found on this "
                f"server (estimated from {self.checked:,})"
            )
        return f"{self.missing:,} of {self.total:,} files not found on this server"


def missing_files(index: ReplicaIndex, sample: int = MISSING_SAMPLE, seed: int = 0) -> MissingFiles:
    """Count the rows of ``index`` whose image file does not exist (every row up to
    ``sample`` rows, else a seeded sample of ``sample``): one ``stat`` per row checked.

    Example:
        >>> missing_files(open_index("data/indexes/openmoji-sscd")).missing  # doctest: +SKIP
        0
    """
    n = index.count
    if n <= sample:
        rows = np.arange(n)
    else:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    missing = sum(not os.path.exists(index.file_path(int(r))) for r in rows)
    return MissingFiles(missing=int(missing), checked=len(rows), total=n)
