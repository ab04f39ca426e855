"""Near-duplicates inside an index, and images of one index found in another, for
dataset curators.

Pairs come from a kNN graph: every image is searched for its ``k`` nearest others
(:meth:`ReplicaIndex.search_vectors`, in chunks: memory grows with the pairs kept, never
with n squared, and a large index's approximate search with exact re-ranking serves it),
and pairs at or above the threshold are kept. An image with more than ``k`` near-duplicates
is linked to its ``k`` nearest only (and to the images that have it among theirs): raise
``k`` (``--k`` on the command line) when a collection holds bigger groups.

Clusters are built around the image kept, so that a curator can trust "removable": every
image proposed for removal is at or above the threshold against the image kept in its
cluster. Single links would chain (a ~ b ~ c with a and c far apart, 146 emoji down to
cosine 0.66 from the kept one at 0.85); here the images are visited best first by the keep
rule, each one not yet taken keeps its near-duplicates that are not yet taken, and images
linked only through others stay unassigned (counted, never proposed). Two members of a
cluster can still be further apart than the threshold (each is near the kept image, not
necessarily near each other): each cluster reports its lowest cosine between any two
members (its diameter) and says so (``chained``) when that is below the threshold.

:func:`find_contamination` searches the images of one index (a test set) in another (a
training set) made by the same embedder.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lib.index import EmbedderMismatch, ReplicaIndex
from lib.progress import ProgressCallback, report

if TYPE_CHECKING:
    from lib.verification import GreyThumb

DEFAULT_DUPLICATE_THRESHOLD = 0.85
"""Raw cosine above which two indexed images count as near-duplicates (SSCD)."""

KEEP_RULES = {
    "most-linked": "the image with the most near-duplicates (then the largest, then the first)",
    "largest": "the largest image in pixels (then the one with most near-duplicates)",
    "first": "the image indexed first (lowest id)",
}
"""Which image of a cluster is kept: rule name -> what it means."""
DEFAULT_KEEP_RULE = "most-linked"
DEFAULT_NEIGHBOURS = 16
"""Neighbours searched per image: an image with more near-duplicates is linked to this many."""
PIXEL_CANDIDATE_COSINE = 0.4
"""With pixels checked, neighbours down to this cosine are aligned: an edit that only
degrades a picture moves SSCD more than its pixels (median cosine to the original: JPEG 25
0.70, a 1/3 downscale 0.57, pasted into another picture 0.46; benchmarks/peers.py)."""
PIXEL_NEIGHBOURS = 8
"""With pixels checked, the pairs below the cosine threshold are taken from each image's
8 nearest (16 found no more planted copies on the peers benchmark, for 1.5 x the time)."""
PIXELS_COSINE = 0.95
"""With pixels checked, the cosine at which a pair is a duplicate on the embedding alone
(look-alike siblings, skin tones and recoloured hearts, reach 0.85-0.95)."""
DEFAULT_MIN_ALIGNMENT = 0.9
"""With pixels checked, the alignment (:mod:`lib.verification`, -1..1) at which a pair is a
duplicate."""
PIXEL_LIMIT = 50_000
"""Above this many images the CLI and the app check the embedding only (about 2 pairs an
image are aligned at 5 ms a pair: 50,000 images take about 8 minutes on 2 cores)."""
COLOUR_LIMIT = 8.0
"""Mean absolute colour difference (0..255, 16 x 16 RGB, each channel less its mean:
:func:`lib.verification.colour_difference`) above which two whole pictures that line up
are recoloured variants, not copies: JPEG 25, 1/3 downscales and flips of the peers
benchmark differ by 0-5.6 (a 95% crop of a busy picture, resized back, by 7.4: pixels
that move a little change colour too), skin-tone siblings by 10-22 and recoloured ones by
7.5-43 (one pair of 22 under the limit)."""
REASONS = {
    0: "near-identical to the copy-detection model",
    1: "the pixels line up",
    2: "mirror images of each other",
    3: "one is a part of the other (cropped, or pasted into a new picture)",
}
"""Why a pair is proposed, by code (:attr:`DuplicatePairs.how`)."""

DUPLICATES_NPROBE = 16
"""Lists probed per image by the approximate index (large indexes only): near-duplicates
(cosine 0.85 and up) sit in the closest lists, so 16 find them (benchmarks/
duplicates_scale.py) at a quarter of a query's cost; exact indexes ignore it."""


