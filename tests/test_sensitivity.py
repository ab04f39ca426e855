"""The verdict's measured sensitivity: copies of the collection's own images judged again
at any operating point, measured through the query's own path, stored with the index, kept
across refits, refused when a manifest holds impossible ones, and stated in the sentence
and the JSON of every verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lib.calibration import Calibration
from lib.cli import main
from lib.index import IndexNotFound, add_to_index, build_index, open_index
from lib.results import QueryResult, judge, leading
from lib.search import Match, search_images
from lib.verdict.copy_tests import CopyTest, summarise
from lib.verdict.sensitivity import (
    copy_counts,
    learn_sensitivity,
    make_copies,
    measure_copy_tests,
    needs_measuring,
)
from tests.synthetic import write_scenes

NULL = [round(x, 3) for x in np.linspace(-0.1, 0.3, 401)]
"""A planted null of calibrated scores: its 98th percentile is about 0.29, its 90th 0.26."""


def _calibration(rate: float = 0.02, tests: list[CopyTest] | None = None) -> Calibration:
    base = Calibration(null_sample=len(NULL), null_scores=NULL, copy_tests=tests or [])
    return base.with_false_alarm_rate(rate)


def _test(kind: str, calibrated: list[float], source_at: int, edits: list[str]) -> CopyTest:
    return CopyTest(kind, edits, [0.6] * len(calibrated), calibrated, [None] * len(calibrated),
                    source_at)  # fmt: skip


PLANTED = [
    _test("edited", [0.35, 0.0], 0, ["crop"]),  # above every threshold, source first
    _test("edited", [0.28, 0.0], 0, ["crop", "jpeg"]),  # a copy at 10% only
    _test("edited", [0.35, 0.0], 1, ["jpeg"]),  # a strong match, but not the source
    _test("edited", [0.0, 0.0], 0, ["blur"]),  # missed at every point
    _test("pasted", [0.32, 0.0], 0, ["paste"]),
    _test("pasted", [0.0, 0.0], -1, ["paste"]),  # the source is not even shortlisted
]


def test_copies_are_judged_again_at_each_operating_point() -> None:
    strict = summarise(PLANTED, _calibration(0.005))
    loose = summarise(PLANTED, _calibration(0.10))
    assert strict is not None and loose is not None
    assert (strict.edited.caught, strict.edited.copies) == (1, 4)
    assert (loose.edited.caught, loose.edited.copies) == (2, 4)
    assert (loose.pasted.caught, loose.pasted.copies) == (1, 2)
    assert loose.by_edit["crop"].caught == 2 and loose.by_edit["crop"].copies == 2
    assert loose.by_edit["jpeg"].caught == 1 and loose.by_edit["blur"].caught == 0
    low, high = loose.edited.interval
    assert low < 0.5 < high
    assert summarise(PLANTED[:4], _calibration()) is None, "no pasted copies: not measured"


def test_a_shortlisted_image_that_aligns_leads_as_in_a_query() -> None:
    cal = Calibration(
        null_sample=len(NULL),
        null_scores=NULL,
        alignment_null=sorted(np.linspace(0.0, 0.9, 401).round(3).tolist()),
        evidence_null=sorted(np.linspace(0.0, 1.0, 401).round(3).tolist()),
    ).with_false_alarm_rate(0.02)
    aligned_source = CopyTest("edited", ["crop"], [0.7, 0.6], [0.05, 0.0], [0.1, 0.99], 1)
    assert aligned_source.caught(cal), "the source's pixels line up: it leads and is a copy"
    first = Match(rank=1, id=0, path="a", score=0.7, calibrated=0.05, alignment=0.1)
    second = Match(rank=2, id=1, path="b", score=0.6, calibrated=0.0, alignment=0.99)
    entries = [(m.score, m.calibrated, m.alignment) for m in (first, second)]
    assert leading(entries, cal) == 1, "the query path puts the aligned match first too"
    judged = judge(QueryResult(query="q"), [second, first], cal)
    assert judged.verdict == "copy" and judged.rule == "alignment"


def test_the_sentence_states_both_error_rates_and_a_miss_is_not_a_clearance() -> None:
    cal = _calibration(0.05, PLANTED)
    copy = judge(QueryResult(query="q"), [Match(1, 0, "a", 0.9, 0.35)], cal)
    assert copy.verdict == "copy"
    text = copy.explanation()
    assert "about 5 in 100 unrelated images of this collection are called copies" in text
    assert "about 50 in 100 edited copies" in text and "about 50 in 100 pasted" in text
    none = judge(QueryResult(query="q"), [Match(1, 0, "a", 0.5, 0.0)], cal)
    assert none.verdict == "none"
    assert "This is not a clearance: at this setting the check misses about 50 in 100 edited" in (
        none.explanation()
    )
    shape = none.to_dict()["measured_sensitivity"]
    assert shape["edited_copies"]["caught"] == 2 and shape["pasted_copies"]["copies"] == 2
    assert shape["false_alarm_rate"] == pytest.approx(0.05)
    unmeasured = judge(QueryResult(query="q"), [Match(1, 0, "a", 0.5, 0.0)], _calibration())
    assert unmeasured.to_dict()["measured_sensitivity"] is None
    assert "has not been measured" in unmeasured.explanation()


@pytest.fixture(scope="module")
def scenes_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sensitivity")
    write_scenes(root / "images", range(48))
    build_index(root / "images", root / "index", embedder="sscd-distilled")
    learn_sensitivity(root / "index")
    return root / "index"


def test_copies_are_measured_through_the_query_path_and_stored(scenes_index: Path) -> None:
    index = open_index(scenes_index)
    cal = index.calibration
    edited, pasted = copy_counts(index.count)
    assert (edited, pasted) == (48, 24)
    kinds = [t.kind for t in cal.copy_tests]
    assert kinds.count("edited") == edited and kinds.count("pasted") == pasted
    assert cal.copy_tests_rows == 48
    # the same copies searched as uploads: caught = verdict copy with the source on top
    copies = make_copies(index, seed=0)
    results = search_images(index, [(c.label, c.image) for c in copies], top_k=8)
    live = {
        kind: sum(
            r.verdict == "copy" and r.top is not None and r.top.id == c.source_id
            for c, r in zip(copies, results, strict=True)
            if c.kind == kind
        )
        for kind in ("edited", "pasted")
    }
    measured = cal.measured_sensitivity
    assert measured is not None
    assert (measured.edited.caught, measured.pasted.caught) == (live["edited"], live["pasted"])
    assert measured.edited.caught > 0, "distinct scenes: some edited copies must be caught"
    assert measure_copy_tests(index, seed=0) == cal.copy_tests, "the same seed, the same copies"


def test_search_json_and_the_cli_state_the_measured_rates(
    scenes_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scenes(tmp_path, [3])
    assert main(["search", str(scenes_index), str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    shape = row["measured_sensitivity"]
    assert shape["edited_copies"]["copies"] == 48 and shape["pasted_copies"]["copies"] == 24
    assert "in 100 unrelated images of this collection are called copies" in row["explanation"]
    assert main(["search", str(scenes_index), str(tmp_path), "--json",
                 "--false-alarm-rate", "0.1"]) == 0  # fmt: skip
    (loose,) = json.loads(capsys.readouterr().out)
    assert loose["measured_sensitivity"]["false_alarm_rate"] == pytest.approx(0.1)
    assert (
        loose["measured_sensitivity"]["edited_copies"]["caught"] >= shape["edited_copies"]["caught"]
    )


def test_a_refit_keeps_the_copies_and_growth_asks_for_new_ones(tmp_path: Path) -> None:
    write_scenes(tmp_path / "images", range(30))
    build_index(tmp_path / "images", tmp_path / "index", embedder="sscd-distilled")
    assert needs_measuring(open_index(tmp_path / "index").calibration, 30)
    learn_sensitivity(tmp_path / "index")
    tests = open_index(tmp_path / "index").calibration.copy_tests
    assert len(tests) == 45
    write_scenes(tmp_path / "more", range(100, 102))
    add_to_index(tmp_path / "index", tmp_path / "more")
    after = open_index(tmp_path / "index").calibration
    assert after.fitted_rows == 32, "the add refitted the null"
    assert after.copy_tests == tests, "and kept the copy tests"
    assert not needs_measuring(after, 32)
    assert needs_measuring(after, 33), "a tenth more images: measure again"


def test_a_manifest_with_impossible_copy_tests_is_refused(
    scenes_index: Path, tmp_path: Path
) -> None:

    copy = tmp_path / "index"
    shutil.copytree(scenes_index, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["calibration"]["copy_tests"][0]["source_at"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexNotFound, match="source_at 99 is outside its shortlist"):
        open_index(copy)
