"""Which evidence should a verdict fuse, learned per collection? Measured on one index.

The shipped verdict calls a copy when the calibrated score or the pixel alignment of the
top match is rarer than the operating point allows among unrelated images of the
collection (:mod:`lib.calibration`). This benchmark asks whether two more pieces of
evidence, learned per collection, catch more copies at the same measured false-alarm rate:

- **local features**: SIFT inliers under one similarity transform
  (:mod:`lib.verdict.local_features`) between the query and each of its first
  ``--shortlist`` matches;
- **a learned fusion**: a logistic regression (scikit-learn) over (raw cosine, calibrated
  score, alignment, log inliers) per (query, candidate), fitted on self-made copies of the
  collection's own images (:func:`lib.verdict.sensitivity.make_copies`, seed 1) against
  unrelated images (the calibration's null: indexed images searched without their family).

Every score's threshold is set at ``--rate`` of a *second* half of the null that no fit
saw, and copies are counted on *other* self-made copies (seed 0, the ones the index's
measured sensitivity uses). A copy is caught when the best-scoring candidate is its
source and its score reaches the threshold.

    .venv/bin/python benchmarks/verdict_fusion.py [--index data/indexes/openmoji-sscd]

Results go to stdout and benchmarks/results/verdict_fusion-<index>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.allowed_paths import index_roots, load_inside
from lib.calibration import NEIGHBOURS, background, families
from lib.images import ImageLoadError
from lib.index import ReplicaIndex, open_index
from lib.search import search_images
from lib.verdict.local_features import FeatureCache, local_features, verify_shortlist
from lib.verdict.sensitivity import make_copies
from lib.verification import align_shortlist, grey_thumb

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def _loader(index: ReplicaIndex) -> Any:
    roots = index_roots(index)

    def load(path: str) -> Any:
        try:
            return load_inside(path, roots, draft_short_side=256).image
        except ImageLoadError:
            return None

    return load


def null_rows(index: ReplicaIndex, n: int, depth: int, seed: int) -> list[dict[str, Any]]:
    """Indexed images searched without their family, as the calibration's null: per
    image its first ``depth`` candidates with raw, calibrated and alignment."""
    cal = index.calibration
    vectors = index.table if index.table is not None else index.vectors()
    rng = np.random.default_rng(seed)
    rows = rng.choice(index.count, size=min(n, index.count), replace=False)
    fam = families(index.faiss, vectors, rows, cal.family_cosine)
    k = min(index.count, NEIGHBOURS + max(len(f) for f in fam) + 16)
    sims, ids = index.search_vectors(np.ascontiguousarray(vectors[rows]), k)
    paths = index.file_paths()
    roots = index_roots(index)
    load = _loader(index)
    out = []
    for j, row in enumerate(rows):
        keep = np.array([i >= 0 and int(i) not in fam[j] for i in ids[j]])
        s, nb = sims[j][keep][:NEIGHBOURS], ids[j][keep][:NEIGHBOURS]
        if s.size < 2:
            continue
        bg = float(background(s[None, :], vectors[nb][None, :, :], cal)[0])
        image = load(paths[int(row)])
        if image is None:
            continue
        cand = [paths[int(i)] for i in nb[:depth]]
        aligned = align_shortlist(grey_thumb(image), cand, {}, roots)
        out.append(
            {
                "image": image,
                "family": fam[j],
                "raw": s[:depth].tolist(),
                "calibrated": (s[:depth] - bg).tolist(),
                "alignment": [float(a) if np.isfinite(a) else 0.0 for a in aligned],
                "paths": cand,
                "source_at": -1,
            }
        )
    return out


def copy_rows(index: ReplicaIndex, seed: int, depth: int) -> list[dict[str, Any]]:
    """Self-made copies searched as queries: per copy its first ``depth`` candidates in
    global order, and where its source is among them."""
    copies = make_copies(index, seed=seed)
    out = []
    for start in range(0, len(copies), 16):
        batch = copies[start : start + 16]
        results = search_images(index, [(c.label, c.image) for c in batch], top_k=8)
        for made, result in zip(batch, results, strict=True):
            if result.error or not result.matches:
                continue
            ordered = sorted(result.matches, key=lambda m: (-m.score, m.rank))[:depth]
            out.append(
                {
                    "image": made.image,
                    "kind": made.kind,
                    "raw": [m.score for m in ordered],
                    "calibrated": [m.calibrated for m in ordered],
                    "alignment": [m.alignment or 0.0 for m in ordered],
                    "paths": [m.path for m in ordered],
                    "source_at": next(
                        (i for i, m in enumerate(ordered) if m.id == made.source_id), -1
                    ),
                }
            )
    return out


def densities(
    index: ReplicaIndex, rows: list[int], exclude: set[int] | None = None, k: int = 48
) -> list[float]:
    """Each of ``rows``' own background: the mean cosine of its first two neighbours
    that are not near-duplicates of it (cosine under ``dup_cosine``), leaving out the
    rows in ``exclude`` (a null image's family: a real unseen query is not indexed)."""
    vectors = index.table if index.table is not None else index.vectors()
    cal = index.calibration
    sims, ids = index.search_vectors(np.ascontiguousarray(vectors[rows]), min(k, index.count))
    out = []
    for j, row in enumerate(rows):
        keep = (ids[j] >= 0) & (ids[j] != row) & (sims[j] < cal.dup_cosine)
        if exclude:
            keep &= np.array([int(i) not in exclude for i in ids[j]])
        s = sims[j][keep]
        out.append(float(s[:2].mean()) if s.size else 0.0)
    return out


def add_inliers(rows: list[dict[str, Any]], index: ReplicaIndex, cache: FeatureCache) -> None:
    load = _loader(index)
    for row in rows:
        query = local_features(row["image"], with_mirror=True)
        row["inliers"] = [g.inliers for g in verify_shortlist(query, row["paths"], load, cache)]
        del row["image"]


def features(row: dict[str, Any]) -> np.ndarray:
    """(depth, 4): raw, calibrated, alignment, log(1 + inliers) per candidate."""
    return np.column_stack(
        [row["raw"], row["calibrated"], row["alignment"], np.log1p(row["inliers"])]
    )


def percentile_of(null: np.ndarray, values: np.ndarray) -> np.ndarray:
    null = np.sort(null)
    return np.searchsorted(null, values, side="right") / len(null)


def evaluate(
    score: Any, null_b: list[dict[str, Any]], test: list[dict[str, Any]], rate: float
) -> dict[str, Any]:
    """Threshold ``score`` (row -> per-candidate scores) at ``rate`` of null B's best
    candidates; caught = best candidate is the source and reaches it."""
    null_best = np.array([np.max(score(r)) for r in null_b])
    threshold = float(np.quantile(null_best, 1 - rate))
    out: dict[str, Any] = {"threshold": round(threshold, 5)}
    for kind in ("edited", "pasted"):
        rows = [r for r in test if r["kind"] == kind]
        hits = 0
        for r in rows:
            s = score(r)
            best = int(np.argmax(s))
            hits += int(best == r["source_at"] and s[best] >= threshold)
        out[kind] = round(hits / max(len(rows), 1), 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=str(REPO / "data" / "indexes" / "openmoji-sscd"))
    parser.add_argument("--null", type=int, default=1200)
    parser.add_argument("--shortlist", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.02)
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    index = open_index(args.index)
    depth = args.shortlist
    null = null_rows(index, args.null, depth, seed=7)
    train = copy_rows(index, seed=1, depth=depth)
    test = copy_rows(index, seed=0, depth=depth)
    cache: FeatureCache = {}
    for rows in (null, train, test):
        add_inliers(rows, index, cache)
    null_a, null_b = null[: len(null) // 2], null[len(null) // 2 :]
    row_of = {p: i for i, p in enumerate(index.file_paths())}
    for rows in (null, train, test):
        for r in rows:
            r["density"] = densities(index, [row_of[p] for p in r["paths"]], r.get("family"))
    centre = float(np.median([d for r in null for d in r["density"]]))
    for rows in (null, train, test):
        for r in rows:
            r["density"] = [d - centre for d in r["density"]]

    cal_null = np.array([r["calibrated"][0] for r in null_a])
    align_null = np.array([max(r["alignment"]) for r in null_a])
    inlier_null = np.array([max(r["inliers"]) for r in null_a])

    def shipped_like(r: dict[str, Any]) -> np.ndarray:
        return np.maximum(
            percentile_of(cal_null, np.array(r["calibrated"])),
            percentile_of(align_null, np.array(r["alignment"])),
        )

    def three_signals(r: dict[str, Any]) -> np.ndarray:
        return np.maximum(
            shipped_like(r), percentile_of(inlier_null, np.array(r["inliers"], float))
        )

    def two_sided(beta: float) -> Any:
        """Calibrated minus ``beta`` x the candidate's own background (its density)."""

        def score(r: dict[str, Any]) -> np.ndarray:
            return np.array(r["calibrated"]) - beta * np.array(r["density"])

        return score

    def two_sided_or_alignment(beta: float) -> Any:
        null_scores = np.array([np.max(two_sided(beta)(r)) for r in null_a])

        def score(r: dict[str, Any]) -> np.ndarray:
            return np.maximum(
                percentile_of(null_scores, two_sided(beta)(r)),
                percentile_of(align_null, np.array(r["alignment"])),
            )

        return score

    x, y = [], []
    for r in null_a:
        x.append(features(r))
        y += [0] * len(r["raw"])
    for r in train:
        f = features(r)
        x.append(f)
        y += [int(i == r["source_at"]) for i in range(len(f))]
    model = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")
    model.fit(np.vstack(x), np.array(y))

    def learned(r: dict[str, Any]) -> np.ndarray:
        return model.decision_function(features(r))

    def learned_no_sift(r: dict[str, Any]) -> np.ndarray:
        f = features(r).copy()
        f[:, 3] = 0.0
        return no_sift.decision_function(f)

    x0 = np.vstack(x).copy()
    x0[:, 3] = 0.0
    no_sift = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")
    no_sift.fit(x0, np.array(y))

    scores = {
        "calibrated score alone": lambda r: np.array(r["calibrated"][:1]),
        "calibrated or alignment (stronger percentile, as shipped)": shipped_like,
        "+ SIFT inliers (stronger of three percentiles)": three_signals,
        "learned fusion without SIFT": learned_no_sift,
        "learned fusion with SIFT": learned,
        "calibrated - 0.5 x candidate density": two_sided(0.5),
        "calibrated - 1.0 x candidate density": two_sided(1.0),
        "(calibrated - 0.5 x density) or alignment": two_sided_or_alignment(0.5),
        "(calibrated - 1.0 x density) or alignment": two_sided_or_alignment(1.0),
    }
    table = {name: evaluate(fn, null_b, test, args.rate) for name, fn in scores.items()}
    base = table["calibrated or alignment (stronger percentile, as shipped)"]
    print(
        f"{Path(args.index).name}: {len(null)} null images (half to fit, half to set the "
        f"threshold), {len(train)} training copies, {len(test)} test copies; "
        f"operating point {args.rate:.1%}; shortlist {depth}"
    )
    print(f"{'score':58s} {'edited':>8s} {'pasted':>8s} {'vs shipped':>11s}")
    for name, row in table.items():
        ratio = row["edited"] / base["edited"] if base["edited"] else float("nan")
        print(f"{name:58s} {row['edited']:8.1%} {row['pasted']:8.1%} {ratio:10.2f}x")
    names = ["raw", "calibrated", "alignment", "log_inliers"]
    coefficients = dict(zip(names, model.coef_[0].round(3).tolist(), strict=True))
    print(f"learned weights: {coefficients}; {time.perf_counter() - started:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"verdict_fusion-{Path(args.index).name}.json"
    out.write_text(
        json.dumps({"args": vars(args), "table": table, "weights": coefficients}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
