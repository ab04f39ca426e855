"""Replication scan: statistics checked against a direct computation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.calibration import Calibration
from lib.embedders import create_embedder
from lib.images import load_image
from lib.index import build_index
from lib.replication import scan, stats_from_scores
from tests.synthetic import scene, write_scenes


def test_stats_from_scores_match_hand_computed_values() -> None:
    raw = np.array([0.1, 0.4, 0.5, 0.6, 0.9])
    cal = np.array([0.0, 0.05, 0.1, 0.2, 0.5])
    s = stats_from_scores("x", raw, cal, Calibration(copy_threshold=0.15))
    assert s.n == 5
    assert s.rate_above_threshold == pytest.approx(2 / 5)  # 0.6 and 0.9 (strictly above 0.5)
    assert s.copy_rate == pytest.approx(2 / 5)  # 0.2 and 0.5
    assert s.mean_top1 == pytest.approx(0.5)
    assert s.median_top1 == pytest.approx(0.5)
    # numpy's linear interpolation: rank 0.95 * 4 = 3.8 -> 0.6 + 0.8 * (0.9 - 0.6) = 0.84
    assert s.p95_top1 == pytest.approx(0.84)
    assert s.p95_top1 == pytest.approx(float(np.percentile(raw, 95)))


def test_scan_against_direct_computation(tmp_path: Path) -> None:
    train = tmp_path / "train"
    write_scenes(train, range(40))
    index = build_index(train, tmp_path / "idx", embedder="pixels").index
    gen = tmp_path / "generated"
    gen.mkdir()
    for s in range(5):  # 5 near-copies of training images
        scene(s).resize((150, 110)).save(gen / f"copy_{s}.png")
    write_scenes(gen, range(500, 510), prefix="new")  # 10 unseen images
    (gen / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    heldout = tmp_path / "heldout"
    write_scenes(heldout, range(600, 612))

    report = scan(index, gen, reference=heldout, out_dir=tmp_path / "report")

    embedder = create_embedder("pixels")
    files = sorted(p for p in gen.iterdir() if p.name != "broken.png")
    vectors = embedder.embed_images([load_image(p).image for p in files])
    train_vectors = index.vectors()
    expected_top1 = (vectors @ train_vectors.T).max(axis=1)
    got = {Path(r.query).name: r.raw_score for r in report.results if r.error is None}
    np.testing.assert_allclose([got[p.name] for p in files], expected_top1, atol=1e-5)
    g = report.generated
    assert g.n == 15
    assert g.mean_top1 == pytest.approx(float(expected_top1.mean()), abs=1e-5)
    assert g.median_top1 == pytest.approx(float(np.median(expected_top1)), abs=1e-5)
    assert g.p95_top1 == pytest.approx(float(np.percentile(expected_top1, 95)), abs=1e-5)
    assert g.rate_above_threshold == pytest.approx(float(np.mean(expected_top1 > 0.5)))
    copies = {Path(r.query).name: r.verdict for r in report.results if r.error is None}
    assert all(copies[f"copy_{s}.png"] == "copy" for s in range(5))
    assert g.copy_rate >= 5 / 15
    assert report.reference.n == 12 and report.reference.name == "held-out vs training"
    assert [Path(s.path).name for s in report.skipped] == ["broken.png"]

    rows = list(csv.DictReader((tmp_path / "report" / "results.csv").open()))
    assert len(rows) == 16
    broken = next(r for r in rows if r["query"].endswith("broken.png"))
    assert broken["error"] and not broken["raw_top1"]
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["generated"]["n"] == 15
    with Image.open(tmp_path / "report" / "histogram.png") as hist:
        assert hist.size[0] > 400


def test_scan_without_reference_uses_training_nearest_neighbours(tmp_path: Path) -> None:
    train = tmp_path / "train"
    write_scenes(train, range(30))
    index = build_index(train, tmp_path / "idx", embedder="pixels").index
    gen = tmp_path / "gen"
    write_scenes(gen, range(300, 304))
    report = scan(index, gen)
    vectors = index.vectors()
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest_other = sims.max(axis=1)
    assert report.reference.name == "training vs training"
    assert report.reference.n == 30
    assert report.reference.mean_top1 == pytest.approx(float(nearest_other.mean()), abs=1e-5)


def test_scan_of_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    train = tmp_path / "train"
    write_scenes(train, range(5))
    index = build_index(train, tmp_path / "idx", embedder="pixels").index
    (tmp_path / "gen").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        scan(index, tmp_path / "gen")
