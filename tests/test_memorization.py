"""The memorization check (a model alone, without its training set): planted twins among
distinct pictures are grouped, the thresholds come from different real pictures with
their measured false-alarm rate, and the agreement with a training-set verdict counts
precision and recall."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib.diffusion.memorization import (
    agreement,
    check_memorization,
    pixels,
    tiled_distance,
)
from lib.embedders import create_embedder
from tests.synthetic import scene


def noisy(image: Image.Image, seed: int) -> Image.Image:
    """The same picture from another seed: a little noise, as two samples of one
    memorized training image differ."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(image, np.float32) + rng.normal(0, 6, (image.height, image.width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_tiled_distance_is_the_worst_tile() -> None:
    a = np.zeros((1, 32, 32, 3), np.float32)
    b = a.copy()
    b[0, :8, :8] = 1.0  # one tile of 16 changed completely
    assert tiled_distance(a, b)[0, 0] == pytest.approx(1.0)
    assert tiled_distance(a, a)[0, 0] == 0.0
    assert pixels([Image.new("RGB", (64, 48), "white")]).shape == (1, 32, 32, 3)


def test_planted_twins_are_grouped_and_distinct_pictures_are_not() -> None:
    embedder = create_embedder("sscd-distilled")
    generations = [noisy(scene(1, (32, 32)), s) for s in range(3)]
    generations += [noisy(scene(2, (32, 32)), s) for s in range(2)]
    generations += [scene(100 + i, (32, 32)) for i in range(15)]
    heldout = [scene(500 + i, (32, 32)) for i in range(30)]
    report = check_memorization(generations, embedder, heldout)
    assert report.groups == [[0, 1, 2], [3, 4]]
    assert report.flagged == [True] * 5 + [False] * 15
    assert report.heldout_pairs == 30 * 29 // 2
    assert 0.0 <= report.false_alarm_rate <= 0.01
    low, high = report.false_alarm_interval
    assert low <= report.false_alarm_rate <= high
    assert "5 of 20 generations" in report.sentence()
    with pytest.raises(ValueError, match="at least 20 held-out"):
        check_memorization(generations, embedder, heldout[:10])


def test_agreement_with_the_training_set_verdict() -> None:
    flags = [True, True, False, False, True]
    verdicts = ["copy", "none", "copy", "none", "copy"]
    assert agreement(flags, verdicts) == {
        "flagged": 3,
        "copies": 3,
        "both": 2,
        "precision": round(2 / 3, 4),
        "recall": round(2 / 3, 4),
    }
    assert agreement([False], ["none"])["precision"] is None
