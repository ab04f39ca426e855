"""Near-duplicates inside an index: planted groups are found exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

from lib.duplicates import find_duplicates
from lib.index import build_index
from tests.synthetic import scene, write_scenes


def test_planted_near_duplicates_form_clusters(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    write_scenes(folder, range(30))
    # group A: scene 3 + a slightly cropped copy + slightly larger resize (the larger one is kept)
    scene(3).crop((4, 3, 156, 117)).resize((160, 120)).save(folder / "dupA_crop.png")
    scene(3).resize((320, 240)).save(folder / "dupA_big.png")
    # group B: scene 7 + brightened copy
    Image.eval(scene(7), lambda v: min(255, v + 12)).save(folder / "dupB_bright.png")
    index = build_index(folder, tmp_path / "idx", embedder="sscd-distilled").index

    report = find_duplicates(index, threshold=0.9)
    groups = sorted(sorted(Path(m.path).name for m in c.members) for c in report.clusters)
    assert groups == [
        ["dupA_big.png", "dupA_crop.png", "img_0003.png"],
        ["dupB_bright.png", "img_0007.png"],
    ]
    first = report.clusters[0]
    assert first.size == 3
    assert [Path(m.path).name for m in first.members if m.keep] == ["dupA_big.png"]
    assert report.n_removable == 3
    assert all(a < b for a, b, _ in report.pairs)

    out = tmp_path / "dups.csv"
    report.write_csv(out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and sum(int(r["keep"]) for r in rows) == 2
    removal = tmp_path / "remove.csv"
    report.write_removal_csv(removal)
    removed = sorted(Path(r["path"]).name for r in csv.DictReader(removal.open()))
    # equal sizes in group B: the lower row (dupB_bright sorts first) is kept
    assert removed == ["dupA_crop.png", "img_0003.png", "img_0007.png"]
    report.write_json(tmp_path / "dups.json")
    assert json.loads((tmp_path / "dups.json").read_text())["n_clusters"] == 2


def test_high_threshold_finds_nothing_among_distinct_images(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    write_scenes(folder, range(20))
    index = build_index(folder, tmp_path / "idx", embedder="sscd-distilled").index
    report = find_duplicates(index, threshold=0.95)
    assert report.clusters == [] and report.n_removable == 0
