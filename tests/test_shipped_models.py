"""The diffusion models shipped in data/models/: small, described by their manifests,
trained on nested OpenMoji subsets that exist in this checkout, and able to generate."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from lib.diffusion.data import openmoji_subset
from lib.diffusion.pipelines import DEFAULT_MODELS_ROOT, bundled_models

MODELS = bundled_models(DEFAULT_MODELS_ROOT)
TRAIN_DIR = Path(__file__).resolve().parents[1] / "data" / "openmoji" / "train"


def test_at_least_two_models_of_clearly_different_training_size() -> None:
    sizes = sorted(m.manifest.n_train for m in MODELS)
    assert len(sizes) >= 2, f"expected two bundled models under {DEFAULT_MODELS_ROOT}"
    assert sizes[-1] >= 5 * sizes[0]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_manifest_matches_the_weights_and_the_training_images(model) -> None:
    mf = model.manifest
    weights = model.path / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 8 * 2**20  # fp16, a few MB
    assert len(mf.train_ids) == len(mf.train_files) == mf.n_train
    assert mf.dataset == "openmoji" and re.search(r"-m lib (-q )?train ", mf.command)
    assert mf.steps == mf.config["steps"] and mf.wall_time_s > 0
    paths = mf.train_paths()
    assert all(p.is_file() for p in paths), "training images missing: run `make setup`"
    # the subset is the project's seeded one, so the study can rebuild it
    expected = openmoji_subset(TRAIN_DIR, mf.n_train, seed=0)
    assert [p.name for p in paths] == [p.name for p in expected]


def test_subsets_are_nested() -> None:
    ordered = sorted(MODELS, key=lambda m: m.manifest.n_train)
    for small, large in itertools.pairwise(ordered):
        assert set(small.manifest.train_ids) <= set(large.manifest.train_ids)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_generates_seeded_images(model) -> None:
    from lib.diffusion.sample import sample

    first = sample(model.path, 2, steps=4, seed=7)
    again = sample(model.path, 2, steps=4, seed=7)
    size = model.manifest.image_size
    assert [im.size for im in first] == [(size, size)] * 2
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(first[0]).std() > 5  # not a flat image
