"""Near-duplicates inside an index, for dataset curators.

Pairs above a similarity threshold come from FAISS range search in chunks (memory
grows with the number of pairs found, never with n squared); pairs are merged into
clusters with union-find. In each cluster one image is kept (the largest, then the
lowest id) and the others are proposed for removal.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lib.index import ReplicaIndex
from lib.progress import ProgressCallback, report

DEFAULT_DUPLICATE_THRESHOLD = 0.85
"""Raw cosine above which two indexed images count as near-duplicates (SSCD)."""


@dataclass(frozen=True)
class DuplicateMember:
    """One image of a cluster; ``similarity`` is its cosine to the kept image."""

    id: int
    row: int
    path: str
    caption: str
    similarity: float
    keep: bool


@dataclass
class DuplicateCluster:
    """Images that are near-duplicates of each other (connected by pairs above threshold)."""

    cluster: int
    members: list[DuplicateMember]
    max_similarity: float
    min_similarity: float

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class DuplicateReport:
    """All pairs above ``threshold`` and their clusters, largest cluster first."""

    threshold: float
    n_images: int
    pairs: list[tuple[int, int, float]]
    clusters: list[DuplicateCluster] = field(default_factory=list)

    @property
    def n_removable(self) -> int:
        return sum(c.size - 1 for c in self.clusters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "n_images": self.n_images,
            "n_pairs": len(self.pairs),
            "n_clusters": len(self.clusters),
            "n_removable": self.n_removable,
            "clusters": [asdict(c) for c in self.clusters],
        }

    def csv_text(self) -> str:
        """One row per clustered image: cluster, id, path, caption, similarity, keep."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["cluster", "id", "path", "caption", "similarity_to_kept", "keep"])
        for c in self.clusters:
            for m in c.members:
                writer.writerow(
                    [c.cluster, m.id, m.path, m.caption, f"{m.similarity:.6f}", int(m.keep)]
                )
        return out.getvalue()

    def removal_csv_text(self) -> str:
        """The files a curator would remove: every member but the kept one."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["path", "id", "duplicate_of", "similarity"])
        for c in self.clusters:
            kept = next(m for m in c.members if m.keep)
            for m in c.members:
                if not m.keep:
                    writer.writerow([m.path, m.id, kept.path, f"{m.similarity:.6f}"])
        return out.getvalue()

    def json_text(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """:meth:`csv_text` written to ``path``."""
        Path(path).write_text(self.csv_text(), encoding="utf-8", newline="")

    def write_removal_csv(self, path: str | os.PathLike[str]) -> None:
        """:meth:`removal_csv_text` written to ``path``."""
        Path(path).write_text(self.removal_csv_text(), encoding="utf-8", newline="")

    def write_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.json_text(), encoding="utf-8")


def duplicate_pairs(
    index: ReplicaIndex,
    threshold: float,
    chunk: int = 1024,
    progress: ProgressCallback | None = None,
) -> list[tuple[int, int, float]]:
    """(row_a, row_b, cosine) for every pair with cosine >= threshold, row_a < row_b."""
    n = index.count
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        queries = index.get_vectors(rows)
        # FAISS range search keeps results with similarity > radius for inner product
        lims, sims, ids = index.faiss.range_search(queries, float(threshold) - 1e-6)
        for q, row in enumerate(rows):
            for j in range(lims[q], lims[q + 1]):
                other = int(ids[j])
                if other > row:
                    pairs.append((int(row), other, float(sims[j])))
        report(progress, int(rows[-1]) + 1, n, f"{len(pairs)} pairs")
    return pairs


def _union_find_clusters(n: int, pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for x in sorted({v for a, b, _ in pairs for v in (a, b)}):
        groups.setdefault(find(x), []).append(x)
    return [g for g in groups.values() if len(g) > 1]


def find_duplicates(
    index: ReplicaIndex,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    progress: ProgressCallback | None = None,
) -> DuplicateReport:
    """Cluster the index's near-duplicates.

    Args:
        threshold: raw cosine in -1..1; pairs at or above it are near-duplicates.

    Raises:
        ValueError: threshold outside -1..1.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine between -1 and 1, got {threshold}")
    pairs = duplicate_pairs(index, threshold, progress=progress)
    meta = index.metadata
    clusters = []
    for rows in _union_find_clusters(index.count, pairs):
        pixels = (meta["width"].to_numpy()[rows] * meta["height"].to_numpy()[rows]).tolist()
        keep_row = max(rows, key=lambda r: (pixels[rows.index(r)], -r))
        vecs = index.get_vectors(np.array(rows))
        to_kept = vecs @ index.get_vectors(np.array([keep_row]))[0]
        members = [
            DuplicateMember(
                id=int(meta["id"].iloc[r]),
                row=int(r),
                path=str(meta["path"].iloc[r]),
                caption=str(meta["caption"].iloc[r] or ""),
                similarity=float(s),
                keep=r == keep_row,
            )
            for r, s in zip(rows, to_kept, strict=True)
        ]
        members.sort(key=lambda m: (not m.keep, -m.similarity))
        others = [m.similarity for m in members if not m.keep]
        clusters.append(DuplicateCluster(0, members, max(others), min(others)))
    clusters.sort(key=lambda c: (-c.size, -c.max_similarity, c.members[0].row))
    for i, c in enumerate(clusters, start=1):
        c.cluster = i
    return DuplicateReport(
        threshold=threshold, n_images=index.count, pairs=pairs, clusters=clusters
    )
