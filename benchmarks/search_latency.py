"""Query latency of the default index (faiss.IndexFlatIP, 512-d, L2-normalised float32).

For 10k, 100k and 1M seeded random vectors (normal, then L2-normalised) it times, in the
same run and interleaved query by query (rotating which goes first), on the very same
memory: FAISS with the library defaults, FAISS on one OpenMP thread, FAISS
with BLAS for batches (``distance_compute_blas_threshold = 20``: faiss 1.15's default of
128,000 sends a batch of 64 down the one-query-at-a-time path), ``replica`` (what
lib.index runs: lib.index.flat.search_flat, one thread below 20 queries and BLAS from
20 on), and the baseline, a numpy
brute force (matmul, argpartition, sort of the top k):

  single  one query at a time, k=32 (what lib.search asks for): p50 and p99 in ms;
  batch   64 queries per call: queries/s.

Queries are stored vectors plus noise, so each has a true near neighbour; FAISS's
top-k ids are checked against numpy's. The figures to quote are the ratios to numpy
measured in the same run, since absolute speeds on a shared 2-core machine are noise.
The 1M index takes 2 GB (FAISS's storage; numpy reads it in place, no copy).

    .venv/bin/python benchmarks/search_latency.py [--quick]   # --quick skips 1M
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.calibration import NEIGHBOURS
from lib.index.flat import search_flat

FAISS_DEFAULT_BLAS_THRESHOLD = 128_000  # faiss 1.15's distance_compute_blas_threshold

DIM = 512
BATCH = 64
CHUNK = 100_000
RESULTS = Path(__file__).resolve().parent / "results" / "search_latency.json"


def normalised(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build(n: int, seed: int) -> tuple[Any, np.ndarray]:
    """A filled IndexFlatIP and a zero-copy (n, DIM) view of its vectors."""
    import faiss

    rng = np.random.default_rng(seed)
    index = faiss.IndexFlatIP(DIM)
    for start in range(0, n, CHUNK):
        index.add(normalised(rng, min(CHUNK, n - start)))
    view = faiss.rev_swig_ptr(index.get_xb(), n * DIM).reshape(n, DIM)
    return index, view


def numpy_search(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product, best first: (nq, k) int64."""
    sims = queries @ base.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def make_queries(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(len(base), size=n, replace=False)
    q = base[rows] + 0.5 * normalised(rng, n)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def ms(x: list[float], q: float) -> float:
    return float(np.percentile(x, q) * 1e3)


def searchers(index: Any, base: np.ndarray, k: int) -> dict[str, Callable[[np.ndarray], Any]]:
    """Name -> search(queries) -> ids. "faiss" is FAISS with its defaults (OpenMP on every
    core; faiss 1.15 uses BLAS only from 128,000 queries per call on); "faiss_1thread" one
    OpenMP thread; "faiss_blas" BLAS from 20 queries on (the old default); "replica"
    lib.index.flat.search_flat, which lib.index runs; "numpy" the baseline."""
    import faiss

    threads = faiss.omp_get_max_threads()

    def faiss_with(n_threads: int, threshold: int) -> Callable[[np.ndarray], Any]:
        def run(q: np.ndarray) -> Any:
            before = faiss.cvar.distance_compute_blas_threshold
            faiss.omp_set_num_threads(n_threads)
            faiss.cvar.distance_compute_blas_threshold = threshold
            try:
                return index.search(q, k)[1]
            finally:
                faiss.omp_set_num_threads(threads)
                faiss.cvar.distance_compute_blas_threshold = before

        return run

    return {
        "faiss": faiss_with(threads, FAISS_DEFAULT_BLAS_THRESHOLD),
        "faiss_1thread": faiss_with(1, FAISS_DEFAULT_BLAS_THRESHOLD),
        "faiss_blas": faiss_with(threads, 20),
        "replica": lambda q: search_flat(index, q, k)[1],
        "numpy": lambda q: numpy_search(base, q, k),
    }


SINGLE = ("faiss", "faiss_1thread", "replica", "numpy")  # faiss_blas: as faiss for one


def measure(n: int, n_queries: int, n_batches: int, k: int, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    index, base = build(n, seed)
    built_s = time.perf_counter() - start
    queries = make_queries(base, max(n_queries, BATCH * n_batches), seed)
    methods = searchers(index, base, k)
    names = list(methods)
    for run in methods.values():  # warm caches and thread pools
        run(queries[:BATCH])
    single: dict[str, list[float]] = {m: [] for m in SINGLE}
    batch: dict[str, float] = dict.fromkeys(names, 0.0)
    agree = 0
    for i in range(n_queries):
        q = queries[i : i + 1]
        ids = {}
        for m in SINGLE[i % 4 :] + SINGLE[: i % 4]:  # rotate: no method always goes first
            t0 = time.perf_counter()
            ids[m] = methods[m](q)
            single[m].append(time.perf_counter() - t0)
        agree += int(set(ids["faiss"][0].tolist()) == set(ids["numpy"][0].tolist()))
    for b in range(n_batches):
        qb = queries[b * BATCH : (b + 1) * BATCH]
        for m in names[b % 5 :] + names[: b % 5]:
            t0 = time.perf_counter()
            methods[m](qb)
            batch[m] += time.perf_counter() - t0
    result: dict[str, Any] = {
        "n": n,
        "build_s": built_s,
        "queries": n_queries,
        "batches": n_batches,
        "topk_agreement": agree / n_queries,
    }
    for m in names:
        if m in single:
            result[f"{m}_p50_ms"] = ms(single[m], 50)
            result[f"{m}_p99_ms"] = ms(single[m], 99)
            result[f"numpy_p50_over_{m}_p50"] = ms(single["numpy"], 50) / result[f"{m}_p50_ms"]
        result[f"{m}_batch_qps"] = n_batches * BATCH / batch[m]
        result[f"{m}_over_numpy_batch_qps"] = batch["numpy"] / batch[m]
    del methods, index, base
    return result


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip 1M")
    parser.add_argument("--queries", type=int, default=200, help="single queries per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    k = NEIGHBOURS
    rows = []
    for n in sizes:
        # 1M: ~0.2 s per single query per method, so fewer of them keep the run to minutes
        n_queries = args.queries if n < 1_000_000 else min(args.queries, 100)
        n_batches = 20 if n < 1_000_000 else 3
        rows.append(measure(n, n_queries, n_batches, k, args.seed))
        r = rows[-1]
        print(
            f"n={n}: p50 ms faiss {r['faiss_p50_ms']:.2f}, 1 thread "
            f"{r['faiss_1thread_p50_ms']:.2f}, replica {r['replica_p50_ms']:.2f}, "
            f"numpy {r['numpy_p50_ms']:.2f}",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"\nIndexFlatIP, d={DIM}, k={k}, faiss {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} OpenMP threads, {os.cpu_count()} cores"
    )
    print(
        "| vectors | method | p50 ms | p99 ms | numpy p50 / this p50 "
        f"| batch-{BATCH} queries/s | this / numpy (batch) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        for m in ("faiss", "faiss_1thread", "faiss_blas", "replica", "numpy"):
            if f"{m}_p50_ms" in r:
                p50, p99 = f"{r[f'{m}_p50_ms']:.2f}", f"{r[f'{m}_p99_ms']:.2f}"
                speed = f"{r[f'numpy_p50_over_{m}_p50']:.2f}"
            else:
                p50 = p99 = speed = "(as faiss)"
            print(
                f"| {r['n']:,} | {m} | {p50} | {p99} | {speed} | {r[f'{m}_batch_qps']:.0f} "
                f"| {r[f'{m}_over_numpy_batch_qps']:.2f} |"
            )
    bad = [r["n"] for r in rows if r["topk_agreement"] < 0.99]
    if bad:
        print(f"WARNING: FAISS and numpy top-{k} sets differ for n={bad}")
    result = {
        "index": "IndexFlatIP",
        "dim": DIM,
        "k": k,
        "batch": BATCH,
        "faiss": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_end": os.getloadavg(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sizes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
