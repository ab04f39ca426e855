"""UMAP map of an index: stored beside it, reused, invalidated, subsampled; new images land
next to the indexed image they copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lib.projection as projection_module
from lib.index import ReplicaIndex, add_to_index, build_index, calibrate_index, open_index
from lib.projection import (
    INFO_FILE,
    OTHER_GROUP,
    ProjectionError,
    caption_groups,
    load_projection,
    project,
    projection_dir,
    top_groups,
    transform,
)
from tests.synthetic import scene, write_families, write_scenes

WORDS = ("red", "green", "blue")
N = 4 * 16 + 1


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 families of 16 captioned near-duplicates and one lone image; the index folder."""
    root = tmp_path_factory.mktemp("projection")
    write_families(root / "train", range(4), words=WORDS)
    write_scenes(root / "train", [99], prefix="lone")
    return build_index(root / "train", root / "idx", embedder="sscd-distilled").index.path


@pytest.fixture
def index(built: Path, tmp_path: Path) -> ReplicaIndex:
    """A private copy of the built index, so each test starts without a stored map."""
    return open_index(shutil.copytree(built, tmp_path / "idx"))


def families(index: ReplicaIndex) -> np.ndarray:
    """(n,) the scene seed of each row (99 for the lone image)."""
    return np.array([int(Path(p).stem.split("_")[1]) for p in index.metadata["path"]])


