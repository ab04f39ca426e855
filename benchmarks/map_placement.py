"""How close the map's neighbour placement comes to UMAP's own ``transform``.

The Map page no longer stores a fitted UMAP (a pickle an index folder could plant): images
that are not in UMAP's fit sample, and uploads, are placed from their nearest mapped
neighbours (:func:`lib.projection.place_from_neighbours`: UMAP's membership weights, kept
to the clump of the map that holds most of them). This measures what that costs against
``UMAP.transform``, which starts from the membership-weighted mean of the neighbours and
then runs 100 optimisation epochs.

On a real embedded index (the default OpenMoji SSCD index when it is there, else one built
from data/openmoji/train into a temporary folder) it holds out a seeded share of the images,
fits UMAP on the rest exactly as :func:`lib.projection.project` does (same neighbour graph,
PCA start, seed), and places the held-out images from the same k nearest fitted images with:

  transform   UMAP.transform on the sparse neighbour distances (in process, no file);
  neighbours  place_from_neighbours (what the library does);
  and, for scale, UMAP.transform again with another transform_seed (UMAP against itself),
  UMAP's own starting point before it optimises (the membership-weighted mean of all k),
  the nearest fitted image's position (top-1) and the plain similarity-weighted mean.

For each method against ``transform`` it prints the median (and 90th percentile) distance
between the two placements as a share of the map's extent (the longer side of the fitted
map's bounding box); the mean share of a held-out image's 10 nearest fitted points on the
map that both placements have in common, and the share of held-out images with at least 5
of 10 in common; the recall of the image's 10 true nearest fitted images (embedding cosine)
among its 10 nearest on the map; and the time to place them, against transform's.

    .venv/bin/python benchmarks/map_placement.py [--index DIR] [--heldout 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.defaults import DEFAULT_INDEX, OPENMOJI_DIR
from lib.index import ReplicaIndex, build_index, is_index, open_index
from lib.projection import (
    _distances,
    _fit_umap,
    _n_neighbors,
    _neighbour_graph,
    _PointSearch,
    _umap_start,
    place_from_neighbours,
)

RESULTS = Path(__file__).resolve().parent / "results" / "map_placement.json"
NEAREST = 10


def open_or_build(path: Path | None, scratch: Path) -> ReplicaIndex:
    """The index at ``path``, else the default one, else one built from OpenMoji's train."""
    if path is not None:
        return open_index(path)
    if is_index(DEFAULT_INDEX):
        return open_index(DEFAULT_INDEX)
    train = OPENMOJI_DIR / "train"
    if not train.is_dir():
        sys.exit("no index: pass --index, or run `make setup` for data/openmoji")
    print(f"building an SSCD index of {train} (once per run)")
    return build_index(train, scratch / "idx", embedder="sscd").index


