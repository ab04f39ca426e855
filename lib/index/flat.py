"""Exact FAISS search with thread and BLAS settings chosen per call size."""

from __future__ import annotations

from typing import Any

import numpy as np

BLAS_FROM_QUERIES = 20
"""Batches of this many queries or more go through BLAS (one matrix product). faiss 1.15
only does so from 128,000 on; at 20 a batch of 64 runs about 10x faster (measured by
benchmarks/search_latency.py). Fewer queries run on one OpenMP thread: for a single
query the thread start-up costs more than it saves (3.0 ms against 12.5 ms at 10k)."""


def search_flat(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` with the thread and BLAS settings above for this call's size.

    Both settings are put back afterwards, so other FAISS calls in the process (the map's
    neighbour graph) keep the library's defaults. ``omp_set_num_threads`` changes only the
    calling thread's OpenMP setting. The BLAS threshold is process-wide: a search running
    in another thread meanwhile may take the BLAS path too, which finds the same neighbours
    with similarities that differ in the last float bits.
    """
    import faiss

    if len(queries) >= BLAS_FROM_QUERIES:
        before = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES
        try:
            return index.search(queries, k)
        finally:
            faiss.cvar.distance_compute_blas_threshold = before
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(threads)
