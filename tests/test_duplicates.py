"""Near-duplicates inside an index: planted groups are found exactly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.duplicates import (
    CONTAMINATION_COLUMNS,
    DuplicatePairs,
    duplicate_pairs,
    find_contamination,
    find_duplicates,
)
from lib.index import EmbedderMismatch, ReplicaIndex, build_index
from lib.index.importer import import_embeddings
from tests.cli_runner import run_cli
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
        "cluster_lowest_pair", "cluster_chained", "reason",
    ]  # fmt: skip


def vector_index(folder: Path, vectors: np.ndarray) -> ReplicaIndex:
    """An index of the given (n, 512) vectors (imported, no image embedded), row i named
    v_i.png with caption 'vector i'."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", vectors.astype(np.float32))
    n = len(vectors)
    pd.DataFrame(
        {"image_path": [f"/nowhere/v_{i}.png" for i in range(n)],
         "caption": [f"vector {i}" for i in range(n)]}
    ).to_parquet(folder / "vectors.parquet")  # fmt: skip
    return import_embeddings(folder, folder.parent / "idx", embedder="sscd-distilled").index


def chain_vectors(n_other: int = 40, seed: int = 0) -> np.ndarray:
    """Rows 0-3: a chain a ~ b ~ c ~ d, each step at cosine 0.90 (a-c 0.62, a-d 0.17),
    in a plane of its own; then ``n_other`` random unit vectors (unrelated)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(512, 512)))
    theta = np.arccos(0.9)
    chain = [np.cos(i * theta) * basis[:, 0] + np.sin(i * theta) * basis[:, 1] for i in range(4)]
    noise = rng.normal(size=(n_other, 510)) @ basis[:, 2:].T
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return np.concatenate([np.array(chain), noise]).astype(np.float32)


def test_a_planted_chain_is_cut_at_the_kept_image_and_its_diameter_reported(
    tmp_path: Path,
) -> None:
    index = vector_index(tmp_path / "emb", chain_vectors())
    report = find_duplicates(index, threshold=0.85, keep="first")
    # pairs: a-b, b-c, c-d only (a-c is 0.62, far below the threshold)
    assert sorted((a, b) for a, b, _ in report.pairs) == [(0, 1), (1, 2), (2, 3)]
    # "first" keeps a: its cluster is {a, b}; c and d (linked to it only through b) form
    # their own cluster around c: no a ~ b ~ c ~ d group
    groups = sorted(sorted(m.row for m in c.members) for c in report.clusters)
    assert groups == [[0, 1], [2, 3]]
    assert all(not c.chained for c in report.clusters)
    # "most-linked" keeps b (2 links, the lower row of b and c): {a, b, c}, whose ends a
    # and c are at 0.62: the diameter is reported and the cluster is marked chained
    linked = find_duplicates(index, threshold=0.85)
    (cluster,) = linked.clusters
    assert [m.row for m in cluster.members if m.keep] == [1]
    assert sorted(m.row for m in cluster.members) == [0, 1, 2]
    assert cluster.lowest_pair == pytest.approx(0.62, abs=1e-3)
    assert sorted(cluster.lowest_pair_ids) == [0, 2]
    assert cluster.chained and linked.n_chained == 1
    assert all(m.similarity >= 0.85 - 1e-6 for m in cluster.members)
    assert linked.n_unassigned == 1  # d: near c only, never proposed
    table = list(csv.DictReader(io.StringIO(linked.csv_text())))
    assert {r["cluster_chained"] for r in table} == {"1"}
    assert all(abs(float(r["cluster_lowest_pair"]) - 0.62) < 1e-3 for r in table)
    assert json.loads(linked.json_text())["n_chained"] == 1
    # the command line says so
    out = run_cli("duplicates", str(index.path), "--threshold", "0.85")
    assert out.returncode == 0, out.stderr
    assert "lowest pair (diameter) 0.62" in out.stdout and "chained" in out.stdout


def test_an_image_with_more_than_k_near_duplicates_is_linked_to_its_k_nearest(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(1)
    centre = rng.normal(size=512)
    centre /= np.linalg.norm(centre)
    group = centre + rng.normal(scale=0.007, size=(30, 512))  # mutual cosine about 0.97
    others = rng.normal(size=(30, 512))
    vectors = np.concatenate([group, others])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = vector_index(tmp_path / "emb", vectors)
    sims = vectors[:30] @ vectors[:30].T
    assert sims[np.triu_indices(30, 1)].min() > 0.95  # 30 mutual near-duplicates
    everything = duplicate_pairs(index, 0.95, k=40)
    assert len(everything) == 30 * 29 // 2
    few = duplicate_pairs(index, 0.95, k=4)
    assert isinstance(few, DuplicatePairs) and 30 * 4 // 2 <= len(few) < len(everything)
    assert few.degree(index.count)[:30].min() >= 4
    # with k above the group's size it is one cluster; with k = 4 it is split
    assert [c.size for c in find_duplicates(index, 0.95, k=40).clusters] == [30]
    assert len(find_duplicates(index, 0.95, k=4).clusters) > 1
    with pytest.raises(ValueError, match="at least 1"):
        duplicate_pairs(index, 0.95, k=0)


@pytest.fixture(scope="module")
def train_and_test(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A training index of 30 scenes and a test index of 20 other scenes plus a brightened
    copy of training scene 3 and a cropped copy of training scene 7."""
    root = tmp_path_factory.mktemp("contamination")
    write_scenes(root / "train", range(30))
    write_scenes(root / "test", range(200, 220))
    Image.eval(scene(3), lambda v: min(255, v + 12)).save(root / "test" / "leak_3.png")
    scene(7).crop((4, 3, 156, 117)).resize((160, 120)).save(root / "test" / "leak_7.png")
    train = build_index(root / "train", root / "train_idx", embedder="sscd-distilled").index
    test = build_index(root / "test", root / "test_idx", embedder="sscd-distilled").index
    return train.path, test.path


