"""Does geometric verification of the shortlist catch what the global score misses?

On the bundled OpenMoji index, queries are the verdict benchmark's edits of indexed emoji
(:data:`lib.bench.edits.VERDICT_EDITS` and ``composed`` onto a Tux Paint photograph) and
the held-out emoji as unrelated images (their embeddings are shared with
``benchmarks/verdict_learning.py``'s cache when it ran first). Three verdicts are set
at a measured ``--rate`` of false alarms among the unrelated images:

- *global*: SSCD top-1 cosine minus its background (the calibrated score);
- *local*: the most SIFT + RANSAC inliers (:mod:`lib.verdict.local_features`) among the
  ``--shortlist`` best global matches, that candidate as the top-1;
- *either*: each signal turned into its share of the unrelated null at or below it, the
  stronger one decides (its candidate is the top-1), one threshold for the pair;
- *fisher*: the two signals' tail probabilities in the null combined by Fisher's method
  (-log p_global - log p_local), the stronger signal's candidate as the top-1.

It prints, per verdict and edit kind, the share caught (top-1 right and at or above the
threshold) and top-1 right, with ratios against *global* from the same run, and the
cost of the local step per query.

    .venv/bin/python benchmarks/local_verification.py [--test 150] [--shortlist 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.bench.edits import VERDICT_EDITS, composed
from lib.calibration import Calibration, background
from lib.embedders import create_embedder
from lib.images import ImageLoadError, list_image_files, load_image
from lib.index import open_index
from lib.verdict.local_features import FeatureCache, local_features, verify_shortlist

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "data" / "cache" / "verdict_learning"
RESULTS = REPO / "benchmarks" / "results" / "local_verification.json"
STAMPS = Path("/usr/share/tuxpaint/stamps")


def _share_below(null: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(null), x, side="right") / len(null)


def _tail(null: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Share of the null at or above each x, smoothed: (count + 1) / (n + 1)."""
    above = len(null) - np.searchsorted(np.sort(null), x, side="left")
    return (above + 1) / (len(null) + 1)


