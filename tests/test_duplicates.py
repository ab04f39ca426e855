"""Near-duplicates inside an index: planted groups are found exactly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
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


def write_chain(folder: Path) -> None:
    """Scene 7 and seven ever tighter crops of it: neighbours in the chain are near-duplicates
    at 0.95, its two ends are not (measured with sscd-distilled: down to 0.88)."""
    write_scenes(folder, range(20))
    base = scene(7)
    w, h = base.size
    for i in range(1, 8):
        c = 8 * i
        base.crop((c, c * 3 // 4, w, h)).resize((w, h)).save(folder / f"chain_{i}.png")


def test_removal_is_proposed_only_at_the_threshold_against_the_kept_image(
    tmp_path: Path,
) -> None:
    import numpy as np

    write_chain(tmp_path / "train")
    index = build_index(tmp_path / "train", tmp_path / "idx", embedder="sscd-distilled").index
    chain = [i for i, p in enumerate(index.metadata["path"]) if "chain" in p or "0007" in p]
    vectors = index.get_vectors(np.array(chain))
    sims = vectors @ vectors.T
    assert sims.min() < 0.9  # the chain's ends are far apart: single links would join them
    report = find_duplicates(index, threshold=0.95)
    assert report.clusters
    for cluster in report.clusters:
        kept = [m for m in cluster.members if m.keep]
        assert len(kept) == 1 and cluster.members[0].keep
        assert all(m.similarity >= 0.95 - 1e-6 for m in cluster.members if not m.keep)
        rows = [m.row for m in cluster.members]
        pair_sims = index.get_vectors(np.array(rows)) @ index.get_vectors(np.array(rows)).T
        assert cluster.lowest_pair == pytest.approx(float(pair_sims.min()), abs=1e-5)
    clustered = sum(c.size for c in report.clusters)
    assert report.n_linked == len(chain) == clustered + report.n_unassigned
    assert report.n_removable == clustered - len(report.clusters)


def test_the_curator_chooses_which_image_is_kept(tmp_path: Path) -> None:
    write_chain(tmp_path / "train")
    index = build_index(tmp_path / "train", tmp_path / "idx", embedder="sscd-distilled").index
    first = find_duplicates(index, threshold=0.95, keep="first")
    linked = find_duplicates(index, threshold=0.95, keep="most-linked")
    assert first.keep_rule == "first" and linked.keep_rule == "most-linked"
    # "first": the chain's first image in the index is kept
    chain_rows = sorted(m.row for c in first.clusters for m in c.members)
    assert first.clusters[0].members[0].row == chain_rows[0]
    # "most-linked": the kept image has as many near-duplicates as any image of the chain
    degree: dict[int, int] = {}
    for a, b, _ in linked.pairs:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    assert degree[linked.clusters[0].members[0].row] == max(degree.values())
    with pytest.raises(ValueError, match="unknown keep rule"):
        find_duplicates(index, threshold=0.95, keep="random")


def test_exports_give_a_display_name_and_the_full_path(tmp_path: Path) -> None:
    write_chain(tmp_path / "train")
    index = build_index(tmp_path / "train", tmp_path / "idx", embedder="sscd-distilled").index
    report = find_duplicates(index, threshold=0.95)
    rows = list(csv.DictReader(io.StringIO(report.removal_csv_text())))
    assert rows and all(r["name"] == Path(r["path"]).name for r in rows)
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in rows)
    table = list(csv.DictReader(io.StringIO(report.csv_text())))
    assert list(table[0]) == [
        "cluster", "id", "name", "path", "caption", "similarity_to_kept", "keep",
    ]  # fmt: skip
