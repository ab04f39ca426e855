"""Ground truth and scores of benchmarks/peers.py: precision over all proposed pairs,
recall per edit kind, look-alikes flagged, and recall at a fixed precision.

A pair is two file names, unordered (stored sorted). A proposed pair is right only when it
is a planted (original, copy) pair; a look-alike pair, or any other pair, is wrong.

    truth = GroundTruth.from_json(json.loads(Path("truth.json").read_text()))
    quality = evaluate({pair("img0001.png", "img0420.png")}, truth)
    recall, threshold = recall_at_precision([(pair("a", "b"), 0.93)], truth, 0.95)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Pair = tuple[str, str]


def pair(a: str, b: str) -> Pair:
    """The unordered pair of two file names, as a sorted tuple."""
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True)
class GroundTruth:
    """Planted (original, copy) pairs with their edit kind, and look-alike pairs with theirs."""

    planted: dict[Pair, str]
    lookalikes: dict[Pair, str]
    kinds: tuple[str, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroundTruth:
        """From a ``truth.json`` of :func:`benchmarks._peers_data.build_collection`."""
        return cls(
            planted={pair(a, b): kind for a, b, kind in data["planted"]},
            lookalikes={pair(a, b): kind for a, b, kind in data["lookalikes"]},
            kinds=tuple(data["kinds"]),
        )

    @property
    def lookalike_kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.lookalikes.values()))


@dataclass
class Quality:
    """How one set of proposed pairs scores against the truth.

    ``precision`` is None when nothing was proposed; recalls are 0..1; ``lookalikes`` maps
    a look-alike kind to (pairs proposed, pairs planted)."""

    proposed: int
    right: int
    precision: float | None
    recall: dict[str, float]
    recall_all: float
    lookalikes: dict[str, tuple[int, int]] = field(default_factory=dict)
    other_wrong: int = 0
    """Wrong pairs that are not look-alike pairs."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "proposed": self.proposed,
            "right": self.right,
            "precision": self.precision,
            "recall": self.recall,
            "recall_all": self.recall_all,
            "lookalikes_flagged": {k: list(v) for k, v in self.lookalikes.items()},
            "other_wrong": self.other_wrong,
        }


def evaluate(proposed: Iterable[Pair], truth: GroundTruth) -> Quality:
    """Precision, recall per kind and over all edits, and look-alikes flagged."""
    found = {pair(*p) for p in proposed}
    right = found & truth.planted.keys()
    looks = found & truth.lookalikes.keys()
    recall = {}
    for kind in truth.kinds:
        of_kind = [p for p, k in truth.planted.items() if k == kind]
        recall[kind] = sum(p in right for p in of_kind) / len(of_kind) if of_kind else 0.0
    flagged = {
        kind: (
            sum(1 for p in looks if truth.lookalikes[p] == kind),
            sum(1 for k in truth.lookalikes.values() if k == kind),
        )
        for kind in truth.lookalike_kinds
    }
    return Quality(
        proposed=len(found),
        right=len(right),
        precision=len(right) / len(found) if found else None,
        recall=recall,
        recall_all=len(right) / len(truth.planted) if truth.planted else 0.0,
        lookalikes=flagged,
        other_wrong=len(found) - len(right) - len(looks),
    )


def recall_at_precision(
    scored: Iterable[tuple[Pair, float]], truth: GroundTruth, target: float = 0.95
) -> tuple[float, float | None]:
    """The highest recall over all edits at any threshold whose precision is ``target`` or
    more, and that threshold (pairs with score >= it are proposed; higher = more alike).

    Thresholds are the distinct scores, so tied pairs go in or out together (a Hamming
    distance of 6 takes every pair at 6). (0.0, None) when no threshold reaches ``target``.
    A pair listed twice keeps its higher score.
    """
    if not truth.planted:
        return 0.0, None
    best: dict[Pair, float] = {}
    for p, s in scored:
        key = pair(*p)
        best[key] = max(s, best.get(key, s))
    order = sorted(best.items(), key=lambda item: -item[1])
    recall, threshold = 0.0, None
    right = 0
    for total, (p, s) in enumerate(order, start=1):
        right += p in truth.planted
        last_of_tie = total == len(order) or order[total][1] != s
        if last_of_tie and right / total >= target and right / len(truth.planted) >= recall:
            recall, threshold = right / len(truth.planted), s
    return recall, threshold


def scores_by_kind(
    scored: Iterable[tuple[Pair, float]], truth: GroundTruth
) -> dict[str, dict[str, Any]]:
    """Per edit kind and look-alike kind: how many of its pairs a (sweep) list holds and
    their median score (None when it holds none), to read a tool's default threshold
    against."""
    score: dict[Pair, float] = {}
    for p, s in scored:
        key = pair(*p)
        score[key] = max(s, score.get(key, s))
    groups: dict[str, list[Pair]] = {}
    for p, kind in [*truth.planted.items(), *truth.lookalikes.items()]:
        groups.setdefault(kind, []).append(p)
    out = {}
    for kind, pairs in groups.items():
        found = sorted(score[p] for p in pairs if p in score)
        median = None
        if found:
            mid = len(found) // 2
            median = found[mid] if len(found) % 2 else (found[mid - 1] + found[mid]) / 2
        out[kind] = {"pairs": len(pairs), "listed": len(found), "median_score": median}
    return out


def precision_at_end(scored: Iterable[tuple[Pair, float]], truth: GroundTruth) -> float | None:
    """Precision of a whole scored list: a sweep that ends above the target precision may
    have stopped too early to find the best recall at it."""
    pairs = {pair(*p) for p, _ in scored}
    return len(pairs & truth.planted.keys()) / len(pairs) if pairs else None