def umap_transform(reducer: Any, sims: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """UMAP.transform of new points given their k nearest fitted points (sparse distances)."""
    import scipy.sparse

    k = sims.shape[1]
    distances = _distances(sims)
    graph = scipy.sparse.csr_matrix(
        (distances.ravel(), positions.ravel(), np.arange(0, distances.size + 1, k)),
        shape=(len(sims), size),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Transforming new data with precomputed", UserWarning)
        return np.asarray(reducer.transform(graph), dtype=np.float32)


def nearest_on_map(points: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """(m, NEAREST) positions of the fitted map points nearest each of ``points``."""
    d = ((points[:, None, :] - fitted[None, :, :]) ** 2).sum(axis=2)
    return np.argsort(d, axis=1)[:, :NEAREST]


def compare(placed: np.ndarray, reference: np.ndarray, fit_coords: np.ndarray) -> dict[str, float]:
    """Distances between two placements as a share of the map's extent, and the overlap of
    their 10 nearest map neighbours."""
    extent = float(np.ptp(fit_coords, axis=0).max())
    gap = np.linalg.norm(placed - reference, axis=1) / extent
    a, b = nearest_on_map(placed, fit_coords), nearest_on_map(reference, fit_coords)
    common = np.array([len(set(x) & set(y)) for x, y in zip(a, b, strict=True)]) / NEAREST
    return {
        "median_gap_share": float(np.median(gap)),
        "p90_gap_share": float(np.percentile(gap, 90)),
        "mean_common_10nn": float(common.mean()),
        "share_with_5_of_10_common": float((common >= 0.5).mean()),
    }


def true_recall(placed: np.ndarray, true_nn: np.ndarray, fit_coords: np.ndarray) -> float:
    """Mean share of each image's 10 nearest fitted images (by cosine) among its 10 nearest
    on the map."""
    on_map = nearest_on_map(placed, fit_coords)
    hits = [len(set(x) & set(y)) for x, y in zip(on_map, true_nn, strict=True)]
    return float(np.mean(hits) / NEAREST)


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, help="an embedded index (default: OpenMoji SSCD)")
    parser.add_argument("--heldout", type=float, default=0.2, help="share held out (0.2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        index = open_or_build(args.index, Path(scratch))
        run(index, args.heldout, args.seed)


def run(index: ReplicaIndex, heldout_share: float, seed: int) -> None:
    n = index.count
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(n, size=round(heldout_share * n), replace=False))
    fit_rows = np.setdiff1d(np.arange(n), held)
    vectors = index.get_vectors(np.arange(n))
    k = _n_neighbors(len(fit_rows))
    print(f"{index.path}: {n} images, UMAP fitted on {len(fit_rows)}, {len(held)} held out, k={k}")

    search = _PointSearch.over(index, fit_rows, vectors[fit_rows])
    sims, positions = search.search(vectors[fit_rows], k + 1)
    (reducer, fit_coords), fit_s = timed(
        lambda: _fit_umap(vectors[fit_rows], _neighbour_graph(sims, positions, k), k, seed)
    )
    (held_sims, held_pos), search_s = timed(lambda: search.search(vectors[held], k))
    # numba compiles transform's optimiser on first use: warm it on a few points, untimed
    umap_transform(reducer, held_sims[:5], held_pos[:5], len(fit_rows))
    reference, transform_s = timed(
        lambda: umap_transform(reducer, held_sims, held_pos, len(fit_rows))
    )
    neighbours, neighbours_s = timed(lambda: place_from_neighbours(held_sims, fit_coords[held_pos]))
    reducer.transform_seed = seed + 1
    again, again_s = timed(lambda: umap_transform(reducer, held_sims, held_pos, len(fit_rows)))
    top1 = fit_coords[held_pos[:, 0]]
    weights = np.clip(held_sims, 0, None)
    weighted = (weights[..., None] * fit_coords[held_pos]).sum(1) / weights.sum(1)[:, None]

    true_nn = np.argsort(-(vectors[held] @ vectors[fit_rows].T), axis=1)[:, :NEAREST]
    rows = {
        "transform (reference)": (reference, transform_s),
        "neighbours (library)": (neighbours, neighbours_s),
        "transform, other seed": (again, again_s),
        "UMAP's start (no epochs)": (_umap_start(held_sims, fit_coords[held_pos]), None),
        "nearest fitted image": (top1, None),
        "similarity-weighted mean": (weighted, None),
    }
    results: dict[str, Any] = {
        "index": str(index.path),
        "n_images": n,
        "n_fit": len(fit_rows),
        "n_heldout": len(held),
        "k": k,
        "seed": seed,
        "umap_fit_s": round(fit_s, 2),
        "neighbour_search_s": round(search_s, 4),
        "map_extent": float(np.ptp(fit_coords, axis=0).max()),
        "methods": {},
    }
    header = (
        f"{'placement':26} {'median gap':>10} {'p90 gap':>8} {'10-NN common':>12} "
        f"{'>=5 of 10':>9} {'true 10-NN':>10} {'seconds':>9} {'vs transform':>12}"
    )
    print(header)
    for name, (placed, seconds) in rows.items():
        row = compare(placed, reference, fit_coords)
        row["true_10nn_recall"] = true_recall(placed, true_nn, fit_coords)
        row["seconds"] = seconds
        row["time_vs_transform"] = None if seconds is None else seconds / transform_s
        results["methods"][name] = row
        secs = "" if seconds is None else f"{seconds:9.4f}"
        ratio = "" if seconds is None else f"{seconds / transform_s:11.4f}x"
        print(
            f"{name:26} {row['median_gap_share']:10.2%} {row['p90_gap_share']:8.2%} "
            f"{row['mean_common_10nn']:12.1%} {row['share_with_5_of_10_common']:9.1%} "
            f"{row['true_10nn_recall']:10.1%} {secs:>9} {ratio:>12}"
        )
    with_search = (transform_s + search_s) / (neighbours_s + search_s)
    results["transform_over_neighbours"] = transform_s / max(neighbours_s, 1e-9)
    results["transform_over_neighbours_with_search"] = with_search
    print(
        f"neighbour search shared by both: {search_s:.4f} s; transform / neighbours = "
        f"{results['transform_over_neighbours']:,.0f}x ({with_search:,.1f}x with the search)"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