def test_projection_is_stored_and_reused_without_refitting(
    index: ReplicaIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages: list[str] = []
    index_files = [p.name for p in index.path.iterdir()]
    first = project(index, progress=lambda done, total, message="": stages.append(message))
    assert first.coords.shape == (N, 2) and first.coords.dtype == np.float32
    assert np.isfinite(first.coords).all() and first.coords.std(axis=0).min() > 0
    assert first.ids.tolist() == list(range(N)) and not first.subsampled
    assert any("fitting UMAP" in s for s in stages) and stages[-1] == "done"
    folder = projection_dir(index)
    assert first.path == folder
    names = {
        "coords.npy", "ids.npy", "fit_ids.npy", "nn_similarity.npy", "reducer.joblib", INFO_FILE,
    }  # fmt: skip
    assert {p.name for p in folder.iterdir()} == names
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["n_points"] == N and info["subsampled"] is False
    assert info["index_updated"] == index.content_version and info["umap"]["n_neighbors"] == 15
    # nothing else was added to the index folder (no stray temporary folders)
    assert sorted(p.name for p in index.path.iterdir()) == sorted([*index_files, "projection"])
    mtime = (folder / "coords.npy").stat().st_mtime_ns

    def refit(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored projection must be reused, not refitted")

    monkeypatch.setattr(projection_module, "_fit_umap", refit)
    again = project(open_index(index.path))
    assert np.array_equal(again.coords, first.coords)
    assert (folder / "coords.npy").stat().st_mtime_ns == mtime


def test_near_duplicates_are_map_neighbours_and_the_lone_image_has_the_lowest_nn(
    index: ReplicaIndex,
) -> None:
    p = project(index)
    fam = families(index)
    # near-duplicates stay neighbours on the map: almost every image's nearest map point is
    # from its own family, and every image has most of its 5 nearest there. (UMAP's layout
    # moves with float rounding in the neighbour graph, so one image on a family's edge may
    # sit nearer another family; a map that mixed families fails both.)
    rows = np.flatnonzero(fam != 99)
    same_first, same_of_5 = [], []
    for row in rows:
        distances = np.linalg.norm(p.coords - p.coords[row], axis=1)
        nearest = fam[np.argsort(distances)[1:6]]
        same_first.append(nearest[0] == fam[row])
        same_of_5.append((nearest == fam[row]).sum())
    assert np.mean(same_first) >= 0.95, same_first
    assert min(same_of_5) >= 3, same_of_5
    vectors = index.vectors()
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_allclose(p.nn_similarity, sims.max(axis=1), atol=1e-5)
    lone = int(np.flatnonzero(fam == 99)[0])
    assert p.nn_similarity.argmin() == lone
    assert np.delete(p.nn_similarity, lone).min() > 0.9


def test_transform_puts_an_edited_copy_next_to_its_source(index: ReplicaIndex) -> None:
    p = project(index)
    edited = scene(2).resize((200, 150)).crop((5, 4, 195, 146))
    vector = index.create_embedder().embed_images([edited])
    xy = transform(p, vector, index)
    assert xy.shape == (1, 2) and xy.dtype == np.float32
    fam = families(index)
    distances = np.linalg.norm(p.coords - xy[0], axis=1)
    nearest = fam[np.argsort(distances)[:6]]
    assert nearest[0] == 2 and (nearest == 2).sum() >= 5, "lands among its family"
    source = int(np.flatnonzero(index.metadata["path"].str.endswith("fam_0002_v00.png"))[0])
    assert distances[source] < 0.1 * np.ptp(p.coords, axis=0).max()
    # from the folder alone: the stored reducer and the index are loaded
    from_disk = transform(index.path, vector)
    np.testing.assert_allclose(from_disk, xy, atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        transform(p, np.zeros((1, 3), np.float32), index)


def test_a_map_of_more_images_than_the_fit_sample_places_them_all(index: ReplicaIndex) -> None:
    stages: list[tuple[int, int, str]] = []
    # 50 of 65 fitted: with 15 neighbours per point, a family of 16 keeps most of its
    # neighbours inside it (with 5 per family, a placed image lands between families)
    p = project(index, max_points=50, seed=3, progress=lambda d, t, m="": stages.append((d, t, m)))
    assert not p.subsampled and p.n_points == N and p.n_total == N and p.info.n_fit == 50
    assert p.ids.tolist() == list(range(N)) and np.isfinite(p.coords).all()
    assert p.fit_ids is not None and len(p.fit_ids) == 50 and np.all(np.diff(p.fit_ids) > 0)
    assert np.array_equal(projection_module._sample_rows(N, 50, 3), p.fit_ids)
    # the rest were placed in steps with progress, then searched for their nearest other
    assert any("placed 65 of 65" in m for _, _, m in stages) and stages[-1][0] == stages[-1][1]
    info = json.loads((projection_dir(index) / INFO_FILE).read_text())
    assert info["n_fit"] == 50 and info["n_points"] == N and info["subsampled"] is False
    # nearest-neighbour similarity of every image, against the whole index
    expected = projection_module.nearest_neighbour_similarity(index, np.arange(N))
    np.testing.assert_allclose(p.nn_similarity, expected)
    # planted: an image left out of the fit whose near-duplicate (cosine >= 0.98) was fitted
    # lands next to it; most placed images sit nearest a fitted image of their own family
    vectors = index.get_vectors(np.arange(N))
    fam = families(index)
    fitted = set(p.fit_ids.tolist())
    span = float(np.ptp(p.coords, axis=0).max())
    placed_near: list[float] = []
    same_family: list[bool] = []
    for row in (r for r in range(N) if r not in fitted and fam[r] != 99):
        sims = vectors[p.fit_ids] @ vectors[row]
        twin = int(p.fit_ids[int(sims.argmax())])
        if sims.max() >= 0.98:
            placed_near.append(np.linalg.norm(p.coords[row] - p.coords[twin]) / span)
        to_fitted = np.linalg.norm(p.coords[p.fit_ids] - p.coords[row], axis=1)
        same_family.append(bool(fam[p.fit_ids[int(to_fitted.argmin())]] == fam[row]))
    assert placed_near and max(placed_near) < 0.1, placed_near
    assert np.mean(same_family) >= 0.8, same_family
    # the stored map reloads with its fit sample; uploads are placed through it
    again = load_projection(index)
    assert again is not None and np.array_equal(again.fit_ids, p.fit_ids)
    moved = np.linalg.norm(transform(again, vectors[:3], index) - p.coords[:3], axis=1)
    assert moved.max() < 0.1 * span
    # the same request is reused, another refits on all
    assert project(index, max_points=50, seed=3).info.created == p.info.created
    assert project(index).info.n_fit == N


def test_drawn_points_are_capped_and_keep_the_selected_ones(index: ReplicaIndex) -> None:
    from lib.projection import density_grid, drawn_positions, map_table

    p = project(index)
    assert drawn_positions(p, max_drawn=100).tolist() == list(range(N))
    drawn = drawn_positions(p, max_drawn=30, seed=1)
    assert len(drawn) == 30 and len(set(drawn.tolist())) == 30
    hidden = next(r for r in range(N) if r not in set(drawn.tolist()))
    with_selected = drawn_positions(p, max_drawn=30, seed=1, keep=[hidden])
    assert len(with_selected) == 31 and hidden in with_selected
    table = map_table(p, index.metadata, positions=with_selected)
    assert len(table) == 31 and hidden in set(table["row"])
    counts, xs, ys = density_grid(p.coords, bins=8)
    assert counts.shape == (8, 8) and counts.sum() == N and len(xs) == len(ys) == 8


def test_a_changed_index_drops_or_ignores_its_projection(index: ReplicaIndex) -> None:
    project(index)
    info_path = projection_dir(index) / INFO_FILE
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "index_updated": "2000-01-01T00:00:00+00:00"}))
    assert load_projection(index) is None
    info_path.write_text(json.dumps(info))
    assert load_projection(index) is not None
    # recalibrating changes the verdicts, not the images: the map stays
    assert load_projection(calibrate_index(index.path)) is not None
    # adding images changes the index: the old map (dropped, or left beside it) is ignored
    extra = write_scenes(index.path.parent / "extra", [100, 101])
    grown = add_to_index(index.path, extra).index
    assert grown.count == N + 2
    assert load_projection(open_index(grown.path)) is None