def test_contamination_finds_the_planted_test_images_in_the_training_set(
    train_and_test: tuple[Path, Path], tmp_path: Path
) -> None:
    from lib.index import open_index

    train, test = (open_index(p) for p in train_and_test)
    report = find_contamination(test, train, threshold=0.9)
    found = sorted((Path(m.path).name, Path(m.other_path).name) for m in report.matches)
    assert found == [("leak_3.png", "img_0003.png"), ("leak_7.png", "img_0007.png")]
    assert report.n_contaminated == 2 and report.n_images == 22 and report.n_other == 30
    assert report.contaminated_share == pytest.approx(2 / 22)
    assert all(m.cosine >= 0.9 for m in report.matches)
    rows = list(csv.DictReader(io.StringIO(report.csv_text())))
    assert tuple(rows[0]) == CONTAMINATION_COLUMNS and len(rows) == 2
    assert float(rows[0]["cosine"]) >= float(rows[1]["cosine"])
    # the command line: a CSV and a JSON beside it
    out = run_cli(
        "duplicates", str(test.path), "--against", str(train.path), "--threshold", "0.9",
        "--out", str(tmp_path / "leaks.csv"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2 of 22 images of test_idx (9.1%) are in train_idx" in out.stdout
    written = list(csv.DictReader((tmp_path / "leaks.csv").open(encoding="utf-8")))
    assert sorted(Path(r["other_path"]).name for r in written) == ["img_0003.png", "img_0007.png"]
    data = json.loads((tmp_path / "leaks.json").read_text())
    assert data["n_contaminated"] == 2 and len(data["matches"]) == 2


def test_contamination_refuses_indexes_of_different_embedders(
    train_and_test: tuple[Path, Path], tmp_path: Path
) -> None:
    from lib.index import open_index

    write_scenes(tmp_path / "px", range(5))
    pixels = build_index(tmp_path / "px", tmp_path / "px_idx", embedder="pixels").index
    with pytest.raises(EmbedderMismatch, match="cannot be compared"):
        find_contamination(pixels, open_index(train_and_test[0]))
    out = run_cli("duplicates", str(pixels.path), "--against", str(train_and_test[0]))
    assert out.returncode == 2 and "'pixels'" in out.stderr and "sscd-distilled" in out.stderr


def test_pixels_find_the_edits_a_curator_means_and_spare_recoloured_siblings(
    tmp_path: Path,
) -> None:
    """Planted copies of distinct scenes, one per kind of edit, and a recoloured sibling
    (the same drawing in other colours, as skin tones are): with pixels checked each copy
    is proposed with its reason, the sibling is not (unless recoloured pictures count),
    and mirrored copies are left out when mirrors are different works."""
    from PIL import ImageOps

    from lib.bench.edits import composed, crop70, jpeg25
    from lib.duplicates import PIXELS_COSINE, PixelCheck

    folder = tmp_path / "train"
    write_scenes(folder, range(40))
    rng = np.random.default_rng(0)
    source = {k: scene(k) for k in range(6)}
    planted = {
        "jpeg": jpeg25(source[0], rng),
        "resize": source[1].resize((53, 40)).resize(source[1].size),
        "crop": crop70(source[2], rng),
        "mirror": ImageOps.mirror(source[3]),
        "pasted": composed(source[4], rng, scene(99, (320, 240))),
    }
    for kind, image in planted.items():
        image.convert("RGB").save(folder / f"copy_{kind}.png")
    # the same drawing in other colours: luminance kept, chroma turned a quarter round
    y, cb, cr = (np.asarray(c, np.float32) for c in source[5].convert("YCbCr").split())
    chroma = (y, 128 - (cr - 128), 128 + (cb - 128))
    bands = [Image.fromarray(np.clip(c, 0, 255).astype(np.uint8)) for c in chroma]
    Image.merge("YCbCr", bands).convert("RGB").save(folder / "sibling_recoloured.png")
    index = build_index(folder, tmp_path / "idx", embedder="sscd-distilled").index
    names = [Path(p).name for p in index.metadata["path"].astype(str)]
    expected = {
        "jpeg": ("img_0000.png", "pixels line up"),
        "resize": ("img_0001.png", "pixels line up"),
        "crop": ("img_0002.png", "part of the other"),
        "mirror": ("img_0003.png", "mirror images"),
        "pasted": ("img_0004.png", "part of the other"),
    }

    def proposed(report: Any) -> dict[frozenset[str], str]:
        return {
            frozenset((names[a], names[b])): report.pairs.reason(i)
            for i, (a, b, _) in enumerate(report.pairs)
        }

    by_pixels = proposed(find_duplicates(index, PIXELS_COSINE, pixels=PixelCheck()))
    for kind, (original, words) in expected.items():
        reason = by_pixels.get(frozenset((f"copy_{kind}.png", original)))
        assert reason is not None and words in reason, (kind, reason)
    sibling = frozenset(("sibling_recoloured.png", "img_0005.png"))
    assert sibling not in by_pixels, "another colouring of a drawing is another work"
    assert len(by_pixels) == len(expected), f"nothing else is proposed: {by_pixels}"
    anything = proposed(
        find_duplicates(index, PIXELS_COSINE, pixels=PixelCheck(same_colours=False))
    )
    assert sibling in anything
    no_mirrors = proposed(find_duplicates(index, PIXELS_COSINE, pixels=PixelCheck(mirrors=False)))
    assert frozenset(("copy_mirror.png", "img_0003.png")) not in no_mirrors
    by_cosine = proposed(find_duplicates(index, 0.85))
    assert len(by_cosine) < len(expected), "the cosine alone misses some of these copies"