def _fisher(null_g: np.ndarray, null_l: np.ndarray, g: np.ndarray, loc: np.ndarray) -> np.ndarray:
    """Fisher's combination of the two tail probabilities: -log(p_g) - log(p_l)."""
    return -np.log(_tail(null_g, g)) - np.log(_tail(null_l, loc))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=str(REPO / "data" / "indexes" / "openmoji-sscd"))
    parser.add_argument("--heldout", default=str(REPO / "data" / "openmoji" / "heldout"))
    parser.add_argument("--test", type=int, default=150)
    parser.add_argument("--shortlist", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.02)
    args = parser.parse_args()

    index = open_index(args.index)
    indexed = np.asarray(index.vectors(), np.float32)
    paths = index.file_paths()
    order = np.random.default_rng(0).permutation(index.count)
    test_rows = order[: args.test]
    kinds = [*VERDICT_EDITS, "composed"]
    photos = [p for p in list_image_files(STAMPS) if p.suffix.lower() in (".png", ".jpg")][:200]
    embedder = create_embedder("sscd")
    cache: FeatureCache = {}

    def load(path: str) -> Image.Image | None:
        try:
            return load_image(path).image
        except ImageLoadError:
            return None

    def judge_all(images: list[Image.Image], vectors: np.ndarray) -> dict[str, np.ndarray]:
        sims = vectors @ indexed.T
        top = np.argsort(-sims, axis=1)[:, : max(8, args.shortlist)]
        top_sims = np.take_along_axis(sims, top, axis=1)
        calibrated = top_sims[:, 0] - background(top_sims, indexed[top], Calibration())
        inliers, local_top = np.zeros(len(images)), np.zeros(len(images), np.int64)
        for i, image in enumerate(images):
            short = [int(r) for r in top[i, : args.shortlist]]
            found = verify_shortlist(
                local_features(image, with_mirror=True), [paths[r] for r in short], load, cache
            )
            best = max(range(len(found)), key=lambda j: (found[j].inliers, -j))
            inliers[i], local_top[i] = found[best].inliers, short[best]
        return {"global_top": top[:, 0], "calibrated": calibrated, "inliers": inliers,
                "local_top": local_top}  # fmt: skip

    held = list_image_files(args.heldout)
    tag = f"{index.path.name}-{index.count}-s0"
    held_cache = CACHE / f"heldout-{tag}.npy"
    held_images = [load_image(p).image.convert("RGB") for p in held]
    held_vectors = (
        np.load(held_cache, allow_pickle=False)
        if held_cache.is_file()
        else embedder.embed_images(held_images)
    )
    t0 = time.perf_counter()
    null = judge_all(held_images, held_vectors)
    per_query_ms = 1000 * (time.perf_counter() - t0) / len(held_images)
    null_global, null_local = null["calibrated"], null["inliers"]
    null_either = np.maximum(
        _share_below(null_global, null_global), _share_below(null_local, null_local)
    )
    null_fisher = _fisher(null_global, null_local, null_global, null_local)
    thresholds = {
        "fisher": float(np.quantile(null_fisher, 1 - args.rate)),
        "global": float(np.quantile(null_global, 1 - args.rate)),
        "local": float(np.quantile(null_local, 1 - args.rate)),
        "either": float(np.quantile(null_either, 1 - args.rate)),
    }
    rows: dict[str, dict[str, float]] = {name: {} for name in thresholds}
    for kind in kinds:
        edit_rng = np.random.default_rng([0, kinds.index(kind)])
        images = []
        for row in test_rows:
            source = load_image(paths[int(row)]).image.convert("RGB")
            if kind == "composed":
                photo = load_image(photos[int(edit_rng.integers(len(photos)))]).image
                images.append(composed(source, edit_rng, photo))
            else:
                images.append(VERDICT_EDITS[kind](source, edit_rng))
        cached = CACHE / f"test-{tag}-{args.test}-{kind}.npy"
        vectors = (
            np.load(cached, allow_pickle=False)
            if cached.is_file()
            else embedder.embed_images(images)
        )
        r = judge_all(images, vectors)
        p_global = _share_below(null_global, r["calibrated"])
        p_local = _share_below(null_local, r["inliers"])
        either_top = np.where(p_local > p_global, r["local_top"], r["global_top"])
        verdicts = {
            "global": (r["global_top"], r["calibrated"] >= thresholds["global"]),
            "local": (r["local_top"], r["inliers"] >= thresholds["local"]),
            "either": (either_top, np.maximum(p_global, p_local) >= thresholds["either"]),
            "fisher": (
                either_top,
                _fisher(null_global, null_local, r["calibrated"], r["inliers"])
                >= thresholds["fisher"],
            ),
        }
        for name, (top1, flagged) in verdicts.items():
            right = top1 == test_rows
            rows[name][f"{kind} caught"] = round(float((right & flagged).mean()), 3)
            rows[name][f"{kind} top1"] = round(float(right.mean()), 3)
    for name in rows:
        edited = [rows[name][f"{k} caught"] for k in kinds if k != "composed"]
        rows[name]["edited caught"] = round(float(np.mean(edited)), 3)
    held_far = {
        "global": float((null_global >= thresholds["global"]).mean()),
        "local": float((null_local >= thresholds["local"]).mean()),
        "either": float((null_either >= thresholds["either"]).mean()),
        "fisher": float((null_fisher >= thresholds["fisher"]).mean()),
    }
    print(
        f"OpenMoji index {index.count} images; {len(test_rows)} sources x {len(kinds)} edits; "
        f"{len(held)} unrelated held-out emoji; thresholds at {args.rate:.0%} measured false "
        f"alarms (on the same unrelated set: {held_far}); local step {per_query_ms:.0f} ms "
        f"per query with a shortlist of {args.shortlist}\n"
    )
    cols = ["edited caught", *[f"{k} caught" for k in kinds], "composed top1"]
    print("| verdict | " + " | ".join(cols) + " | edited caught vs global |")
    print("|---|" + "---|" * (len(cols) + 1))
    for name, row in rows.items():
        ratio = row["edited caught"] / max(rows["global"]["edited caught"], 1e-9)
        print(f"| {name} | " + " | ".join(str(row[c]) for c in cols) + f" | {ratio:.2f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "args": vars(args),
                "thresholds": thresholds,
                "ms_per_query": per_query_ms,
                "rows": rows,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
