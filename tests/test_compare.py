"""Comparison pictures: sizes, blends and differences on real images."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lib.compare import aligned_pair, blend, blink_gif, difference, fit_height
from tests.synthetic import scene


def test_fit_height_keeps_aspect() -> None:
    assert fit_height(scene(1, (300, 100)), 60).size == (180, 60)


def test_aligned_blend_and_difference() -> None:
    a, b = scene(1, (200, 100)), scene(2, (100, 200))
    qa, qb = aligned_pair(a, b, size=128)
    assert qa.size == qb.size == (128, 128)
    assert np.array_equal(np.asarray(blend(a, b, 0.0, 128)), np.asarray(qa))
    assert np.array_equal(np.asarray(blend(a, b, 1.0, 128)), np.asarray(qb))
    assert np.asarray(difference(a, a, 128)).max() == 0
    assert np.asarray(difference(a, b, 128)).max() > 100


def test_blink_gif_has_two_frames() -> None:
    gif = Image.open(io.BytesIO(blink_gif(scene(1), scene(2), size=64)))
    assert gif.n_frames == 2 and gif.size == (64, 64)
