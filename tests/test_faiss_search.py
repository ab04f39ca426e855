"""search_flat: same answers as a brute force for single queries and batches."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from lib.index.flat import BLAS_FROM_QUERIES, search_flat


@pytest.fixture
def flat_index() -> tuple[faiss.IndexFlatIP, np.ndarray]:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(2000, 64)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(64)
    index.add(base)
    return index, base


@pytest.mark.parametrize("n_queries", [1, BLAS_FROM_QUERIES - 1, BLAS_FROM_QUERIES, 64])
def test_matches_brute_force(flat_index: tuple[faiss.IndexFlatIP, np.ndarray], n_queries: int):
    index, base = flat_index
    queries = base[:n_queries] * 0.9 + base[100 : 100 + n_queries] * 0.1
    sims, ids = search_flat(index, np.ascontiguousarray(queries), 5)
    exact = queries @ base.T
    expected = np.argsort(-exact, axis=1)[:, :5]
    assert ids.shape == (n_queries, 5)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(exact, expected, 1), atol=1e-5)


def test_restores_thread_count_and_blas_threshold(
    flat_index: tuple[faiss.IndexFlatIP, np.ndarray],
):
    index, base = flat_index
    threads = faiss.omp_get_max_threads()
    threshold = faiss.cvar.distance_compute_blas_threshold
    assert threshold != BLAS_FROM_QUERIES  # the library default, untouched by earlier tests
    search_flat(index, base[:1], 3)
    search_flat(index, base[:64], 3)
    assert faiss.omp_get_max_threads() == threads
    assert faiss.cvar.distance_compute_blas_threshold == threshold
