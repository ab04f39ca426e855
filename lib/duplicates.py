"""Near-duplicates inside an index, for dataset curators.

Pairs above a similarity threshold come from FAISS range search in chunks (memory
grows with the number of pairs found, never with n squared). Clusters are built around
the image kept, so that a curator can trust "removable": every image proposed for removal
is at or above the threshold against the image kept in its cluster. Single links would
chain (a ~ b ~ c with a and c far apart, 146 emoji down to cosine 0.66 from the kept one
at 0.85); here the images are visited best first by the keep rule, each one not yet taken
keeps its near-duplicates that are not yet taken, and images linked only through others
stay unassigned (counted, never proposed). Each cluster also reports its lowest
similarity between any two members.
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

KEEP_RULES = {
    "most-linked": "the image with the most near-duplicates (then the largest, then the first)",
    "largest": "the largest image in pixels (then the one with most near-duplicates)",
    "first": "the image indexed first (lowest id)",
}
"""Which image of a cluster is kept: rule name -> what it means."""
DEFAULT_KEEP_RULE = "most-linked"


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
    lowest_pair: float = 1.0
    """The lowest cosine between any two members (complete-linkage similarity)."""

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
    keep_rule: str = DEFAULT_KEEP_RULE
    n_linked: int = 0
    """Images with at least one near-duplicate (clustered or not)."""
    image_root: str = ""
    """The folder the index's images share (names in exports are relative to it)."""

    @property
    def n_removable(self) -> int:
        return sum(c.size - 1 for c in self.clusters)

    @property
    def n_unassigned(self) -> int:
        """Images linked to others only through a chain, not at the threshold against any
        kept image: never proposed for removal."""
        return self.n_linked - sum(c.size for c in self.clusters)

    @property
    def removable_share(self) -> float:
        """Share of the index proposed for removal (0..1)."""
        return self.n_removable / self.n_images if self.n_images else 0.0

    def name(self, path: str) -> str:
        """A file's display name: its path relative to :attr:`image_root`."""
        if self.image_root and path.startswith(self.image_root.rstrip("/") + "/"):
            return path[len(self.image_root.rstrip("/")) + 1 :]
        return Path(path).name

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "keep_rule": self.keep_rule,
            "n_images": self.n_images,
            "n_pairs": len(self.pairs),
            "n_clusters": len(self.clusters),
            "n_removable": self.n_removable,
            "n_unassigned": self.n_unassigned,
            "image_root": self.image_root,
            "clusters": [asdict(c) for c in self.clusters],
        }

    def csv_text(self) -> str:
        """One row per clustered image: cluster, id, name (relative to the image root), full
        path, caption, similarity to the kept image, keep."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["cluster", "id", "name", "path", "caption", "similarity_to_kept", "keep"])
        for c in self.clusters:
            for m in c.members:
                writer.writerow(
                    [
                        c.cluster,
                        m.id,
                        self.name(m.path),
                        m.path,
                        m.caption,
                        f"{m.similarity:.6f}",
                        int(m.keep),
                    ]
                )
        return out.getvalue()

    def removal_csv_text(self) -> str:
        """The files a curator would remove: every member but the kept one (each at or above
        the threshold against it), by display name and full path."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["name", "path", "id", "duplicate_of", "similarity"])
        for c in self.clusters:
            kept = next(m for m in c.members if m.keep)
            for m in c.members:
                if not m.keep:
                    writer.writerow(
                        [self.name(m.path), m.path, m.id, kept.path, f"{m.similarity:.6f}"]
                    )
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


def _keep_order(rows: np.ndarray, degree: np.ndarray, pixels: np.ndarray, keep: str) -> list[int]:
    """``rows`` ordered best first by the keep rule (ties: lowest row)."""
    if keep == "most-linked":
        order = np.lexsort((rows, -pixels[rows], -degree[rows]))
    elif keep == "largest":
        order = np.lexsort((rows, -degree[rows], -pixels[rows]))
    else:
        order = np.argsort(rows, kind="stable")
    return [int(r) for r in rows[order]]


def _kept_groups(
    n: int, pairs: list[tuple[int, int, float]], order: list[int]
) -> list[tuple[int, list[int]]]:
    """(kept row, its rows) per cluster: rows visited in ``order``; each not yet taken keeps
    its near-duplicates not yet taken."""
    neighbours: dict[int, list[int]] = {}
    for a, b, _ in pairs:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    taken = np.zeros(n, dtype=bool)
    groups = []
    for row in order:
        if taken[row]:
            continue
        members = [r for r in neighbours.get(row, []) if not taken[r]]
        if not members:
            continue
        taken[row] = True
        taken[members] = True
        groups.append((row, [row, *sorted(members)]))
    return groups


def _lowest_pair(vectors: np.ndarray, chunk: int = 2048) -> float:
    """The lowest cosine between any two of (m, d) L2-normalised vectors."""
    lowest = 1.0
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk] @ vectors.T
        lowest = min(lowest, float(block.min()))
    return lowest


def find_duplicates(
    index: ReplicaIndex,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    progress: ProgressCallback | None = None,
    keep: str = DEFAULT_KEEP_RULE,
) -> DuplicateReport:
    """Cluster the index's near-duplicates around the images kept.

    Args:
        threshold: raw cosine in -1..1; pairs at or above it are near-duplicates. Every
            image proposed for removal is at or above it against its cluster's kept image.
        keep: which image a cluster keeps, one of :data:`KEEP_RULES`.

    Raises:
        ValueError: threshold outside -1..1, or an unknown keep rule.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine between -1 and 1, got {threshold}")
    if keep not in KEEP_RULES:
        raise ValueError(f"unknown keep rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    pairs = duplicate_pairs(index, threshold, progress=progress)
    meta = index.metadata
    n = index.count
    degree = np.zeros(n, dtype=np.int64)
    for a, b, _ in pairs:
        degree[a] += 1
        degree[b] += 1
    linked = np.flatnonzero(degree)
    pixels = (meta["width"].to_numpy() * meta["height"].to_numpy()).astype(np.int64)
    clusters = []
    for keep_row, rows in _kept_groups(n, pairs, _keep_order(linked, degree, pixels, keep)):
        vecs = index.get_vectors(np.array(rows))
        to_kept = vecs @ vecs[0]
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
        clusters.append(DuplicateCluster(0, members, max(others), min(others), _lowest_pair(vecs)))
    clusters.sort(key=lambda c: (-c.size, -c.max_similarity, c.members[0].row))
    for i, c in enumerate(clusters, start=1):
        c.cluster = i
    return DuplicateReport(
        threshold=threshold,
        n_images=n,
        pairs=pairs,
        clusters=clusters,
        keep_rule=keep,
        n_linked=len(linked),
        image_root=_image_root(meta["path"].astype(str).tolist()),
    )


def _image_root(paths: list[str]) -> str:
    """The longest folder all ``paths`` share ('' when none)."""
    if not paths:
        return ""
    try:
        root = os.path.commonpath(paths)
    except ValueError:
        return ""
    return str(Path(root).parent) if len(paths) == 1 else root
