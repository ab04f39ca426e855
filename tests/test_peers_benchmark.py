"""benchmarks/peers.py's scoring on a planted tiny set (worked out by hand in the comments),
its edit plan, and the measuring launcher. Offline; installs nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from benchmarks._peers_data import KINDS, Picture, plan_edits
from benchmarks._peers_measure import measure
from benchmarks._peers_metrics import (
    GroundTruth,
    evaluate,
    pair,
    recall_at_precision,
    scores_by_kind,
)
from benchmarks._peers_runner import _dedupe
from benchmarks.peers import _exact_pairs

# Planted: o1~c1 (jpeg), o2~c2 (jpeg), o3~c3 (flip). Look-alikes: h1~h2, h1~h3, h2~h3
# (recoloured), m1~m2 (mirrored).
TRUTH = GroundTruth.from_json(
    {
        "kinds": ["jpeg", "flip"],
        "planted": [["o1", "c1", "jpeg"], ["c2", "o2", "jpeg"], ["o3", "c3", "flip"]],
        "lookalikes": [
            ["h1", "h2", "recoloured"],
            ["h1", "h3", "recoloured"],
            ["h2", "h3", "recoloured"],
            ["m2", "m1", "mirrored"],
        ],
    }
)


def test_precision_counts_lookalikes_and_other_pairs_as_wrong() -> None:
    # proposed: c1~o1 (right, reversed), o2~c2 (right), h2~h1 (look-alike), m1~m2
    # (look-alike), o1~o2 (other), and o1~c1 again: 5 distinct pairs, 2 right
    q = evaluate(
        [("c1", "o1"), ("o2", "c2"), ("h2", "h1"), ("m1", "m2"), ("o1", "o2"), ("o1", "c1")],
        TRUTH,
    )
    assert (q.proposed, q.right, q.other_wrong) == (5, 2, 1)
    assert q.precision == pytest.approx(2 / 5)
    assert q.recall == {"jpeg": 1.0, "flip": 0.0}
    assert q.recall_all == pytest.approx(2 / 3)
    assert q.lookalikes == {"recoloured": (1, 3), "mirrored": (1, 1)}


def test_nothing_proposed_has_no_precision() -> None:
    q = evaluate([], TRUTH)
    assert q.precision is None and q.recall_all == 0.0


def test_recall_at_precision_takes_ties_together() -> None:
    # scores: o1~c1 0.9, o2~c2 0.8, h1~h2 0.8, o3~c3 0.7, m1~m2 0.6
    # cut >= 0.9: 1/1 right, recall 1/3; cut >= 0.8: 2/3 right (the tie goes in whole),
    # recall 2/3; cut >= 0.7: 3/4; cut >= 0.6: 3/5
    scored = [
        (pair("o1", "c1"), 0.9),
        (pair("o2", "c2"), 0.8),
        (pair("h1", "h2"), 0.8),
        (pair("o3", "c3"), 0.7),
        (pair("m1", "m2"), 0.6),
        (pair("c1", "o1"), 0.1),  # listed twice: the higher score counts
    ]
    assert recall_at_precision(scored, TRUTH, 0.95) == (pytest.approx(1 / 3), 0.9)
    assert recall_at_precision(scored, TRUTH, 0.75) == (1.0, 0.7)
    assert recall_at_precision(scored, TRUTH, 0.5) == (1.0, 0.6)
    # a look-alike above every copy: precision never reaches 0.95
    assert recall_at_precision([(pair("h1", "h3"), 1.0), *scored], TRUTH, 0.95) == (0.0, None)


def test_scores_by_kind_takes_the_median_of_listed_pairs() -> None:
    scored = [(pair("o1", "c1"), 0.9), (pair("o2", "c2"), 0.5), (pair("h1", "h2"), 0.7)]
    by_kind = scores_by_kind(scored, TRUTH)
    assert by_kind["jpeg"] == {"pairs": 2, "listed": 2, "median_score": pytest.approx(0.7)}
    assert by_kind["flip"] == {"pairs": 1, "listed": 0, "median_score": None}
    assert by_kind["recoloured"] == {"pairs": 3, "listed": 1, "median_score": 0.7}


def test_edit_plan_deals_every_kind_to_both_domains() -> None:
    blank = Image.new("RGB", (1, 1))
    originals = [Picture(f"p{i}", "photo", blank) for i in range(40)]
    originals += [Picture(f"e{i}", "emoji", blank) for i in range(40)]
    plan = plan_edits(originals, 32, seed=0)
    assert len({i for i, _ in plan}) == 32  # distinct sources
    for domain in ("photo", "emoji"):
        kinds = [k for i, k in plan if originals[i].domain == domain]
        assert sorted(kinds) == sorted(KINDS * 2)


def test_exact_pairs_from_the_skipped_list(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"same")
    (tmp_path / "b.png").write_bytes(b"same")
    (tmp_path / "c.png").write_bytes(b"other")
    skipped = [["b.png", "duplicate of a.png (same sha256)"], ["c.png", "not an image"]]
    assert _exact_pairs(tmp_path, skipped) == {("a.png", "b.png")}


def test_runner_keeps_one_entry_per_pair() -> None:
    pairs = [("b", "a", -4.0), ("a", "b", -2.0), ("a", "a", 0.0), ("a", "c", -9.0)]
    assert _dedupe(pairs) == [("a", "b", -2.0), ("a", "c", -9.0)]


def test_measure_reports_the_commands_own_memory(tmp_path: Path) -> None:
    grow = "x = bytearray(64 * 2**20); x[::4096] = b'1' * len(x[::4096])"
    m = measure([sys.executable, "-c", grow], tmp_path / "log.txt")
    assert m.returncode == 0
    assert 64 <= m.max_rss_mb < 64 + 200  # the 64 MiB, not the test process's own size
    failed = measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log.txt")
    assert failed.returncode == 3
