"""Approximate search with exact scores: a FAISS IVF index shortlists, full vectors decide.

Above :data:`EXACT_LIMIT` vectors an index gets an IVF index with an HNSW coarse
quantizer and compressed codes (SQ8 or PQ), chosen from a memory budget the way
autofaiss (criteo) does: the most accurate code whose index fits the budget. Its search
only shortlists: every candidate is then scored exactly against the full-precision
vectors on disk (memory-mapped), so every similarity shown is exact for the candidates
considered; only a true neighbour missing from the shortlist can be lost, which the
recall@10 benchmark (``benchmarks/ann_scale.py``) measures.

Rows added after the approximate index was built (``index add``) are searched exactly
and merged in; ``index compact`` adds them to the approximate index.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib.index.errors import AnnDamaged
from lib.index.manifest import ANN_FILE, IndexManifest
from lib.index.segments import SegmentVectors

EXACT_LIMIT = 200_000
"""Indexes with fewer vectors search exactly. Measured (README, Performance): one exact
query costs 29 ms at 100k vectors on this 2-core machine, so under about 60 ms below this
size, well inside the Search page's 1 s, with every candidate scored and nothing to
train; at 1M the exact search takes 237 ms and the approximate one 6 ms
(``benchmarks/ann_scale.py``, ``benchmarks/search_latency.py``)."""
DEFAULT_MEMORY = "4GB"
SHORTLIST_MIN = 100
"""Candidates re-ranked per query at least (and 4 x k when larger)."""
TRAIN_PER_LIST = 40
"""Training vectors per inverted list (FAISS warns below 39)."""
TRAIN_MAX = 200_000
RERANK_CANDIDATES = 65_536
"""Candidates re-ranked together (queries x candidates per query): bounds the gathered
vectors at 65,536 x 512 float32 = 128 MB, whatever k (calibration asks for hundreds)."""
NPROBE_MAX = 64
"""Lists probed per query at most: at 1M vectors (2,048 lists) 64 give recall@10 0.9995
after re-ranking (benchmarks/ann_scale.py); more lists only add scanning time."""


SEARCH_LIST_SHARE = 8
"""A search from the default path (verdicts, their calibration null and measured
sensitivity) probes at least one inverted list in this many. Edited copies lie farther
from their sources than indexed images from their neighbours, so the lists a plan's own
``nprobe`` (one in 32) probes lose some of them: at 1M vectors clustered around real SSCD
vectors, 2.1% of edited-copy queries got another top-1 than exact search with 64 of 2,048
lists, 0.7% with 256 (12.5 ms a query instead of 4.0, one thread;
``benchmarks/ann_copies.py``). Near-duplicate searches pass their own, smaller ``nprobe``."""
SEARCH_NPROBE_MAX = 256
"""The raise stops here: at 10M vectors (8,192 lists) 256 lists took 48 ms a query
(``benchmarks/ann_scale.py``), within the 100 ms a verdict may add there; one in 8 would
be 1,024."""


def search_nprobe(stored: int, nlist: int) -> int:
    """Lists a default search probes: the index's stored ``nprobe``, raised to one list
    in :data:`SEARCH_LIST_SHARE` of ``nlist`` up to :data:`SEARCH_NPROBE_MAX`.

    Example:
        >>> search_nprobe(64, 2048)
        256
    """
    raised = min(int(nlist) // SEARCH_LIST_SHARE, SEARCH_NPROBE_MAX)
    return max(int(stored), raised)


class MemoryBudgetError(ValueError):
    """A memory budget that cannot be read, or too small for any approximate index."""


def parse_memory(text: str | int) -> int:
    """Bytes from a human-readable size: "4GB", "512MB", "1.5G", "800k", or an int.

    Units are powers of 1,000 (GB) or 1,024 (GiB); a bare number is bytes.

    Raises:
        MemoryBudgetError: not a size.
    """
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", str(text), re.IGNORECASE)
    if not match:
        raise MemoryBudgetError(f"{text!r} is not a memory size; write it like 4GB or 512MB")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    power = " kmgt".index(unit.lower() or " ")
    return int(float(number) * base**power)


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass(frozen=True)
class AnnPlan:
    """The approximate index chosen for ``rows`` vectors of ``dim`` under a budget."""

    factory: str
    nlist: int
    code_bytes: int
    nprobe: int
    estimated_bytes: int

    def describe(self) -> str:
        return f"{self.factory} (nprobe {self.nprobe}, about {format_bytes(self.estimated_bytes)})"


def plan_ann(rows: int, dim: int, memory: str | int = DEFAULT_MEMORY) -> AnnPlan:
    """Choose IVF lists and codes for ``rows`` vectors within ``memory`` bytes of RAM.

    Lists: a power of two near 2 x sqrt(rows) (autofaiss uses 4 x sqrt; half as many
    lists trains twice as fast on a 2-core machine, and the exact re-ranking makes up
    for the coarser lists), and ``nprobe`` one list in 32, between 16 and
    :data:`NPROBE_MAX`. Codes, most accurate first: SQ8 (dim
    bytes a vector), then PQ with dim/4, dim/8, dim/16 sub-quantizers of 8 bits; the first
    whose codes, ids (8 bytes a vector) and quantizer fit the budget wins.

    Raises:
        MemoryBudgetError: even the smallest code does not fit.
    """
    budget = parse_memory(memory)
    nlist = 2 ** max(4, round(math.log2(2 * math.sqrt(max(rows, 1)))))
    quantizer = nlist * dim * 4 * 2  # centroids + HNSW links, roughly
    nprobe = min(NPROBE_MAX, max(16, nlist // 32))
    options = [("SQ8", dim)] + [(f"PQ{m}", m) for m in (dim // 4, dim // 8, dim // 16) if m]
    for code, code_bytes in options:
        estimate = rows * (code_bytes + 8) + quantizer
        if estimate <= budget:
            return AnnPlan(f"IVF{nlist}_HNSW32,{code}", nlist, code_bytes, nprobe, estimate)
    smallest = rows * (options[-1][1] + 8) + quantizer
    raise MemoryBudgetError(
        f"{rows:,} vectors need at least {format_bytes(smallest)} of RAM for their "
        f"approximate index; the budget is {format_bytes(budget)}"
    )


def train_ann(plan: AnnPlan, vectors: SegmentVectors, seed: int = 0) -> Any:
    """A trained, empty FAISS index for ``plan``, trained on a random sample of
    ``vectors`` (at most :data:`TRAIN_MAX`, about :data:`TRAIN_PER_LIST` per list)."""
    import faiss

    index = faiss.index_factory(vectors.dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    n = len(vectors)
    size = min(n, TRAIN_MAX, max(plan.nlist * TRAIN_PER_LIST, 10_000))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    index.train(np.ascontiguousarray(vectors[rows]))
    return index


def set_nprobe(index: Any, nprobe: int) -> None:
    """Probe ``nprobe`` lists, and let the HNSW quantizer look wide enough to find them."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = int(nprobe)
    quantizer = faiss.downcast_index(ivf.quantizer)
    if hasattr(quantizer, "hnsw"):
        quantizer.hnsw.efSearch = max(2 * int(nprobe), 64)


