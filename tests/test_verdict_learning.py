"""What a collection learns at index time: the training edit family and the learned
whitening, on planted vectors whose edit directions are known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib.verdict.learning import TRAINING_EDITS, fit_whitening, training_copy
from tests.synthetic import scene


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Works in 8 clusters that differ in 48 directions and also vary in 16 'nuisance'
    directions; edits push copies far along those 16, towards other works, so raw
    cosine confuses a copy with other works. Whitening learns to discount them."""
    rng = np.random.default_rng(seed)
    d = 64
    centres = rng.normal(size=(8, 48))
    works = np.zeros((n, d))
    works[:, :48] = centres[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, 48))
    works[:, 48:] = rng.normal(size=(n, 16))
    edits = np.zeros((n, d))
    edits[:, 48:] = 3.0 * rng.normal(size=(n, 16))
    originals = _normalise(works + 0.02 * rng.normal(size=(n, d)))
    copies = _normalise(works + edits + 0.05 * rng.normal(size=(n, d)))
    return originals, copies, np.arange(n)


def _top1(queries: np.ndarray, indexed: np.ndarray) -> np.ndarray:
    return np.argmax(queries @ indexed.T, axis=1)


def test_learned_whitening_finds_copies_that_raw_cosine_confuses() -> None:
    originals, copies, rows = _planted(600, seed=0)
    fit, held = rows[:400], rows[400:]
    w = fit_whitening(originals, copies[fit], fit, dim=48)
    raw_right = (_top1(copies[held], originals) == held).mean()
    white_right = (_top1(w.apply(copies[held]), w.apply(originals)) == held).mean()
    assert raw_right < 0.6, f"the planted edits should fool raw cosine ({raw_right:.2f})"
    assert white_right >= 0.98 and white_right > raw_right + 0.05
    out = w.apply(originals)
    assert out.shape == (600, 48) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert w.pairs == 400 and w.dim == 48


def test_fit_whitening_refuses_mismatched_inputs() -> None:
    originals, copies, rows = _planted(10, seed=1)
    with pytest.raises(ValueError, match="do not match"):
        fit_whitening(originals, copies[:, :32], rows)
    with pytest.raises(ValueError, match="one source row per copy"):
        fit_whitening(originals, copies, rows[:5])


def test_training_copies_are_seeded_varied_and_use_the_whole_family() -> None:
    image = scene(3)
    other = scene(4)
    seen: set[str] = set()
    sizes = set()
    for seed in range(60):
        copy, kinds = training_copy(image, np.random.default_rng(seed), other)
        again, kinds_again = training_copy(image, np.random.default_rng(seed), other)
        assert kinds == kinds_again
        assert np.array_equal(np.asarray(copy), np.asarray(again)), "seeded"
        assert copy.mode == "RGB" and 1 <= len(kinds) <= 4
        assert not (copy.size == image.size and np.array_equal(np.asarray(copy), np.asarray(image)))
        seen.update(kinds)
        sizes.add(copy.size)
    assert seen == set(TRAINING_EDITS), f"never drawn: {set(TRAINING_EDITS) - seen}"
    assert len(sizes) > 5  # crops, borders and rotations change the size
    tiny = Image.new("RGB", (3, 2), "white")
    for seed in range(30):  # every edit copes with a tiny image
        training_copy(tiny, np.random.default_rng(seed), tiny)