def test_caption_groups_and_top_groups() -> None:
    meta = pd.DataFrame(
        {
            "caption": ["Grinning face", "", "grinning cat", None, "flag: France"],
            "path": ["/a/x.png", "/data/cats/c.png", "/a/y.png", "/data/dogs/d.png", "/f.png"],
        }
    )
    groups = caption_groups(meta)
    assert groups == ["grinning", "cats", "grinning", "dogs", "flag"]
    assert top_groups(groups, 1) == ["grinning", OTHER_GROUP, "grinning", OTHER_GROUP, OTHER_GROUP]


def test_too_few_images_is_refused(tmp_path: Path) -> None:
    write_scenes(tmp_path / "train", range(3))
    index = build_index(tmp_path / "train", tmp_path / "idx", embedder="sscd-distilled").index
    with pytest.raises(ProjectionError, match="at least 5 images"):
        project(index)
    assert not projection_dir(index).exists()


def test_grid_representatives_pick_the_centre_of_the_most_crowded_cells() -> None:
    from lib.projection import grid_representatives

    rng = np.random.default_rng(0)
    crowd = rng.normal((1.0, 1.0), 0.05, (50, 2))
    middle = rng.normal((5.0, 5.0), 0.05, (20, 2))
    lone = np.array([[9.5, 9.5]])
    coords = np.concatenate([crowd, middle, lone]).astype(np.float32)
    picks, side = grid_representatives(coords, cells=10, limit=2)
    assert len(picks) == 2 and side == pytest.approx(np.ptp(coords, axis=0).max() / 10)
    assert picks[0] < 50 and 50 <= picks[1] < 70  # the crowd first, the lone point left out
    centre = crowd.mean(axis=0)
    nearest = int(np.argmin(np.linalg.norm(crowd - centre, axis=1)))
    assert picks[0] == nearest or np.linalg.norm(coords[picks[0]] - centre) < 0.05
    assert grid_representatives(np.zeros((0, 2), np.float32))[0].size == 0