@dataclass(frozen=True)
class DuplicateMember:
    """One image of a cluster; ``similarity`` is its cosine to the kept image."""

    id: int
    row: int
    path: str
    caption: str
    similarity: float
    keep: bool
    reason: str = ""
    """Why it is proposed as a duplicate of the kept image, with its number ("" for the
    kept image)."""


@dataclass
class DuplicateCluster:
    """Images that are near-duplicates of each other (connected by pairs above threshold)."""

    cluster: int
    members: list[DuplicateMember]
    max_similarity: float
    min_similarity: float
    lowest_pair: float = 1.0
    """The lowest cosine between any two members: the cluster's diameter, as a similarity."""
    lowest_pair_ids: tuple[int, int] = (0, 0)
    """The ids of the two members at :attr:`lowest_pair`."""
    chained: bool = False
    """Two members are below the threshold against each other: they are grouped only
    because each is at or above it against the kept image (a ~ kept ~ b)."""

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class DuplicateReport:
    """All pairs above ``threshold`` and their clusters, largest cluster first."""

    threshold: float
    n_images: int
    pairs: DuplicatePairs
    clusters: list[DuplicateCluster] = field(default_factory=list)
    keep_rule: str = DEFAULT_KEEP_RULE
    n_linked: int = 0
    """Images with at least one near-duplicate (clustered or not)."""
    image_root: str = ""
    """The folder the index's images share (names in exports are relative to it)."""
    k: int = DEFAULT_NEIGHBOURS
    """Neighbours searched per image."""
    pixels: PixelCheck | None = None
    """How pixels were checked (None: the cosine alone)."""

    @property
    def n_chained(self) -> int:
        """Clusters with two members below the threshold against each other."""
        return sum(c.chained for c in self.clusters)

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
            "k": self.k,
            "keep_rule": self.keep_rule,
            "n_images": self.n_images,
            "n_pairs": len(self.pairs),
            "n_clusters": len(self.clusters),
            "n_removable": self.n_removable,
            "n_unassigned": self.n_unassigned,
            "n_chained": self.n_chained,
            "image_root": self.image_root,
            "pixels": None if self.pixels is None else asdict(self.pixels),
            "clusters": [asdict(c) for c in self.clusters],
        }

    def csv_text(self) -> str:
        """One row per clustered image: cluster, id, name (relative to the image root), full
        path, caption, similarity to the kept image, keep, and the cluster's lowest cosine
        between any two members (its diameter) with whether that is below the threshold."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "cluster", "id", "name", "path", "caption", "similarity_to_kept", "keep",
                "cluster_lowest_pair", "cluster_chained", "reason",
            ]
        )  # fmt: skip
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
                        f"{c.lowest_pair:.6f}",
                        int(c.chained),
                        m.reason,
                    ]
                )
        return out.getvalue()

    def removal_csv_text(self) -> str:
        """The files a curator would remove: every member but the kept one (each at or above
        the threshold against it), by display name and full path."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["name", "path", "id", "duplicate_of", "similarity", "reason"])
        for c in self.clusters:
            kept = next(m for m in c.members if m.keep)
            for m in c.members:
                if not m.keep:
                    writer.writerow(
                        [
                            self.name(m.path),
                            m.path,
                            m.id,
                            kept.path,
                            f"{m.similarity:.6f}",
                            m.reason,
                        ]
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


@dataclass(frozen=True)
class PixelCheck:
    """How pairs are checked by their pixels (:func:`verified_pairs`).

    ``min_alignment``: the alignment (-1..1) that makes a duplicate; ``mirrors``: whether
    mirror images of each other count (a mirrored copy, but also a "p" and a "q" drawn as
    mirror images: a curator's choice); ``same_colours``: whether a recoloured picture is
    another work (a colour-jittered copy then is too: the curator's other choice).
    """

    min_alignment: float = DEFAULT_MIN_ALIGNMENT
    mirrors: bool = True
    same_colours: bool = True
    """Recoloured pictures (another skin tone, a heart of another colour) are different
    works: two whole pictures whose grey pixels line up are duplicates only when their
    colours differ by at most :data:`COLOUR_LIMIT` on average."""


def pair_reason(cosine: float, alignment: float, how: int) -> str:
    """Why a pair is proposed, in words with its number: :data:`REASONS` ``how`` (0: the
    cosine decided, else the way the pixels line up, with the alignment)."""
    if how == 0:
        return f"{REASONS[0]} (cosine {cosine:.3f})"
    return f"{REASONS[how]} (alignment {alignment:.3f})"


@dataclass(frozen=True)
class DuplicatePairs:
    """Near-duplicate pairs as arrays (20 bytes a pair, so millions fit): ``a`` and ``b``
    (m,) int64 row ids with a < b, ``similarity`` (m,) float32 cosine. Iterates as
    (row_a, row_b, cosine) tuples. With pixels checked, ``alignment`` (m,) float32 (NaN:
    a file could not be read) and ``how`` (m,) int8, the :data:`REASONS` code."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray
    alignment: np.ndarray | None = None
    how: np.ndarray | None = None

    def reason(self, i: int) -> str:
        """Why pair ``i`` is proposed, in words with its number."""
        if self.how is None or self.alignment is None:
            return pair_reason(float(self.similarity[i]), float("nan"), 0)
        return pair_reason(float(self.similarity[i]), float(self.alignment[i]), int(self.how[i]))

    def __len__(self) -> int:
        return len(self.a)

    def __iter__(self) -> Iterator[tuple[int, int, float]]:
        for a, b, s in zip(self.a.tolist(), self.b.tolist(), self.similarity.tolist(), strict=True):
            yield int(a), int(b), float(s)

    def degree(self, n: int) -> np.ndarray:
        """(n,) int64: how many pairs each row is in."""
        return np.bincount(self.a, minlength=n) + np.bincount(self.b, minlength=n)


def _empty_pairs() -> DuplicatePairs:
    return DuplicatePairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def _check_search(threshold: float, k: int) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine between -1 and 1, got {threshold}")
    if k < 1:
        raise ValueError(f"k (neighbours per image) must be at least 1, got {k}")


def duplicate_pairs(
    index: ReplicaIndex,
    threshold: float,
    *,
    k: int = DEFAULT_NEIGHBOURS,
    chunk: int = 4096,
    progress: ProgressCallback | None = None,
) -> DuplicatePairs:
    """Every pair with cosine >= ``threshold`` in the kNN graph of the index: each row is
    searched for its ``k`` nearest others (:meth:`ReplicaIndex.search_vectors`, ``chunk``
    rows at a time), and a pair is kept when either image is among the other's ``k``
    nearest. An image with more than ``k`` near-duplicates is linked to its ``k`` nearest
    (and to those that have it among theirs): raise ``k`` to link them all. Memory: one
    chunk of results plus the pairs kept."""
    _check_search(threshold, k)
    n = index.count
    found_a, found_b, found_s = [], [], []
    kept = 0
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk), dtype=np.int64)
        sims, ids = index.search_vectors(
            index.get_vectors(rows), min(k + 1, n), nprobe=DUPLICATES_NPROBE
        )
        hit = (sims >= np.float32(threshold)) & (ids >= 0) & (ids != rows[:, None])
        q, j = np.nonzero(hit)
        other = ids[q, j]
        found_a.append(np.minimum(rows[q], other))
        found_b.append(np.maximum(rows[q], other))
        found_s.append(sims[q, j].astype(np.float32))
        kept += len(q)
        report(progress, int(rows[-1]) + 1, n, f"{kept:,} links")
    if not found_a:
        return _empty_pairs()
    a, b, s = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s)
    # a pair found from both ends counts once
    _, first = np.unique(a * max(n, 1) + b, return_index=True)
    return DuplicatePairs(a[first], b[first], s[first])


def _union(one: DuplicatePairs, other: DuplicatePairs, n: int) -> DuplicatePairs:
    a, b = np.concatenate([one.a, other.a]), np.concatenate([one.b, other.b])
    s = np.concatenate([one.similarity, other.similarity])
    _, first = np.unique(a * max(n, 1) + b, return_index=True)
    return DuplicatePairs(a[first], b[first], s[first])


def judge_pair(
    one: GreyThumb | None,
    other: GreyThumb | None,
    cosine: float,
    threshold: float,
    check: PixelCheck,
) -> tuple[float, int] | None:
    """Whether two pictures are duplicates under ``check``: (alignment, :data:`REASONS`
    code) when they are, None when not (below both rules, or a variant: two whole
    pictures that line up but differ in colour or, when mirrors differ, are mirror
    images). Either thumbnail None (unreadable): the cosine alone decides."""
    from lib.verification import alignment_parts, colour_difference

    best, code, variant = float("nan"), 0, False
    if one is not None and other is not None:
        a, b = alignment_parts(one, other), alignment_parts(other, one)
        ways = {
            1: max(a["whole"], b["whole"]),
            2: max(a["mirrored"], b["mirrored"]),
            3: max(a["crop"], a["pasted"], b["crop"], b["pasted"]),
        }
        code = max(ways, key=lambda c: (ways[c], -c))
        best = ways[code]
        whole = 2 if ways[2] > ways[1] else 1
        if ways[whole] >= check.min_alignment:
            # the same layout: a variant, not a copy, when the curator says so
            mirrored = whole == 2 and not check.mirrors
            recoloured = check.same_colours and (
                colour_difference(one, other, mirrored=whole == 2) > COLOUR_LIMIT
            )
            variant = mirrored or recoloured
    if variant:
        return None
    if best >= check.min_alignment:
        return best, code
    if cosine >= threshold:
        return best, 0
    return None


def verified_pairs(
    index: ReplicaIndex,
    candidates: DuplicatePairs,
    threshold: float,
    check: PixelCheck,
    progress: ProgressCallback | None = None,
) -> DuplicatePairs:
    """The candidates that are duplicates: cosine at or above ``threshold``, or pixels
    aligned (:func:`lib.verification.alignment_parts`, each picture as the query in turn)
    at ``check.min_alignment`` or more, each with its reason; except *variants*, two whole
    pictures that line up but differ in colour (``check.same_colours``) or are mirror
    images (``check.mirrors`` False), which are left out whatever their cosine (the
    copy-detection model is trained to ignore both). Files outside the index's allowed
    folders or unreadable are not aligned (their pairs rest on the cosine)."""
    from lib.allowed_paths import index_roots
    from lib.verification import ThumbCache, candidate_thumb

    paths = index.file_paths()
    roots = index_roots(index)
    cache: ThumbCache = {}
    keep, aligned, how = [], [], []
    for i, (a, b, cosine) in enumerate(candidates):
        ta, tb = candidate_thumb(paths[a], cache, roots), candidate_thumb(paths[b], cache, roots)
        verdict = judge_pair(ta, tb, cosine, threshold, check)
        if verdict is not None:
            keep.append(i)
            aligned.append(verdict[0])
            how.append(verdict[1])
        if i % 256 == 0:
            report(progress, i + 1, len(candidates), "checking pixels")
    report(progress, len(candidates), len(candidates), "checking pixels")
    rows = np.array(keep, dtype=np.int64)
    return DuplicatePairs(
        candidates.a[rows],
        candidates.b[rows],
        candidates.similarity[rows],
        np.array(aligned, dtype=np.float32),
        np.array(how, dtype=np.int8),
    )


def _keep_order(rows: np.ndarray, degree: np.ndarray, pixels: np.ndarray, keep: str) -> list[int]:
    """``rows`` ordered best first by the keep rule (ties: lowest row)."""
    if keep == "most-linked":
        order = np.lexsort((rows, -pixels[rows], -degree[rows]))
    elif keep == "largest":
        order = np.lexsort((rows, -degree[rows], -pixels[rows]))
    else:
        order = np.argsort(rows, kind="stable")
    return [int(r) for r in rows[order]]


def _kept_groups(n: int, pairs: DuplicatePairs, order: list[int]) -> list[tuple[int, list[int]]]:
    """(kept row, its rows) per cluster: rows visited in ``order``; each not yet taken keeps
    its near-duplicates not yet taken."""
    src = np.concatenate([pairs.a, pairs.b])
    dst = np.concatenate([pairs.b, pairs.a])
    neighbours = dst[np.argsort(src, kind="stable")]
    starts = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
    taken = np.zeros(n, dtype=bool)
    groups = []
    for row in order:
        if taken[row]:
            continue
        near = neighbours[starts[row] : starts[row + 1]]
        members = near[~taken[near]]
        if not members.size:
            continue
        taken[row] = True
        taken[members] = True
        groups.append((row, [row, *sorted(int(m) for m in members)]))
    return groups


def _lowest_pair(vectors: np.ndarray, chunk: int = 2048) -> tuple[float, int, int]:
    """The lowest cosine between any two of (m, d) L2-normalised vectors, and where it is
    (positions i < j)."""
    lowest, where = 1.0, (0, 0)
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk] @ vectors.T
        i, j = np.unravel_index(int(block.argmin()), block.shape)
        if float(block[i, j]) < lowest:
            lowest, where = float(block[i, j]), (start + int(i), int(j))
    return lowest, min(where), max(where)


def find_duplicates(
    index: ReplicaIndex,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    progress: ProgressCallback | None = None,
    keep: str = DEFAULT_KEEP_RULE,
    k: int = DEFAULT_NEIGHBOURS,
    pixels: PixelCheck | None = None,
) -> DuplicateReport:
    """Cluster the index's near-duplicates around the images kept.

    Args:
        threshold: raw cosine in -1..1; pairs at or above it are near-duplicates. Every
            image proposed for removal is at or above it against its cluster's kept image,
            or (``pixels``) its pixels line up with the kept image's.
        keep: which image a cluster keeps, one of :data:`KEEP_RULES`.
        k: neighbours searched per image (:func:`duplicate_pairs`): an image with more
            than ``k`` near-duplicates is linked to its ``k`` nearest.
        pixels: also align the pixels of every pair down to cosine
            :data:`PIXEL_CANDIDATE_COSINE` (:func:`verified_pairs`): finds JPEG, resized,
            cropped, mirrored and pasted copies that the cosine alone misses. None: the
            cosine alone.

    Raises:
        ValueError: threshold outside -1..1, k below 1, or an unknown keep rule.

    Example:
        >>> report = find_duplicates(index, PIXELS_COSINE, pixels=PixelCheck())  # doctest: +SKIP
        >>> report.clusters[0].members[1].reason  # doctest: +SKIP
        'the pixels line up (alignment 0.981)'
    """
    _check_search(threshold, k)
    if keep not in KEEP_RULES:
        raise ValueError(f"unknown keep rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    if pixels is None:
        pairs = duplicate_pairs(index, threshold, k=k, progress=progress)
    else:
        near = duplicate_pairs(
            index, min(threshold, PIXEL_CANDIDATE_COSINE), k=min(k, PIXEL_NEIGHBOURS),
            progress=progress,
        )  # fmt: skip
        candidates = _union(near, duplicate_pairs(index, threshold, k=k), index.count)
        pairs = verified_pairs(index, candidates, threshold, pixels, progress)
    where = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(pairs.a, pairs.b, strict=True))}
    meta = index.metadata
    n = index.count
    degree = pairs.degree(n)
    linked = np.flatnonzero(degree)
    areas = (meta["width"].to_numpy() * meta["height"].to_numpy()).astype(np.int64)
    ids = meta["id"].to_numpy()
    paths, captions = meta["path"].to_numpy(), meta["caption"].to_numpy()
    clusters = []
    for keep_row, rows in _kept_groups(n, pairs, _keep_order(linked, degree, areas, keep)):
        vecs = index.get_vectors(np.array(rows))
        to_kept = vecs @ vecs[0]
        members = [
            DuplicateMember(
                id=int(ids[r]),
                row=int(r),
                path=str(paths[r]),
                caption=str(captions[r] or ""),
                similarity=float(s),
                keep=r == keep_row,
                reason=(
                    ""
                    if r == keep_row
                    else pairs.reason(where[(min(r, keep_row), max(r, keep_row))])
                ),
            )
            for r, s in zip(rows, to_kept, strict=True)
        ]
        members.sort(key=lambda m: (not m.keep, -m.similarity))
        others = [m.similarity for m in members if not m.keep]
        lowest, i, j = _lowest_pair(vecs)
        clusters.append(
            DuplicateCluster(
                0,
                members,
                max(others),
                min(others),
                lowest,
                lowest_pair_ids=(int(ids[rows[i]]), int(ids[rows[j]])),
                chained=lowest < threshold - 1e-6
                and (min(rows[i], rows[j]), max(rows[i], rows[j])) not in where,
            )
        )
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
        k=k,
        pixels=pixels,
    )


EMBEDDER_IDENTITY = ("name", "dim", "preprocessing", "weights")
"""Manifest embedder fields that must match for two indexes' vectors to be compared."""


@dataclass(frozen=True)
class ContaminationMatch:
    """An image of the searched index (``row``, ``id``...) found in the other index
    (``other_*``) at ``cosine`` (-1..1), at or above the threshold."""

    row: int
    id: int
    path: str
    caption: str
    other_row: int
    other_id: int
    other_path: str
    other_caption: str
    cosine: float
    reason: str = ""
    """Why it is proposed, with pixels checked ("" otherwise)."""


CONTAMINATION_COLUMNS = (
    "id", "path", "caption", "other_id", "other_path", "other_caption", "cosine", "reason",
)  # fmt: skip


@dataclass
class ContaminationReport:
    """Images of ``index`` (e.g. a test set) that also appear in ``other`` (a training
    set): every pair at or above ``threshold`` among each image's ``k`` nearest in
    ``other``; images ordered by their best cosine, each image's matches best first."""

    index: str
    other: str
    threshold: float
    k: int
    n_images: int
    n_other: int
    matches: list[ContaminationMatch] = field(default_factory=list)
    pixels: PixelCheck | None = None
    """How pixels were checked (None: the cosine alone)."""

    @property
    def n_contaminated(self) -> int:
        """Images of ``index`` with at least one match in ``other``."""
        return len({m.row for m in self.matches})

    @property
    def contaminated_share(self) -> float:
        """Share of ``index`` found in ``other`` (0..1)."""
        return self.n_contaminated / self.n_images if self.n_images else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "other": self.other,
            "threshold": self.threshold,
            "k": self.k,
            "n_images": self.n_images,
            "n_other": self.n_other,
            "n_contaminated": self.n_contaminated,
            "pixels": None if self.pixels is None else asdict(self.pixels),
            "n_matches": len(self.matches),
            "matches": [{c: getattr(m, c) for c in CONTAMINATION_COLUMNS} for m in self.matches],
        }

    def json_text(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def csv_text(self) -> str:
        """One row per (image, image of the other index) pair: :data:`CONTAMINATION_COLUMNS`."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CONTAMINATION_COLUMNS)
        for m in self.matches:
            writer.writerow(
                [m.id, m.path, m.caption, m.other_id, m.other_path, m.other_caption,
                 f"{m.cosine:.6f}"]
            )  # fmt: skip
        return out.getvalue()

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.csv_text(), encoding="utf-8", newline="")

    def write_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.json_text(), encoding="utf-8")


def check_same_embedder(index: ReplicaIndex, other: ReplicaIndex) -> None:
    """Refuse two indexes whose vectors were made by different embedders (or preprocessing
    or weights): their cosines mean nothing to each other.

    Raises:
        EmbedderMismatch: the manifests' embedder identities differ.
    """
    mine = {k: index.manifest.embedder.get(k) for k in EMBEDDER_IDENTITY}
    theirs = {k: other.manifest.embedder.get(k) for k in EMBEDDER_IDENTITY}
    if mine != theirs:
        differ = ", ".join(k for k in EMBEDDER_IDENTITY if mine[k] != theirs[k])
        raise EmbedderMismatch(
            f"{index.path} was made with embedder {mine['name']!r} (dim {mine['dim']}) and "
            f"{other.path} with {theirs['name']!r} (dim {theirs['dim']}); they differ in "
            f"{differ}, so their similarities cannot be compared: build both with the same "
            "embedder"
        )


def find_contamination(
    index: ReplicaIndex,
    other: ReplicaIndex,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    *,
    k: int = DEFAULT_NEIGHBOURS,
    chunk: int = 4096,
    progress: ProgressCallback | None = None,
    pixels: PixelCheck | None = None,
) -> ContaminationReport:
    """Images of ``index`` (a test set) that also appear in ``other`` (a training set).

    Each image of ``index`` is searched in ``other`` for its ``k`` nearest
    (:meth:`ReplicaIndex.search_vectors`, ``chunk`` images at a time); pairs at or above
    ``threshold`` (raw cosine, -1..1) are kept. An image with more than ``k`` copies in
    ``other`` lists its ``k`` nearest. Memory: one chunk of results plus the pairs kept.
    ``pixels``: the rules of :func:`find_duplicates` (pairs down to cosine
    :data:`PIXEL_CANDIDATE_COSINE` among the :data:`PIXEL_NEIGHBOURS` nearest are aligned,
    variants left out), each match with its reason.

    Raises:
        EmbedderMismatch: the two indexes were made by different embedders.
        ValueError: threshold outside -1..1, or k below 1.
    """
    _check_search(threshold, k)
    check_same_embedder(index, other)
    n = index.count
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    hits = 0
    floor = threshold if pixels is None else min(threshold, PIXEL_CANDIDATE_COSINE)
    for start in range(0, n if other.count else 0, chunk):
        rows = np.arange(start, min(n, start + chunk), dtype=np.int64)
        sims, ids = other.search_vectors(
            index.get_vectors(rows), min(k, other.count), nprobe=DUPLICATES_NPROBE
        )
        near = np.arange(sims.shape[1])[None, :] < (k if pixels is None else PIXEL_NEIGHBOURS)
        keep = (ids >= 0) & ((sims >= np.float32(threshold)) | (near & (sims >= floor)))
        q, j = np.nonzero(keep)
        found.append((rows[q], ids[q, j], sims[q, j]))
        hits += len(set(rows[q].tolist()))
        report(progress, int(rows[-1]) + 1, n, f"{len(q):,} candidate pairs")
    reasons: list[str] | None = None
    if pixels is not None and found:
        found, reasons = _verified_matches(index, other, found, threshold, pixels, progress)
    matches = _contamination_matches(index, other, found, reasons)
    return ContaminationReport(
        index=str(index.path),
        other=str(other.path),
        threshold=threshold,
        k=k,
        n_images=n,
        n_other=other.count,
        matches=matches,
        pixels=pixels,
    )


def _verified_matches(
    index: ReplicaIndex,
    other: ReplicaIndex,
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    threshold: float,
    check: PixelCheck,
    progress: ProgressCallback | None,
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], list[str]]:
    """The candidate (rows, other rows, cosines) that are duplicates under ``check``
    (:func:`judge_pair`), and each one's reason."""
    from lib.allowed_paths import index_roots
    from lib.verification import ThumbCache, candidate_thumb

    rows = np.concatenate([f[0] for f in found])
    others = np.concatenate([f[1] for f in found])
    sims = np.concatenate([f[2] for f in found])
    paths, other_paths = index.file_paths(), other.file_paths()
    roots, other_roots = index_roots(index), index_roots(other)
    cache: ThumbCache = {}
    keep, reasons = [], []
    for i, (r, o, cosine) in enumerate(zip(rows.tolist(), others.tolist(), sims.tolist(),
                                           strict=True)):  # fmt: skip
        one = candidate_thumb(paths[r], cache, roots)
        two = candidate_thumb(other_paths[o], cache, other_roots)
        verdict = judge_pair(one, two, cosine, threshold, check)
        if verdict is not None:
            keep.append(i)
            reasons.append(pair_reason(cosine, *verdict))
        if i % 256 == 0:
            report(progress, i + 1, len(rows), "checking pixels")
    kept = np.array(keep, dtype=np.int64)
    return [(rows[kept], others[kept], sims[kept])], reasons


def _contamination_matches(
    index: ReplicaIndex,
    other: ReplicaIndex,
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    reasons: list[str] | None = None,
) -> list[ContaminationMatch]:
    """The found (rows, other rows, cosines) as matches: images by best cosine (then
    row), each image's matches best first."""
    if not found:
        return []
    rows = np.concatenate([f[0] for f in found])
    others = np.concatenate([f[1] for f in found])
    sims = np.concatenate([f[2] for f in found]).astype(np.float64)
    best: dict[int, float] = {}
    for r, s in zip(rows.tolist(), sims.tolist(), strict=True):
        best[r] = max(best.get(r, -2.0), s)
    order = sorted(range(len(rows)), key=lambda i: (-best[int(rows[i])], rows[i], -sims[i]))
    meta, ometa = index.metadata, other.metadata
    out = []
    for i in order:
        r, o = int(rows[i]), int(others[i])
        out.append(
            ContaminationMatch(
                row=r,
                id=int(meta["id"].iloc[r]),
                path=str(meta["path"].iloc[r]),
                caption=str(meta["caption"].iloc[r] or ""),
                other_row=o,
                other_id=int(ometa["id"].iloc[o]),
                other_path=str(ometa["path"].iloc[o]),
                other_caption=str(ometa["caption"].iloc[o] or ""),
                cosine=float(sims[i]),
                reason=reasons[i] if reasons is not None else "",
            )
        )
    return out


def _image_root(paths: list[str]) -> str:
    """The longest folder all ``paths`` share ('' when none)."""
    if not paths:
        return ""
    try:
        root = os.path.commonpath(paths)
    except ValueError:
        return ""
    return str(Path(root).parent) if len(paths) == 1 else root
