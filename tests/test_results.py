"""Result types: one module (lib.results) that lib.search and lib.regions both import, so
that the two never import each other; every name stays importable from lib.search."""

from __future__ import annotations

import subprocess
import sys


def test_regions_does_not_import_search() -> None:
    code = (
        "import sys, lib.regions; "
        "assert 'lib.search' not in sys.modules, sorted(m for m in sys.modules if 'lib.' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_search_keeps_its_public_names() -> None:
    import lib.regions
    import lib.results
    import lib.search

    for name in ("Match", "QueryResult", "judge", "ordered_pair"):
        assert getattr(lib.search, name) is getattr(lib.results, name)
    assert lib.regions.Match is lib.results.Match
    assert lib.regions.QueryResult is lib.results.QueryResult
    for name in lib.search.__all__:
        assert hasattr(lib.search, name)


def test_numbers_never_contradict_their_sentence() -> None:
    """A weak match is described by how many unrelated images score as high (not '76.9%
    score lower' beside 'nothing stands out'); a value above its threshold is never
    printed as the same number ('0.99 ... at or above the 0.99'); a NO CLEAR MATCH says
    it is not a clearance and wears no green tick."""
    from lib.calibration import Calibration
    from lib.results import Match, QueryResult, judge, ordered_pair, percentile_words
    from pages.common import VERDICT_BADGES

    assert ordered_pair(0.9912, 0.9904) == ("0.991", "0.990")
    assert ordered_pair(0.25, 0.25) == ("0.25", "0.25")  # a true tie stays a tie
    assert percentile_words("copy", 99.2) == "99.2% of unrelated images score lower"
    assert percentile_words("none", 76.9) == "23.1% of unrelated images score as high or higher"
    assert percentile_words("none", None) == ""

    cal = Calibration(null_sample=100, null_scores=[i / 1000 for i in range(100)])
    weak = judge(QueryResult(query="q"), [Match(1, 3, "a.png", 0.6, 0.0455)], cal)
    assert weak.verdict == "none"
    text = weak.explanation()
    assert "score lower" not in text and "54.0% score as high or higher" in text
    assert "not a clearance" in text
    _, colour, icon = VERDICT_BADGES["none"]
    assert colour != "green" and "check" not in icon
