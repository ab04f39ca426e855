"""The verdict's method on small planted sets: families removed from the null, the null
percentile, pixel alignment and the evidence that fuses it with the calibrated score,
recalibration of old indexes, and the sentences that explain a verdict with its numbers."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from lib.bench.domains import DomainItem, split_domain
from lib.bench.edits import composed, crop70, downscale4, jpeg25
from lib.calibration import CALIBRATION_VERSION, Calibration, families, fit_calibration
from lib.cli import main
from lib.index import build_index, open_index
from lib.search import Match, QueryResult, judge
from lib.verification import alignment, grey_thumb
from tests.synthetic import scene, write_scenes


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _flat(vectors: np.ndarray) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def test_a_chain_of_variants_is_one_family_even_where_its_ends_differ() -> None:
    rng = np.random.default_rng(0)
    d = 64
    base = _unit(rng.normal(size=(2, d)))
    # a chain: each link at cosine ~0.9 to the next, the ends far apart
    chain = [base[0]]
    for _ in range(5):
        chain.append(_unit(0.9 * chain[-1] + 0.44 * _unit(rng.normal(size=d))))
    chain_v = np.stack(chain)
    assert chain_v[0] @ chain_v[-1] < 0.8
    others = _unit(rng.normal(size=(40, d)))
    vectors = np.concatenate([chain_v, others]).astype(np.float32)
    found = families(_flat(vectors), vectors, np.array([0, 6]), family_cosine=0.825)
    assert found[0] == set(range(6)), "every link of the chain is in the first one's family"
    assert found[1] == {6}, "an unrelated image is a family of one"


def _family_collection(seed: int = 0) -> np.ndarray:
    """300 images: 60 families of 5 variants (cosine ~0.88 to each other) in a look-alike
    domain (everything near one direction)."""
    rng = np.random.default_rng(seed)
    d = 64
    domain = _unit(rng.normal(size=d))
    rows = []
    for _ in range(60):
        centre = _unit(domain + 0.6 * _unit(rng.normal(size=d)))
        rows.extend(_unit(centre + 0.3 * _unit(rng.normal(size=(5, d)))))
    return np.stack(rows).astype(np.float32)


def test_the_null_leaves_out_each_images_family() -> None:
    vectors = _family_collection()
    index = _flat(vectors)
    with_families = fit_calibration(index, vectors, base=Calibration(family_cosine=0.825))
    near_duplicates_only = fit_calibration(index, vectors, base=Calibration(family_cosine=0.99))
    # with its variants still searchable, an image "finds" a sibling: a far heavier null
    assert with_families.copy_threshold < near_duplicates_only.copy_threshold - 0.05
    assert with_families.version == CALIBRATION_VERSION
    assert with_families.null_sample == len(with_families.null_scores) == 300
    assert with_families.null_scores == sorted(with_families.null_scores)


def test_null_percentile_and_operating_points_come_from_the_stored_sample() -> None:
    cal = Calibration(null_sample=200, null_scores=[i / 200 for i in range(200)])
    assert cal.null_percentile(0.5) == pytest.approx(50.0)
    assert cal.null_percentile(2.0) == 100.0
    assert cal.null_percentile(-1.0) == 0.0
    at_10 = cal.with_false_alarm_rate(0.10)
    assert at_10.copy_threshold == pytest.approx(np.quantile(cal.null_scores, 0.9))
    flagged = np.mean([at_10.verdict(s) == "copy" for s in cal.null_scores])
    assert flagged == pytest.approx(0.10, abs=0.01)
    assert Calibration().null_percentile(0.3) is None  # too small to calibrate


def _fused(rate: float = 0.02) -> Calibration:
    rng = np.random.default_rng(1)
    cal_null = rng.normal(0.05, 0.05, 1000).round(5).tolist()
    align_null = rng.normal(0.6, 0.1, 1000).round(5).tolist()
    base = Calibration(
        null_sample=1000, null_scores=sorted(cal_null), alignment_null=sorted(align_null)
    )
    # each null image's evidence, from its own pair of scores
    evidence = sorted(base.evidence(c, a) for c, a in zip(cal_null, align_null, strict=True))
    return Calibration(**{**base.to_dict(), "evidence_null": evidence}).with_false_alarm_rate(rate)


def test_either_signal_makes_a_copy_at_the_promised_rate_of_the_null() -> None:
    cal = _fused(0.02)
    assert cal.uses_alignment
    # each threshold sits at the same share of its own null, so together they flag 2%
    q_cal = np.mean(np.array(cal.null_scores) < cal.copy_threshold)
    q_align = np.mean(np.array(cal.alignment_null) < cal.alignment_threshold)
    assert abs(q_cal - q_align) < 0.01 and 0.98 < q_cal < 0.995
    low_score = cal.copy_threshold - 0.1
    assert cal.verdict(low_score, 0.5, cal.alignment_threshold + 0.01) == "copy"
    assert cal.rule(low_score, 0.5, cal.alignment_threshold + 0.01) == "alignment"
    assert cal.verdict(low_score, 0.5, cal.alignment_threshold - 0.01) != "copy"
    assert cal.rule(cal.copy_threshold, 0.5, 0.0) == "calibrated"
    assert cal.null_percentile(low_score, cal.alignment_threshold + 0.2) > 99.0


def test_the_sentence_names_the_rule_and_repeats_the_numbers() -> None:
    cal = _fused(0.02)
    match = Match(rank=1, id=7, path="a.png", score=0.71, calibrated=cal.copy_threshold + 0.05)
    result = judge(QueryResult(query="q"), [match], cal)
    text = result.explanation()
    assert result.verdict == "copy" and result.rule == "calibrated"
    assert f"{result.score:+.2f}" in text and f"{cal.copy_threshold:+.2f}" in text
    assert f"Of {cal.null_sample:,} unrelated images" in text
    assert f"{result.null_percentile:.1f}% score lower" in text
    aligned = Match(rank=1, id=7, path="a.png", score=0.6, calibrated=0.0, alignment=0.99)
    result = judge(QueryResult(query="q"), [aligned], cal)
    assert result.rule == "alignment" and "line up" in result.explanation()
    assert f"{cal.alignment_threshold:.2f}" in result.explanation()
    identical = Match(rank=1, id=7, path="a.png", score=0.99, calibrated=-0.01)
    result = judge(QueryResult(query="q"), [identical], Calibration())
    assert result.rule == "identical" and "0.990" in result.explanation()
    assert "too small to calibrate" in result.explanation()


def test_copies_align_with_their_source_and_unrelated_pictures_do_not() -> None:
    rng = np.random.default_rng(0)
    source = scene(3, (128, 128))
    others = [grey_thumb(scene(s, (128, 128))) for s in range(10, 20)]
    src = grey_thumb(source)
    unrelated = max(alignment(o, src) for o in others)
    for edit in (jpeg25, downscale4, crop70):
        copy = grey_thumb(edit(source, rng))
        assert alignment(copy, src) > max(0.9, unrelated), edit.__name__
    pasted = grey_thumb(composed(source, rng, scene(99, (400, 300))))
    assert alignment(pasted, src) > max(0.8, unrelated)
    mirrored = grey_thumb(source.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert alignment(mirrored, src) > 0.99


def test_split_keeps_mirrored_and_identical_drawings_on_one_side() -> None:
    pictures = {f"s{i}": scene(i, (64, 64)) for i in range(40)}
    items = [DomainItem(k, k, k, lambda im=im: im) for k, im in pictures.items()]
    # a mirrored drawing and an identical one under other names, and a blank picture
    items.append(DomainItem("m3", "m3", "", lambda: pictures["s3"].transpose(0)))
    items.append(DomainItem("d5", "d5", "", lambda: pictures["s5"].copy()))
    items.append(DomainItem("blank", "blank", "", lambda: Image.new("RGB", (64, 64), "white")))
    indexed, unrelated = split_domain(items, 20, 30, seed=0, lookalike=0.85)
    index_keys = {i.key for i, _ in indexed}
    other_keys = {i.key for i, _ in unrelated}
    assert "blank" not in index_keys | other_keys
    assert "d5" not in index_keys | other_keys, "an identical picture is kept once"
    assert ("m3" in index_keys) == ("s3" in index_keys), "a mirror stays with its drawing"
    assert ("m3" in other_keys) == ("s3" in other_keys)
    assert not index_keys & other_keys


@pytest.fixture(scope="module")
def scene_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verdicts")
    write_scenes(root / "train", range(40))
    return build_index(root / "train", root / "idx", embedder="sscd-distilled").index.path


def test_an_index_calibrated_by_the_old_method_is_recalibrated(
    scene_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(scene_index, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("version", "null_scores", "alignment_null", "evidence_null", "family_cosine"):
        manifest["calibration"].pop(key, None)
    (old / "manifest.json").write_text(json.dumps(manifest))
    index = open_index(old)
    assert index.recalibrated and index.calibration.version == CALIBRATION_VERSION
    assert index.calibration.null_scores, "refitted in memory on open"
    assert main(["-q", "search", str(old), str(scene_index.parent / "train" / "img_0003.png")]) == 0
    assert "calibrated by an older method" in capsys.readouterr().err
    assert main(["-q", "index", "calibrate", str(old)]) == 0
    assert "calibrated old" in capsys.readouterr().out
    stored = json.loads((old / "manifest.json").read_text())["calibration"]
    assert stored["version"] == CALIBRATION_VERSION and stored["alignment_null"]
    assert not open_index(old).recalibrated


def test_search_json_carries_the_percentile_rule_and_explanation(
    scene_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.png"
    jpeg25(scene(5), np.random.default_rng(0)).save(copy)
    assert main(["-q", "search", str(scene_index), str(copy), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["matches"][0]["path"].endswith("img_0005.png")
    assert result["verdict"] == "copy" and result["rule"] in ("calibrated", "alignment")
    assert result["null_percentile"] >= 95  # a 40-image null: steps of 2.5%
    assert f"{result['null_percentile']:.1f}% score lower" in result["explanation"]
    assert result["matches"][0]["alignment"] > 0.9


def test_scan_exports_carry_the_percentile(scene_index: Path, tmp_path: Path) -> None:
    import csv

    from lib.replication import scan

    generated = tmp_path / "generated"
    generated.mkdir()
    jpeg25(scene(7), np.random.default_rng(0)).save(generated / "copy.png")
    scene(900).save(generated / "new.png")
    scan(open_index(scene_index), generated, out_dir=tmp_path / "report")
    rows = {r["query"]: r for r in csv.DictReader((tmp_path / "report" / "results.csv").open())}
    copy = next(r for q, r in rows.items() if q.endswith("copy.png"))
    assert copy["verdict"] == "copy" and float(copy["null_percentile"]) >= 95
    assert copy["rule"] in ("calibrated", "alignment")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    percentiles = {Path(r["query"]).name: r["null_percentile"] for r in report["results"]}
    assert percentiles["copy.png"] > percentiles["new.png"]


def test_a_score_and_its_threshold_never_read_as_equal_across_the_verdict() -> None:
    from lib.search import ordered_pair

    assert ordered_pair(0.2454, 0.2456, sign=True) == ("+0.245", "+0.246")
    assert ordered_pair(0.24541, 0.24549) == ("0.2454", "0.2455")
    assert ordered_pair(0.31, 0.18, sign=True) == ("+0.31", "+0.18")
    cal = Calibration(null_sample=100, null_scores=[i / 1000 for i in range(100)])
    cal = cal.with_false_alarm_rate(0.02)
    just_under = Match(rank=1, id=1, path="a.png", score=0.5, calibrated=cal.copy_threshold - 1e-4)
    text = judge(QueryResult(query="q"), [just_under], cal).explanation()
    import re

    shown = float(re.search(r"scores ([+-][0-9.]+)", text).group(1))  # type: ignore[union-attr]
    needed = float(re.search(r"the ([+-][0-9.]+) that calls", text).group(1))  # type: ignore[union-attr]
    assert shown < needed, text
