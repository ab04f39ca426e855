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


def test_a_pair_is_drawn_at_one_height_whatever_the_shapes() -> None:
    """Duplicates and Distributions drew a tall and a wide picture at very different sizes."""
    from PIL import Image

    from lib.compare import pair_strip

    tall, wide = Image.new("RGB", (30, 300), "red"), Image.new("RGB", (400, 40), "blue")
    strip = pair_strip(tall, wide, 100)
    assert strip.height == 100 and strip.width == 10 + 8 + 1000
    assert strip.getpixel((5, 50)) == (255, 0, 0) and strip.getpixel((500, 50)) == (0, 0, 255)
    assert pair_strip(None, wide, 100).size == (100 + 8 + 1000, 100)  # a grey box for none
