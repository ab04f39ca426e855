"""Benchmark metrics against small cases computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from lib.bench.metrics import (
    RankedQuery,
    average_precision,
    compute_metrics,
    pr_curve,
    rank_matrix,
)


def q(name: str, pairs: list[tuple[str, float]], *sources: str) -> RankedQuery:
    return RankedQuery(
        query=name,
        candidates=tuple(c for c, _ in pairs),
        scores=tuple(s for _, s in pairs),
        positives=frozenset(sources),
    )


# Three copies and one distractor over references a, b, c, d:
#   q1 (source a): a 0.90, b 0.50, c 0.30   -> source at rank 1
#   q2 (source b): c 0.80, b 0.70, a 0.20   -> source at rank 2
#   q3 (source c): a 0.60, b 0.40, d 0.10   -> source not retrieved
#   d1 (no source): d 0.85, a 0.35, b 0.25
CASE = [
    q("q1", [("a", 0.9), ("b", 0.5), ("c", 0.3)], "a"),
    q("q2", [("c", 0.8), ("b", 0.7), ("a", 0.2)], "b"),
    q("q3", [("a", 0.6), ("b", 0.4), ("d", 0.1)], "c"),
    q("d1", [("d", 0.85), ("a", 0.35), ("b", 0.25)]),
]


def test_ranking_metrics_by_hand() -> None:
    m = compute_metrics(CASE, ks=(1, 2, 3))
    # AP per copy query = 1/rank of its single source: 1, 1/2, 0 -> mAP = 1.5 / 3 = 0.5
    assert m.mean_ap == pytest.approx(0.5)
    # MRR is the same with one source per query
    assert m.mrr == pytest.approx(0.5)
    # recall@1: only q1 -> 1/3; @2: q1, q2 -> 2/3; @3: still 2/3 (q3 never finds c)
    assert m.recall_at == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 2 / 3})
    assert (m.n_queries, m.n_with_source, m.n_distractors, m.n_positive_pairs) == (4, 3, 1, 3)


def test_micro_ap_and_recall_at_precision_by_hand() -> None:
    m = compute_metrics(CASE)
    # All 12 pairs sorted by score; P = (query, its source):
    #   0.90 q1-a P  -> tp 1 / 1 accepted: precision 1,   recall 1/3
    #   0.85 d1-d    -> 1/2,                           recall 1/3
    #   0.80 q2-c    -> 1/3
    #   0.70 q2-b P  -> tp 2 / 4 accepted: precision 1/2, recall 2/3
    #   ... 8 more negatives; q3-c was never retrieved, so recall stops at 2/3.
    # uAP = sum(recall gained x precision) = 1/3 * 1 + 1/3 * 1/2 = 0.5
    assert m.micro_ap == pytest.approx(0.5)
    # precision >= 0.9 only at the first point: recall 1/3 at threshold 0.9
    assert m.recall_at_precision == pytest.approx(1 / 3)
    assert m.threshold_at_precision == pytest.approx(0.9)
    # at precision >= 0.5 the point at 0.70 (precision 1/2, recall 2/3) is reachable
    half = compute_metrics(CASE, precision_target=0.5)
    assert half.recall_at_precision == pytest.approx(2 / 3)
    assert half.threshold_at_precision == pytest.approx(0.7)


def test_curve_points_by_hand() -> None:
    curve, n_true = pr_curve(CASE)
    assert n_true == 3
    assert len(curve.thresholds) == 12  # 12 distinct scores
    np.testing.assert_allclose(curve.precision[:4], [1, 1 / 2, 1 / 3, 2 / 4])
    np.testing.assert_allclose(curve.recall[:4], [1 / 3, 1 / 3, 1 / 3, 2 / 3])
    # at the lowest threshold every pair is accepted: 2 of 12 right
    assert curve.precision[-1] == pytest.approx(2 / 12)


def test_tied_scores_form_one_operating_point() -> None:
    # q1 (source a): a 0.5, b 0.5; d1 (no source): x 0.8.
    # Sorted: 0.8 negative, then {q1-a P, q1-b N} tied at 0.5 -> one point with
    # tp 1 of 3 accepted. uAP = recall 1 x precision 1/3 = 1/3 (not 1/2, which an
    # arbitrary tie order putting the positive first would give).
    m = compute_metrics([q("q1", [("a", 0.5), ("b", 0.5)], "a"), q("d1", [("x", 0.8)])])
    assert m.micro_ap == pytest.approx(1 / 3)
    assert m.recall_at_precision == 0.0 and m.threshold_at_precision is None


def test_average_precision_with_two_sources() -> None:
    # sources {a, c}; ranking a, b, c: precision 1/1 at a and 2/3 at c -> (1 + 2/3) / 2 = 5/6
    assert average_precision(q("q", [("a", 3), ("b", 2), ("c", 1)], "a", "c")) == pytest.approx(
        5 / 6
    )
    # only a retrieved: (1 + 0) / 2 = 1/2
    assert average_precision(q("q", [("a", 3), ("b", 2)], "a", "c")) == pytest.approx(0.5)


def test_calibrated_scores_change_pooled_but_not_per_query_metrics() -> None:
    # raw:  q1 (source a): a 0.90, b 0.85;  d1: x 0.92, y 0.60
    #   sorted 0.92 N, 0.90 P -> uAP = 1 x 1/2 = 0.5
    # minus a background per query (q1 0.80, d1 0.90):
    #   q1: a 0.10, b 0.05;  d1: x 0.02, y -0.30 -> the positive comes first: uAP = 1
    raw = [q("q1", [("a", 0.9), ("b", 0.85)], "a"), q("d1", [("x", 0.92), ("y", 0.6)])]
    cal = [q("q1", [("a", 0.1), ("b", 0.05)], "a"), q("d1", [("x", 0.02), ("y", -0.3)])]
    m_raw, m_cal = compute_metrics(raw), compute_metrics(cal)
    assert m_raw.micro_ap == pytest.approx(0.5)
    assert m_cal.micro_ap == pytest.approx(1.0)
    assert m_raw.mean_ap == m_cal.mean_ap == 1.0
    assert m_cal.recall_at_precision == 1.0 and m_cal.threshold_at_precision == pytest.approx(0.1)


def test_rank_matrix_orders_and_truncates() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.4]])
    ranked = rank_matrix(scores, ["q0", "q1"], ["r0", "r1", "r2"], [{"r2"}, set()], top_k=2)
    assert ranked[0].candidates == ("r1", "r2") and ranked[0].scores == (0.9, 0.5)
    assert ranked[1].candidates == ("r2", "r0") and not ranked[1].positives
    m = compute_metrics(ranked, ks=(1, 2))
    # q0's source r2 is at rank 2: AP 1/2, recall@1 0, recall@2 1
    assert (m.mean_ap, m.recall_at[1], m.recall_at[2]) == (0.5, 0.0, 1.0)


def test_empty_and_distractor_only_inputs_give_zeros() -> None:
    assert compute_metrics([]).micro_ap == 0.0
    m = compute_metrics([q("d1", [("x", 0.3)])])
    assert (m.mean_ap, m.mrr, m.micro_ap, m.n_with_source) == (0.0, 0.0, 0.0, 0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="candidates"):
        RankedQuery("q", ("a", "b"), (1.0,))
    with pytest.raises(ValueError, match="k must"):
        compute_metrics(CASE, ks=(0,))
    with pytest.raises(ValueError, match="precision_target"):
        compute_metrics(CASE, precision_target=1.5)