def ann_path(root: Path, ann: dict[str, Any]) -> Path:
    """The approximate index file a manifest's ``ann`` names: directly under
    ``root/ann``, also once symbolic links are resolved.

    Raises:
        AnnDamaged: the name is not ``ann/ann-HEX.faiss``, or it leads outside ``ann/``.
    """
    name = str(ann.get("file", ""))
    if not ANN_FILE.fullmatch(name):
        raise AnnDamaged(f"index {root}: {name!r} is not an approximate index file name")
    path = root / name
    if not path.resolve().is_relative_to((root / "ann").resolve()):
        raise AnnDamaged(
            f"index {root}: the approximate index file {name} leads outside {root / 'ann'} "
            "(a symbolic link); refusing to read it"
        )
    return path


def _repair_hint(root: Path | str) -> str:
    return (
        f"rebuild it from the stored vectors with `python -m lib index compact {root}` "
        "(or build the index again)"
    )


def read_ann(root: Path, manifest: IndexManifest, source: Path | None = None) -> Any:
    """The manifest's approximate index, read and checked against it (:func:`check_ann`),
    its ``nprobe`` set. ``source``: where to read it instead (a descriptor kept open by a
    reader, ``/proc/self/fd/N``); the name is still the manifest's.

    Raises:
        FileNotFoundError: the file is missing (a compaction may have replaced it; the
            caller reads the manifest again).
        AnnDamaged: the file cannot be read as a FAISS index, or does not match the
            manifest; the message names the file and says how to rebuild it.
    """
    import faiss

    assert manifest.ann is not None, "read_ann needs a manifest with an approximate index"
    path = ann_path(root, manifest.ann)
    where = source or path
    if not where.is_file():
        raise FileNotFoundError(f"index {root}: the approximate index file {path} is missing")
    try:
        index = faiss.read_index(str(where))
    except (RuntimeError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnnDamaged(
            f"the approximate index file {path} is damaged (FAISS cannot read it: "
            f"{first[:200]}); {_repair_hint(root)}"
        ) from None
    check_ann(index, int(manifest.ann["rows"]), manifest.dim, f"{path}", root)
    nlist = int(faiss.extract_index_ivf(index).nlist)
    set_nprobe(index, search_nprobe(int(manifest.ann.get("nprobe", 32)), nlist))
    return index


def check_ann(index: Any, rows: int, dim: int, name: str, root: Path | str = "INDEX_DIR") -> None:
    """Check that ``index`` is an IVF index of ``rows`` vectors of ``dim`` whose inverted
    lists hold row ids ``0 .. rows-1`` only (FAISS does not check them on reading, and a
    search would return rows that do not exist), ``rows`` of them, over a quantizer of one
    centroid a list. Reads every stored id once: 0.1 s at 10M rows in 8,192 lists on the
    2-core machine.

    Raises:
        AnnDamaged: the first mismatch, naming ``name``.
    """
    import faiss

    def damaged(problem: str) -> AnnDamaged:
        return AnnDamaged(
            f"the approximate index file {name} is damaged ({problem}); {_repair_hint(root)}"
        )

    if int(index.d) != dim or int(index.ntotal) != rows:
        raise damaged(
            f"it holds {int(index.ntotal):,} vectors of dimension {int(index.d)}, the manifest "
            f"says {rows:,} of dimension {dim}"
        )
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        raise damaged("it is not an IVF index") from None
    lists = ivf.invlists
    if lists is None or int(lists.nlist) != int(ivf.nlist):
        raise damaged("its inverted lists do not match its list count")
    total = 0
    for i in range(int(ivf.nlist)):
        size = int(lists.list_size(i))
        total += size
        if size:
            ids = faiss.rev_swig_ptr(lists.get_ids(i), size)
            if int(ids.min()) < 0 or int(ids.max()) >= rows:
                raise damaged(f"list {i} holds row ids outside 0..{rows - 1}")
    if total != rows:
        raise damaged(f"its lists hold {total:,} entries for {rows:,} vectors")
    _check_quantizer(faiss.downcast_index(ivf.quantizer), int(ivf.nlist), dim, damaged)


def _check_quantizer(quantizer: Any, nlist: int, dim: int, damaged: Any) -> None:
    """The coarse quantizer holds ``nlist`` centroids of ``dim``. (FAISS itself checks an
    HNSW quantizer's links when it reads the file, ``validate_HNSW``.)"""
    if int(quantizer.ntotal) != nlist or int(quantizer.d) != dim:
        raise damaged(f"its quantizer holds {int(quantizer.ntotal)} centroids for {nlist} lists")


class SegmentSearch:
    """Search over a format-2 index: approximate shortlist, exact scores.

    Duck-types the part of a FAISS index the rest of Replica uses: ``ntotal``, ``d``
    and ``search(queries (n, d) float32, k) -> (similarities (n, k) float32
    descending, row ids (n, k) int64, -1 where fewer than k rows)``.

    Args:
        vectors: all rows (the exact scores come from here).
        ann: a FAISS IVF index over rows ``0 .. ann.ntotal-1``.
        tail: an exact ``IndexFlatIP`` over the rows after those, or None.
    """

    def __init__(self, vectors: SegmentVectors, ann: Any, tail: Any | None, *, name: str = ""):
        """Raises AnnDamaged when ``ann`` is not a sound IVF index over the first rows of
        ``vectors`` (:func:`check_ann`; ``name`` names its file in the message)."""
        covered = int(ann.ntotal)
        if covered > len(vectors):
            raise AnnDamaged(
                f"the approximate index file {name or 'of this index'} is damaged (it holds "
                f"{covered:,} vectors, the index {len(vectors):,}); {_repair_hint('INDEX_DIR')}"
            )
        check_ann(ann, covered, vectors.dim, name or "of this index")
        self.vectors = vectors
        self.ann = ann
        self.tail = tail
        self.covered = covered
        self.ntotal = len(vectors)
        self.d = vectors.dim

    def shortlist(self, k: int) -> int:
        return max(SHORTLIST_MIN, 4 * k)

    def search(
        self, queries: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by exact inner product among the shortlisted candidates.

        Args:
            queries: (n, d) float32.
            nprobe: lists probed this time (default: the index's own); fewer is faster
                and finds only the closest neighbours reliably (near-duplicates).

        Returns:
            similarities (n, k) float32 descending (ties: lower row first) and row ids
            (n, k) int64; -inf and -1 where fewer than k candidates.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        wanted = min(self.shortlist(k), self.ntotal)
        if nprobe is None:
            _, ids = self.ann.search(queries, min(wanted, self.covered))
        else:
            import faiss

            params = faiss.SearchParametersIVF()
            params.nprobe = int(nprobe)
            _, ids = self.ann.search(queries, min(wanted, self.covered), params=params)
        if ids.size and int(ids.max()) >= self.covered:
            raise AnnDamaged(
                f"the approximate index returned row {int(ids.max())} of {self.covered}: it "
                f"is damaged; {_repair_hint('INDEX_DIR')}"
            )
        if self.tail is not None and self.tail.ntotal:
            _, tail_ids = self.tail.search(queries, min(wanted, int(self.tail.ntotal)))
            tail_ids = np.where(tail_ids >= 0, tail_ids + self.covered, -1)
            ids = np.concatenate([ids, tail_ids], axis=1)
        sims_out = np.full((len(queries), k), -np.inf, np.float32)
        ids_out = np.full((len(queries), k), -1, np.int64)
        batch = max(1, RERANK_CANDIDATES // max(1, ids.shape[1]))
        for start in range(0, len(queries), batch):
            stop = start + batch
            s, i = self._rerank(queries[start:stop], ids[start:stop], k)
            sims_out[start:stop, : s.shape[1]], ids_out[start:stop, : i.shape[1]] = s, i
        return sims_out, ids_out

    def _rerank(
        self, queries: np.ndarray, ids: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query's candidates (ids (n, m), -1 for none, repeats
        allowed), best k first."""
        ids = np.sort(ids, axis=1)
        valid = ids >= 0
        valid[:, 1:] &= ids[:, 1:] != ids[:, :-1]
        unique, inverse = np.unique(ids[valid], return_inverse=True)
        stored = self.vectors[unique]
        rows = np.nonzero(valid)[0]
        scores = np.full(ids.shape, -np.inf, np.float32)
        scores[valid] = np.einsum("ij,ij->i", queries[rows], stored[inverse])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: lower id first
        top_scores = np.take_along_axis(scores, order, 1)
        top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(ids, order, 1), -1)
        return top_scores, top_ids
