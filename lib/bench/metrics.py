"""Retrieval and copy-detection metrics over ranked candidate lists with known answers.

Two families, as in SSCD's evaluation of DISC21:

- **Per-query ranking** (only queries that have a source count): average precision of the
  relevant references in the query's ranking (mAP), recall@k (the source is among the
  first k), and the mean reciprocal rank of the first relevant reference (MRR). With one
  source per query, AP is 1/rank of the source, so mAP equals MRR.
- **Micro-average precision (uAP)** over every (query, candidate) pair of all queries
  pooled and sorted by score: a pair is positive when the candidate is one of the query's
  sources. Distractor queries (no source) add only negatives. Recall is counted against
  every true (query, source) pair, so a source missing from a query's candidate list is a
  miss. Pairs with equal scores form one operating point. Also: the best recall reachable
  at a precision of at least 90% and the score threshold that reaches it.

Scores are any real numbers where higher means "more likely a copy" (raw cosine, or
calibrated score). A score matrix can be turned into ranked lists with :func:`rank_matrix`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_KS = (1, 5, 10)
DEFAULT_PRECISION_TARGET = 0.9


@dataclass(frozen=True)
class RankedQuery:
    """One query's candidates, best first, and which of them are right.

    ``candidates``: reference ids in rank order; ``scores``: their scores, same length,
    non-increasing; ``positives``: the ids of the query's true sources (empty for a
    distractor query).
    """

    query: str
    candidates: tuple[str, ...]
    scores: tuple[float, ...]
    positives: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if len(self.candidates) != len(self.scores):
            raise ValueError(
                f"query {self.query!r}: {len(self.candidates)} candidates but "
                f"{len(self.scores)} scores"
            )


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall at each distinct score threshold, highest threshold first.

    ``thresholds[i]``: accept every pair scoring at least this; ``precision[i]``,
    ``recall[i]``: 0..1 at that operating point.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def points(self, max_points: int = 200) -> list[dict[str, float]]:
        """At most ``max_points`` evenly spaced points (always the last) for JSON."""
        n = len(self.thresholds)
        if n == 0:
            return []
        keep = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
        return [
            {
                "threshold": round(float(self.thresholds[i]), 6),
                "precision": round(float(self.precision[i]), 6),
                "recall": round(float(self.recall[i]), 6),
            }
            for i in keep
        ]


@dataclass
class RetrievalMetrics:
    """Metrics of one set of ranked queries. Every rate is in 0..1.

    ``recall_at_precision`` is the highest recall at precision >= ``precision_target``
    (0 when no threshold reaches it) and ``threshold_at_precision`` the highest score
    threshold that gives it (None then).
    """

    n_queries: int
    n_with_source: int
    n_distractors: int
    n_positive_pairs: int
    mean_ap: float
    mrr: float
    recall_at: dict[int, float]
    micro_ap: float
    precision_target: float
    recall_at_precision: float
    threshold_at_precision: float | None
    curve: PRCurve = field(repr=False)

    def to_dict(self, curve_points: int = 0) -> dict[str, Any]:
        """JSON-ready; ``curve_points`` > 0 adds that many precision-recall points."""
        out: dict[str, Any] = {
            "n_queries": self.n_queries,
            "n_with_source": self.n_with_source,
            "n_distractors": self.n_distractors,
            "n_positive_pairs": self.n_positive_pairs,
            "mAP": round(self.mean_ap, 6),
            "MRR": round(self.mrr, 6),
            **{f"recall@{k}": round(v, 6) for k, v in self.recall_at.items()},
            "uAP": round(self.micro_ap, 6),
            "precision_target": self.precision_target,
            "recall@precision": round(self.recall_at_precision, 6),
            "threshold@precision": None
            if self.threshold_at_precision is None
            else round(self.threshold_at_precision, 6),
        }
        if curve_points:
            out["pr_curve"] = self.curve.points(curve_points)
        return out


def first_positive_rank(query: RankedQuery) -> int | None:
    """1-based rank of the first relevant candidate, or None when none was retrieved."""
    for rank, candidate in enumerate(query.candidates, start=1):
        if candidate in query.positives:
            return rank
    return None


def average_precision(query: RankedQuery) -> float:
    """AP of one query: the mean, over its sources, of the precision at the rank where
    each is found (0 for a source not in the list). 0..1; 0 for a distractor."""
    if not query.positives:
        return 0.0
    hits, total = 0, 0.0
    seen: set[str] = set()
    for rank, candidate in enumerate(query.candidates, start=1):
        if candidate in query.positives and candidate not in seen:
            seen.add(candidate)
            hits += 1
            total += hits / rank
    return total / len(query.positives)


def pr_curve(queries: Sequence[RankedQuery]) -> tuple[PRCurve, int]:
    """Precision-recall over all (query, candidate) pairs pooled, and the number of
    true pairs (the recall denominator)."""
    scores, labels = [], []
    n_true = 0
    for q in queries:
        n_true += len(q.positives)
        seen: set[str] = set()
        for candidate, score in zip(q.candidates, q.scores, strict=True):
            if candidate in seen:
                continue
            seen.add(candidate)
            scores.append(score)
            labels.append(candidate in q.positives)
    if not scores:
        empty = np.zeros(0)
        return PRCurve(empty, empty, empty), n_true
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    accepted = np.arange(1, len(s) + 1)
    # one operating point per distinct score: the end of each run of equal scores
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    thresholds = s[last_of_tie]
    precision = tp[last_of_tie] / accepted[last_of_tie]
    recall = tp[last_of_tie] / n_true if n_true else np.zeros(len(thresholds))
    return PRCurve(thresholds, precision, recall), n_true


def micro_average_precision(curve: PRCurve) -> float:
    """Area under the precision-recall steps: sum of precision x recall gained, 0..1."""
    if len(curve.recall) == 0:
        return 0.0
    gained = np.diff(np.r_[0.0, curve.recall])
    return float(np.sum(gained * curve.precision))


def recall_at_precision(curve: PRCurve, target: float) -> tuple[float, float | None]:
    """Highest recall among thresholds whose precision is at least ``target``, and the
    highest threshold giving that recall; (0.0, None) when no threshold reaches the
    target."""
    ok = np.flatnonzero(curve.precision >= target)
    if ok.size == 0:
        return 0.0, None
    best_recall = curve.recall[ok].max()
    first = ok[np.flatnonzero(curve.recall[ok] == best_recall)[0]]
    return float(best_recall), float(curve.thresholds[first])


def compute_metrics(
    queries: Sequence[RankedQuery],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    precision_target: float = DEFAULT_PRECISION_TARGET,
) -> RetrievalMetrics:
    """All metrics for ranked queries (see the module docstring).

    Raises:
        ValueError: a k below 1 or a precision target outside 0..1.
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {list(ks)}")
    if not 0.0 < precision_target <= 1.0:
        raise ValueError(f"precision_target must be in (0, 1], got {precision_target}")
    with_source = [q for q in queries if q.positives]
    ranks = [first_positive_rank(q) for q in with_source]
    n = len(with_source)
    mean_ap = float(np.mean([average_precision(q) for q in with_source])) if n else 0.0
    mrr = float(np.mean([1.0 / r if r else 0.0 for r in ranks])) if n else 0.0
    recall_at = {int(k): (sum(1 for r in ranks if r and r <= k) / n if n else 0.0) for k in ks}
    curve, n_true = pr_curve(queries)
    r_at_p, threshold = recall_at_precision(curve, precision_target)
    return RetrievalMetrics(
        n_queries=len(queries),
        n_with_source=n,
        n_distractors=len(queries) - n,
        n_positive_pairs=n_true,
        mean_ap=mean_ap,
        mrr=mrr,
        recall_at=recall_at,
        micro_ap=micro_average_precision(curve),
        precision_target=precision_target,
        recall_at_precision=r_at_p,
        threshold_at_precision=threshold,
        curve=curve,
    )


def rank_matrix(
    scores: np.ndarray,
    query_ids: Sequence[str],
    reference_ids: Sequence[str],
    positives: Sequence[frozenset[str] | set[str]],
    *,
    top_k: int | None = None,
) -> list[RankedQuery]:
    """Ranked queries from a score matrix.

    Args:
        scores: (n_queries, n_references) float, higher is better.
        query_ids, reference_ids: labels of the rows and columns.
        positives: per query, the reference ids of its sources.
        top_k: keep this many candidates per query (default: all). Ties keep column order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(query_ids), len(reference_ids)) or len(positives) != len(query_ids):
        raise ValueError(
            f"scores {scores.shape} do not match {len(query_ids)} queries, "
            f"{len(reference_ids)} references and {len(positives)} positive sets"
        )
    k = scores.shape[1] if top_k is None else max(1, min(top_k, scores.shape[1]))
    out = []
    for i, qid in enumerate(query_ids):
        order = np.argsort(-scores[i], kind="stable")[:k]
        out.append(
            RankedQuery(
                query=qid,
                candidates=tuple(reference_ids[j] for j in order),
                scores=tuple(float(scores[i, j]) for j in order),
                positives=frozenset(positives[i]),
            )
        )
    return out
