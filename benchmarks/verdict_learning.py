"""Does learning the collection at index time help the verdict? Raw SSCD against a learned
whitening (:mod:`lib.verdict.learning`) fitted on the collection's own self-made copies.

On the bundled OpenMoji index (``make setup`` builds it), the benchmark

1. fits whitenings on ``--pairs`` training copies (the broad random edit family) of
   indexed emoji chosen at random;
2. makes the verdict benchmark's own edits (:data:`lib.bench.edits.VERDICT_EDITS`, plus
   ``composed``: the source pasted onto a Tux Paint photograph) of other indexed emoji
   that no whitening saw, and takes the held-out emoji as unrelated queries;
3. scores each query as the verdict does (top-1 cosine minus its background,
   :func:`lib.calibration.background`) in the raw space, in each whitened space and as
   the mean of the two (a fused score), and sets each score's threshold at a measured
   ``--rate`` of false alarms among the unrelated queries.

It prints, per score: top-1 right, and caught (top-1 right and at or above the
threshold) per edit kind and over the edited kinds; ratios are against raw SSCD in the
same run.

    .venv/bin/python benchmarks/verdict_learning.py [--pairs 2000] [--test 150]

Embeddings are cached under data/cache/verdict_learning/; the table goes to stdout and
benchmarks/results/verdict_learning.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.bench.edits import VERDICT_EDITS, composed
from lib.calibration import Calibration, background
from lib.embedders import create_embedder
from lib.images import list_image_files, load_image
from lib.index import open_index
from lib.verdict.learning import fit_whitening, training_copy

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "data" / "cache" / "verdict_learning"
RESULTS = REPO / "benchmarks" / "results" / "verdict_learning.json"
STAMPS = Path("/usr/share/tuxpaint/stamps")


def _images(paths: list[str]) -> list[Image.Image]:
    return [load_image(p).image.convert("RGB") for p in paths]


def _cached(name: str, make: Any) -> np.ndarray:
    path = CACHE / f"{name}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    value = np.asarray(make(), np.float32)
    np.save(path, value, allow_pickle=False)
    return value


def _scores(queries: np.ndarray, indexed: np.ndarray, k: int = 8) -> tuple[np.ndarray, ...]:
    """(top-1 row, top-1 cosine, calibrated score) per query, exact search."""
    sims = queries @ indexed.T
    top = np.argsort(-sims, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    bg = background(top_sims, indexed[top], Calibration())
    return top[:, 0], top_sims[:, 0], top_sims[:, 0] - bg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=str(REPO / "data" / "indexes" / "openmoji-sscd"))
    parser.add_argument("--heldout", default=str(REPO / "data" / "openmoji" / "heldout"))
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--test", type=int, default=150, help="sources of edited queries")
    parser.add_argument("--rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    index = open_index(args.index)
    indexed = np.asarray(index.vectors(), np.float32)
    paths = index.file_paths()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(index.count)
    test_rows = order[: args.test]
    fit_pool = order[args.test :]
    embedder = create_embedder("sscd")
    tag = f"{index.path.name}-{index.count}-s{args.seed}"

    t0 = time.perf_counter()
    fit_rows = rng.choice(fit_pool, size=args.pairs, replace=True)

    def make_fit() -> np.ndarray:
        copies = []
        for i, row in enumerate(fit_rows):
            other = load_image(paths[int(rng.choice(fit_pool))]).image
            copy, _ = training_copy(load_image(paths[int(row)]).image, rng, other)
            copies.append(copy)
            if (i + 1) % 250 == 0:
                print(f"  training copies {i + 1}/{len(fit_rows)}", file=sys.stderr)
        return embedder.embed_images(copies)

    fit_copies = _cached(f"fit-{tag}-{args.pairs}", make_fit)
    fit_s = time.perf_counter() - t0

    photos = [p for p in list_image_files(STAMPS) if p.suffix.lower() in (".png", ".jpg")][:200]
    kinds = [*VERDICT_EDITS, "composed"]
    queries: dict[str, np.ndarray] = {}
    for kind in kinds:

        def make(kind: str = kind) -> np.ndarray:
            edit_rng = np.random.default_rng([args.seed, kinds.index(kind)])
            out = []
            for row in test_rows:
                source = load_image(paths[int(row)]).image.convert("RGB")
                if kind == "composed":
                    photo = load_image(photos[int(edit_rng.integers(len(photos)))]).image
                    out.append(composed(source, edit_rng, photo))
                else:
                    out.append(VERDICT_EDITS[kind](source, edit_rng))
            return embedder.embed_images(out)

        queries[kind] = _cached(f"test-{tag}-{args.test}-{kind}", make)
    unrelated = _cached(
        f"heldout-{tag}",
        lambda: embedder.embed_images(_images([str(p) for p in list_image_files(args.heldout)])),
    )

    spaces: dict[str, Any] = {"raw SSCD": None}
    for dim in (128, 256, 512):
        for pairs in sorted({500, 1000, args.pairs}):
            if pairs > args.pairs:
                continue
            w = fit_whitening(indexed, fit_copies[:pairs], fit_rows[:pairs], dim=dim)
            spaces[f"whitened {dim}d, {pairs} pairs"] = w
    rows_out = []
    base_caught = None
    for name, w in spaces.items():
        space = indexed if w is None else w.apply(indexed)

        def score(q: np.ndarray, w: Any = w, space: np.ndarray = space) -> tuple[np.ndarray, ...]:
            return _scores(q if w is None else w.apply(q), space)

        null = score(unrelated)[2]
        thr = float(np.quantile(null, 1 - args.rate))
        row: dict[str, Any] = {"score": name, "threshold": round(thr, 4)}
        caught_edited = []
        for kind in kinds:
            top, _, cal = score(queries[kind])
            right = top == test_rows
            caught = right & (cal >= thr)
            row[f"{kind} top1"] = round(float(right.mean()), 3)
            row[f"{kind} caught"] = round(float(caught.mean()), 3)
            if kind != "composed":
                caught_edited.append(caught.mean())
        row["edited caught"] = round(float(np.mean(caught_edited)), 3)
        if w is not None and name.startswith("whitened 256d") and str(args.pairs) in name:
            # fused: mean of the raw and the whitened calibrated scores, one threshold
            def fused(q: np.ndarray, w: Any = w, space: np.ndarray = space) -> tuple[Any, Any]:
                _, _, cal_r = _scores(q, indexed)
                top_w, _, cal_w = _scores(w.apply(q), space)
                return top_w, (cal_r + cal_w) / 2

            null_f = fused(unrelated)[1]
            thr_f = float(np.quantile(null_f, 1 - args.rate))
            frow: dict[str, Any] = {"score": "fused raw + " + name, "threshold": round(thr_f, 4)}
            ce = []
            for kind in kinds:
                top, cal = fused(queries[kind])
                right = top == test_rows
                frow[f"{kind} top1"] = round(float(right.mean()), 3)
                frow[f"{kind} caught"] = round(float((right & (cal >= thr_f)).mean()), 3)
                if kind != "composed":
                    ce.append((right & (cal >= thr_f)).mean())
            frow["edited caught"] = round(float(np.mean(ce)), 3)
            rows_out.append(frow)
        rows_out.append(row)
        if w is None:
            base_caught = row["edited caught"]
    for row in rows_out:
        row["edited caught vs raw"] = round(
            row["edited caught"] / max(base_caught or 1e-9, 1e-9), 3
        )

    print(
        f"OpenMoji index {index.count} images; {args.pairs} training copies "
        f"({fit_s:.0f} s to make and embed, or cached); {len(test_rows)} sources x "
        f"{len(kinds)} edits; {len(unrelated)} unrelated held-out emoji; threshold at "
        f"{args.rate:.0%} measured false alarms\n"
    )
    cols = ["edited caught", "edited caught vs raw", *[f"{k} caught" for k in kinds],
            "composed top1", "crop70 top1"]  # fmt: skip
    print("| score | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for row in rows_out:
        print(f"| {row['score']} | " + " | ".join(str(row[c]) for c in cols) + " |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"args": vars(args), "rows": rows_out}, indent=2) + "\n", encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
