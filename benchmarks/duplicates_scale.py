"""Near-duplicates at scale: the kNN graph (lib.duplicates) against the range search it
replaced, on embedding-like vectors with planted near-duplicate pairs.

For each size n: ``n`` vectors from :func:`benchmarks._synthetic.embedding_like` (a
low-rank Gaussian mixture, 512-d, L2-normalised), 1% of them copied at a cosine drawn
uniformly from 0.90..0.99 (:func:`plant_near_duplicates`), written as a ``.npy`` with a
``.parquet`` and imported as a real index (``lib.index.importer.import_embeddings``, which
also calibrates it). Then, in the same run on the same index:

  knn     lib.duplicates.find_duplicates(index, 0.85, k=16) up to its last progress call:
          the pairs, each row's 17 nearest through index.search_vectors, 4,096 rows at a
          time (approximate with exact re-ranking above 200,000 vectors, format 2)
  cluster the same call to its end: the pairs plus the clusters
  range   the previous implementation: FAISS range search at 0.85 over an IndexFlatIP of
          the same vectors, 1,024 rows at a time (FAISS's default threads); with
          --range-rows N only the first N rows are queried and the time is scaled by n/N

and reports the share of planted pairs each finds (recall), the pairs found, the seconds,
and the ratio range / knn. Absolute times on a shared 2-core machine are noise; read the
ratio measured in the same run.

    .venv/bin/python benchmarks/duplicates_scale.py [--sizes 20000,100000] [--k 16]
    .venv/bin/python benchmarks/duplicates_scale.py --sizes 300000 --range-rows 10000 \
        --out benchmarks/results/duplicates_scale_300k.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._synthetic import embedding_like, plant_near_duplicates
from lib.duplicates import DuplicatePairs, find_duplicates
from lib.index.importer import import_embeddings

THRESHOLD = 0.85
PLANTED_SHARE = 0.01
RESULTS = Path(__file__).resolve().parent / "results" / "duplicates_scale.json"


def range_pairs(
    vectors: np.ndarray, threshold: float, query_rows: int, chunk: int = 1024
) -> DuplicatePairs:
    """The previous lib.duplicates.duplicate_pairs: FAISS range search of every row (of the
    first ``query_rows``: its time grows linearly with them)."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    a, b, s = [], [], []
    for start in range(0, query_rows, chunk):
        rows = np.arange(start, min(query_rows, start + chunk))
        lims, sims, ids = flat.range_search(vectors[rows], float(threshold) - 1e-6)
        owner = np.repeat(rows, np.diff(lims).astype(np.int64))
        keep = ids > owner
        a.append(owner[keep])
        b.append(ids[keep])
        s.append(sims[keep])
    return DuplicatePairs(np.concatenate(a), np.concatenate(b), np.concatenate(s))


def recall(found: DuplicatePairs, planted: np.ndarray, n: int) -> float:
    keys = set((found.a * n + found.b).tolist())
    return float(np.mean([int(a) * n + int(b) in keys for a, b in planted]))


def run(n: int, k: int, seed: int, folder: Path, range_rows: int | None) -> dict[str, Any]:
    n_pairs = int(n * PLANTED_SHARE)
    vectors, planted = plant_near_duplicates(
        embedding_like(n - n_pairs, seed=seed), n_pairs, seed=seed
    )
    np.save(folder / "vectors.npy", vectors)
    pd.DataFrame({"image_path": [f"/synthetic/{i:07d}.png" for i in range(n)]}).to_parquet(
        folder / "vectors.parquet"
    )
    started = time.perf_counter()
    index = import_embeddings(folder, folder / "idx", embedder="sscd-distilled").index
    import_s = time.perf_counter() - started
    print(f"n={n:,}: imported in {import_s:.1f} s", flush=True)

    started = time.perf_counter()
    pairs_done = [started]

    def note(done: int, total: int, message: str = "") -> None:
        pairs_done[0] = time.perf_counter()  # the last call ends the pairs stage

    report = find_duplicates(index, THRESHOLD, k=k, progress=note)
    cluster_s = time.perf_counter() - started
    knn_s = pairs_done[0] - started
    knn = report.pairs
    print(f"  knn   {knn_s:7.1f} s  {len(knn):,} pairs", flush=True)
    print(f"  find_duplicates {cluster_s:7.1f} s  {len(report.clusters):,} clusters", flush=True)
    rows = n if range_rows is None else min(n, range_rows)
    started = time.perf_counter()
    old = range_pairs(vectors, THRESHOLD, rows)
    range_s = (time.perf_counter() - started) * n / rows
    print(f"  range {range_s:7.1f} s  {len(old):,} pairs (from {rows:,} query rows)", flush=True)
    in_sample = planted[planted[:, 0] < rows]
    sample = knn.a < rows
    knn_in_sample = DuplicatePairs(knn.a[sample], knn.b[sample], knn.similarity[sample])
    return {
        "n": n,
        "planted_pairs": n_pairs,
        "threshold": THRESHOLD,
        "k": k,
        "import_s": import_s,
        "search": type(getattr(index, "faiss", None)).__name__,
        "knn_s": knn_s,
        "knn_pairs": len(knn),
        "knn_recall": recall(knn, planted, n),
        "range_query_rows": rows,
        "range_s": range_s,
        "range_s_estimated": rows < n,
        "range_pairs": len(old),
        "range_recall": recall(old, in_sample, n),
        "range_over_knn_time": range_s / knn_s,
        "knn_share_of_all_pairs": recall(knn_in_sample, np.stack([old.a, old.b], axis=1), n)
        if len(old)
        else 1.0,
        "find_duplicates_s": cluster_s,
        "clusters": len(report.clusters),
        "removable": report.n_removable,
        "chained_clusters": report.n_chained,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--range-rows",
        type=int,
        default=None,
        help="run the range-search baseline on the first N rows as queries (against all) "
        "and scale its time by n/N: the full baseline of 1M rows takes hours",
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    import faiss

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="dup-scale-") as tmp:
            rows.append(run(n, args.k, args.seed, Path(tmp), args.range_rows))
    out = {
        "faiss": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_end": list(os.getloadavg()),
        "sizes": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
