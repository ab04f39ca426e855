"""UMAP map of an index: stored beside it as plain arrays, reused, invalidated, subsampled;
new images land next to the indexed image they copy (on it when they equal it), placed from
their neighbours the way UMAP's transform starts a point; a damaged or hostile projection.json
or array is a ProjectionError, never another exception."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lib.projection as projection_module
from lib.index import ReplicaIndex, add_to_index, build_index, calibrate_index, open_index
from lib.projection import (
    INFO_FILE,
    OTHER_GROUP,
    ProjectionError,
    ProjectionInfo,
    caption_groups,
    load_projection,
    place_from_neighbours,
    place_images,
    place_vectors,
    project,
    projection_dir,
    top_groups,
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
    # plain arrays and JSON only: no fitted model (a pickle) is stored
    names = {"coords.npy", "ids.npy", "fit_ids.npy", "nn_similarity.npy", INFO_FILE}
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


def test_placing_puts_an_edited_copy_next_to_its_source(index: ReplicaIndex) -> None:
    p = project(index)
    edited = scene(2).resize((200, 150)).crop((5, 4, 195, 146))
    vector = index.create_embedder().embed_images([edited])
    xy = place_vectors(p, vector, index)
    assert xy.shape == (1, 2) and xy.dtype == np.float32
    fam = families(index)
    distances = np.linalg.norm(p.coords - xy[0], axis=1)
    nearest = fam[np.argsort(distances)[:6]]
    assert nearest[0] == 2 and (nearest == 2).sum() >= 5, "lands among its family"
    source = int(np.flatnonzero(index.metadata["path"].str.endswith("fam_0002_v00.png"))[0])
    assert distances[source] < 0.1 * np.ptp(p.coords, axis=0).max()
    # from the folder alone: the stored arrays and the index are loaded
    from_disk = place_vectors(index.path, vector)
    np.testing.assert_allclose(from_disk, xy, atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        place_vectors(p, np.zeros((1, 3), np.float32), index)
    assert place_vectors(p, np.zeros((0, vector.shape[1]), np.float32), index).shape == (0, 2)


@pytest.mark.parametrize("max_points", [N, 50])
def test_an_upload_equal_to_an_indexed_image_lands_on_it(
    index: ReplicaIndex, max_points: int
) -> None:
    """Planted: the very file of an indexed image, uploaded, lands on that image's stored
    position, whether it was fitted by UMAP or placed on the map afterwards; a broken file
    is skipped with its reason."""
    p = project(index, max_points=max_points, seed=3)
    fitted = set(p.fit_ids.tolist()) if p.fit_ids is not None else set(range(N))
    rows = [0, 40] if max_points == N else [next(r for r in range(N) if r not in fitted)]
    files = [(f"copy_{r}.png", Path(index.metadata["path"][r]).read_bytes()) for r in rows]
    placed = place_images(p, [*files, ("broken.png", b"not an image")], index)
    assert placed.names == [name for name, _ in files] and placed.errors[0].startswith("broken")
    assert placed.vectors.shape == (len(rows), index.manifest.dim)
    span = float(np.ptp(p.coords, axis=0).max())
    for xy, row in zip(placed.coords, rows, strict=True):
        assert np.linalg.norm(xy - p.coords[p.position(row)]) < 1e-5 * span
    empty = place_images(p, [], index)
    assert empty.names == [] and empty.coords.shape == (0, 2)


def test_a_map_of_a_subset_places_from_the_mapped_rows_only(index: ReplicaIndex) -> None:
    """Maps stored by earlier versions hold a random subset: placing searches past the rows
    that are not on it."""
    from dataclasses import replace

    full = project(index)
    shown = np.arange(0, N, 2)  # every other row
    info = replace(full.info, n_points=len(shown), subsampled=True)
    subset = projection_module.Projection(
        shown, full.coords[shown], full.nn_similarity[shown], info, None
    )
    vectors = index.get_vectors(np.array([1, 2]))  # 1 is not on the map, 2 is
    xy = place_vectors(subset, vectors, index)
    assert np.isfinite(xy).all()
    np.testing.assert_array_equal(xy[1], full.coords[2])
    span = float(np.ptp(full.coords, axis=0).max())
    assert np.linalg.norm(xy[0] - full.coords[1]) < 0.1 * span  # among its family


def test_the_weights_are_umaps_own() -> None:
    """Planted against UMAP itself: the membership weights, and the weighted mean they give
    (``_umap_start``), are those of ``umap.umap_.init_graph_transform`` over
    ``smooth_knn_dist``/``compute_membership_strengths`` with local connectivity 0, as
    ``UMAP.transform`` computes them."""
    import scipy.sparse
    from umap.umap_ import compute_membership_strengths, init_graph_transform, smooth_knn_dist

    rng = np.random.default_rng(0)
    m, k, fitted = 40, 15, 300
    embedding = rng.normal(size=(fitted, 2)).astype(np.float32)
    positions = np.stack([rng.choice(fitted, k, replace=False) for _ in range(m)])
    sims = np.sort(rng.uniform(0.2, 0.95, (m, k)), axis=1)[:, ::-1].astype(np.float32)
    dists = np.sqrt(2 - 2 * sims).astype(np.float32)
    sigmas, rhos = smooth_knn_dist(dists, float(k), local_connectivity=0.0)
    rows, cols, vals, _ = compute_membership_strengths(
        positions.astype(np.int32), dists, sigmas, rhos, bipartite=True
    )
    graph = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(m, fitted)).tocsr()
    expected = init_graph_transform(graph, embedding)
    got = projection_module._umap_start(sims, embedding[positions])
    np.testing.assert_allclose(got, expected, atol=2e-4)
    weights = projection_module._membership_weights(sims.astype(float), np.ones((m, k), bool))
    np.testing.assert_allclose(weights.ravel(), vals, rtol=1e-4)
    # not the plain mean: the nearest neighbours pull harder
    assert np.abs(got - embedding[positions].mean(axis=1)).max() > 1e-2


def test_an_image_with_neighbours_in_two_clumps_lands_in_the_heavier_one() -> None:
    """Planted: 10 close neighbours in a clump at (0, 0) and 5 less similar ones at (20, 0).
    UMAP's starting point (the weighted mean of all) falls in the empty space between; the
    placement stays in the clump, among its own neighbours."""
    rng = np.random.default_rng(1)
    clump = rng.normal(0.0, 0.1, (10, 2))
    far = rng.normal(0.0, 0.1, (5, 2)) + np.array([20.0, 0.0])
    coords = np.concatenate([clump, far])[None]
    sims = np.concatenate([np.linspace(0.9, 0.8, 10), np.linspace(0.79, 0.7, 5)])[None]
    placed = place_from_neighbours(sims, coords)[0]
    assert np.linalg.norm(placed - clump.mean(axis=0)) < 0.2
    start = projection_module._umap_start(sims, coords)[0]
    assert 1.0 < start[0] < 19.0, "the plain weighted mean lands between the clumps"


def test_neighbour_placement_edge_cases() -> None:
    coords = np.array([[[0.0, 0.0], [0.3, 0.0], [0.0, 0.3]]])
    # an equal image (cosine 1, up to rounding) lands on its neighbour, the most similar one
    # of several; a near-duplicate (0.9999) is placed among its neighbours
    on = place_from_neighbours(np.array([[0.9999999, 0.3, 0.2]]), coords)
    assert on.tolist() == [[0.0, 0.0]] and on.dtype == np.float32
    best = place_from_neighbours(np.array([[0.999995, 0.999999, 0.2]]), coords)
    np.testing.assert_allclose(best, [[0.3, 0.0]])
    near = place_from_neighbours(np.array([[0.9999, 0.3, 0.2]]), coords)
    assert 0 < near[0, 0] < 0.3 and 0 < near[0, 1] < 0.3
    # equally similar neighbours in one clump: their centre; missing ones (-inf, NaN) weigh
    # nothing; none at all: NaN
    np.testing.assert_allclose(place_from_neighbours(np.full((1, 3), 0.5), coords), [[0.1, 0.1]])
    gap = coords.copy()
    gap[0, 2] = np.nan
    np.testing.assert_allclose(place_from_neighbours(np.full((1, 3), 0.5), gap), [[0.15, 0.0]])
    sims = np.array([[0.5, -np.inf, 0.5]])
    np.testing.assert_allclose(place_from_neighbours(sims, coords), [[0.0, 0.15]])
    assert np.isnan(place_from_neighbours(np.full((1, 3), -np.inf), coords)).all()
    with pytest.raises(ValueError, match="must agree"):
        place_from_neighbours(np.zeros((1, 3)), np.zeros((1, 2, 2)))


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
    moved = np.linalg.norm(place_vectors(again, vectors[:3], index) - p.coords[:3], axis=1)
    assert moved.max() < 1e-5 * span  # indexed images land on themselves
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


def test_rewriting_a_map_drops_the_reducer_file_of_earlier_versions(index: ReplicaIndex) -> None:
    first = project(index)
    old = projection_dir(index) / "reducer.joblib"
    old.write_bytes(b"left by an earlier version")
    stored = load_projection(index)  # opens without it
    assert stored is not None and np.array_equal(stored.coords, first.coords)
    project(index, force=True)
    assert not old.exists() and load_projection(index) is not None


@pytest.fixture(scope="module")
def mapped(built: Path, tmp_path_factory: pytest.TempPathFactory) -> ReplicaIndex:
    """A copy of the built index with its map stored: copied again by the tests that damage
    it; the fuzz test puts projection.json back after each example."""
    index = open_index(shutil.copytree(built, tmp_path_factory.mktemp("mapped") / "idx"))
    project(index)
    return index


def _save(path: Path, array: Any) -> None:
    with path.open("wb") as f:
        np.save(f, array, allow_pickle=True)


DAMAGE: dict[str, tuple[Any, str]] = {
    "rows outside the index": (lambda d: _save(d / "ids.npy", np.arange(N) + 1000), "outside"),
    "a row twice": (lambda d: _save(d / "ids.npy", np.zeros(N, np.int64)), "twice"),
    "float rows": (lambda d: _save(d / "ids.npy", np.arange(N, dtype=float)), "integers"),
    "rows of the wrong count": (lambda d: _save(d / "ids.npy", np.arange(3)), "holds 3 rows"),
    "3-D coordinates": (lambda d: _save(d / "coords.npy", np.zeros((N, 3))), "coords.npy must"),
    "NaN coordinates": (lambda d: _save(d / "coords.npy", np.full((N, 2), np.nan)), "finite"),
    "an object array": (lambda d: _save(d / "nn_similarity.npy", np.array([{}])), "cannot be read"),
    "a missing array": (lambda d: (d / "nn_similarity.npy").unlink(), "missing"),
    "an array too large": (lambda d: (d / "coords.npy").write_bytes(b"\0" * 99_999), "too large"),
    "an archive": (lambda d: np.savez((d / "ids.npy").open("wb"), a=np.arange(N)), "single array"),
    "a symlink outside": (
        lambda d: ((d / "coords.npy").unlink(), (d / "coords.npy").symlink_to(_outside(d))),
        "outside the index folder",
    ),
    "JSON that is a list": (lambda d: (d / INFO_FILE).write_text("[1, 2]"), "must hold an object"),
    "JSON too large": (lambda d: (d / INFO_FILE).write_text(" " * (1 << 21)), "larger than"),
    "not UTF-8": (lambda d: (d / INFO_FILE).write_bytes(b'{"\xff": 1}'), "not valid JSON"),
    "no n_neighbors": (lambda d: _edit_info(d, lambda i: i["umap"].pop("n_neighbors")), "n_neig"),
    "a string count": (lambda d: _edit_info(d, lambda i: i.update(n_points="65")), "'n_points'"),
    "no points": (lambda d: _edit_info(d, lambda i: i.update(n_points=0)), "0 points"),
}


def _outside(folder: Path) -> Path:
    target = folder.parent.parent / "elsewhere.npy"  # beside the index folder, not in it
    np.save(target, np.zeros((N, 2), np.float32))
    return target


def _edit_info(folder: Path, change: Any) -> None:
    info = json.loads((folder / INFO_FILE).read_text())
    change(info)
    (folder / INFO_FILE).write_text(json.dumps(info))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_map_is_refused_with_a_reason(
    mapped: ReplicaIndex, tmp_path: Path, damage: str
) -> None:
    index = open_index(shutil.copytree(mapped.path, tmp_path / "idx"))
    assert load_projection(index) is not None
    write, reason = DAMAGE[damage]
    write(projection_dir(index))
    with pytest.raises(ProjectionError, match="compute it again") as caught:
        load_projection(index)
    assert reason in str(caught.value)
    with pytest.raises(ProjectionError, match=reason):
        place_vectors(index.path, index.get_vectors(np.arange(1)))


def test_a_damaged_map_is_computed_again(mapped: ReplicaIndex, tmp_path: Path) -> None:
    index = open_index(shutil.copytree(mapped.path, tmp_path / "idx"))
    _edit_info(projection_dir(index), lambda info: info["umap"].pop("n_neighbors"))
    again = project(index)  # not an error: fitted again and stored over the damaged one
    assert again.n_points == N and again.info.n_neighbors == 15
    stored = load_projection(index)
    assert stored is not None and np.array_equal(stored.coords, again.coords)


FUZZ = partial(settings, deadline=None, database=None, derandomize=True)
"""Reproducible runs (the same examples each time) that leave no example database behind."""
VALID_INFO: dict[str, Any] = {
    "n_points": N, "n_total": N, "subsampled": False, "seed": 0, "max_points": 50_000,
    "umap": {"n_neighbors": 15, "min_dist": 0.1}, "index_updated": "segments:0",
    "index_count": N, "embedder": "sscd-distilled", "created": "", "umap_version": "0.5",
    "n_fit": N,
}  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
MUTATION = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(sorted(VALID_INFO)), st.none()),
    st.tuples(st.just("set"), st.sampled_from([*sorted(VALID_INFO), "extra"]), JSON_VALUES),
    st.tuples(st.just("umap"), st.sampled_from(["n_neighbors", "min_dist"]), JSON_VALUES),
    st.tuples(st.just("umap-drop"), st.just("n_neighbors"), st.none()),
)


def _mutate(info: dict[str, Any], mutations: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """A copy of ``info`` with each mutation applied: drop a field, set one (or a new one) to
    any JSON value, set or drop a UMAP parameter."""
    info = json.loads(json.dumps(info))
    for kind, key, value in mutations:
        if kind == "drop":
            info.pop(key, None)
        elif kind == "set":
            info[key] = value
        elif isinstance(info.get("umap"), dict) and kind == "umap-drop":
            info["umap"].pop(key, None)
        elif isinstance(info.get("umap"), dict):
            info["umap"][key] = value
    return info


def _read_or_refuse(text: str | bytes) -> ProjectionInfo | None:
    """The parsed file, or None when refused with a ProjectionError (nothing else may escape)."""
    try:
        info = ProjectionInfo.from_json(text)
    except ProjectionError as exc:
        assert str(exc).startswith(INFO_FILE)
        return None
    assert isinstance(info.n_neighbors, int) and 1 <= info.n_neighbors <= 1000
    assert all(isinstance(getattr(info, f), int) for f in ("n_points", "n_total", "index_count"))
    assert isinstance(info.subsampled, bool) and isinstance(info.umap, dict)
    return info


def test_the_valid_info_reads() -> None:
    assert _read_or_refuse(json.dumps(VALID_INFO)) == ProjectionInfo(**VALID_INFO)


@FUZZ(max_examples=300)
@given(JSON_VALUES)
def test_fuzz_any_json_value_reads_or_is_a_projection_error(value: Any) -> None:
    _read_or_refuse(json.dumps(value))


@FUZZ(max_examples=300)
@given(st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzz_a_mutated_valid_file_reads_or_is_a_projection_error(mutations: list[Any]) -> None:
    _read_or_refuse(json.dumps(_mutate(VALID_INFO, mutations)))


@FUZZ(max_examples=200)
@given(st.binary(max_size=64), st.integers(0, 400), st.integers(0, 8))
def test_fuzz_mangled_bytes_read_or_are_a_projection_error(junk: bytes, at: int, cut: int) -> None:
    text = json.dumps(VALID_INFO).encode()
    _read_or_refuse(text[:at] + junk + text[at + cut :])
    _read_or_refuse(junk)


@FUZZ(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_fuzz_a_stored_map_with_a_mutated_file_loads_places_or_is_refused(
    mapped: ReplicaIndex, mutations: list[Any]
) -> None:
    """End to end: load_projection and place_vectors on the stored map whose projection.json
    is mutated from its real one: a map, None (out of date), or a ProjectionError."""
    path = projection_dir(mapped) / INFO_FILE
    real = path.read_text()
    path.write_text(json.dumps(_mutate(json.loads(real), mutations)))
    try:
        loaded = load_projection(mapped)
    except ProjectionError as exc:
        assert "compute it again" in str(exc)
        loaded = None
    finally:
        path.write_text(real)
    if loaded is not None:
        xy = place_vectors(loaded, mapped.get_vectors(np.arange(2)), mapped)
        assert xy.shape == (2, 2) and np.isfinite(xy).all()


def test_groups_are_the_collections_own_folders_then_meaningful_caption_words() -> None:
    """Tux Paint was coloured by its captions' first word ("a", "the", "an"): a collection
    indexed from a folder of category folders is grouped by them, and captions skip
    articles and prepositions."""
    from lib.projection import find_rows

    meta = pd.DataFrame(
        {
            "caption": ["a penguin", "the tractor", "an owl", "a red car", None, "Grinning face"],
            "path": [
                "/stamps/animals/birds/penguin.png",
                "/stamps/vehicles/tractor.png",
                "/stamps/animals/owl.png",
                "/elsewhere/car.png",
                "/stamps/lone.png",
                "/emoji/1F600.png",
            ],
        }
    )
    groups = caption_groups(meta, ["/stamps", "openmoji"])
    assert groups == ["animals", "vehicles", "animals", "red", "stamps", "grinning"]
    assert caption_groups(meta)[:4] == ["penguin", "tractor", "owl", "red"]
    # find by file name (exact stems first) or caption, case-insensitive
    assert find_rows(meta, "1f600") == [5]
    assert find_rows(meta, "OWL") == [2]
    assert find_rows(meta, "car") == [3]
    assert find_rows(meta, "a") and find_rows(meta, "  ") == []
