"""Embedder registry: shapes, norms, preprocessing, and clear failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.embedders import EmbedderUnavailable, Preprocessing, available_embedders, create_embedder
from tests.synthetic import scene


@pytest.mark.parametrize("name", ["sscd", "sscd-distilled", "pixels"])
def test_embedders_return_unit_float32_rows(name: str) -> None:
    embedder = create_embedder(name)
    images = [scene(1), scene(2, (90, 200)), scene(3, (300, 100))]
    vectors = embedder.embed_images(images)
    assert vectors.shape == (3, embedder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("name", ["sscd", "sscd-distilled"])
def test_sscd_ranks_an_edited_copy_above_other_images(name: str) -> None:
    embedder = create_embedder(name)
    original = scene(10, (240, 180))
    copy = original.crop((20, 10, 220, 170)).resize((300, 240))
    others = [scene(s, (240, 180)) for s in range(11, 16)]
    vectors = embedder.embed_images([original, copy, *others])
    sims = vectors[1] @ vectors.T
    assert sims[0] > 0.7
    assert sims[0] > sims[2:].max() + 0.1


def test_batching_does_not_change_vectors() -> None:
    embedder = create_embedder("sscd-distilled")
    images = [scene(s) for s in range(5)]
    together = embedder.embed_images(images, batch_size=5)
    one_by_one = np.concatenate([embedder.embed_images([im]) for im in images])
    np.testing.assert_allclose(together, one_by_one, atol=1e-4)


def test_short_side_preprocessing_keeps_aspect_and_buckets() -> None:
    pre = Preprocessing(size=288)
    assert pre.target_size(640, 480) == (384, 288)
    assert pre.target_size(480, 640) == (288, 384)
    assert pre.target_size(1000, 1000) == (288, 288)
    assert pre.target_size(5000, 500) == (576, 288)  # capped at 2:1, centre-cropped
    resized = pre.resize(Image.new("RGB", (5000, 500)))
    assert resized.size == (576, 288)


def test_unknown_embedder_lists_the_choices() -> None:
    with pytest.raises(EmbedderUnavailable, match="sscd-distilled"):
        create_embedder("clip")
    assert "sscd" in available_embedders()


def test_timm_without_weights_fails_fast_with_a_clear_message() -> None:
    with pytest.raises(EmbedderUnavailable, match="local weights file"):
        create_embedder("timm:test_resnet")
    with pytest.raises(EmbedderUnavailable, match="not found"):
        create_embedder("timm:test_resnet", weights="/nonexistent/weights.pth")


def test_timm_loads_local_weights_only(tmp_path: Path) -> None:
    import timm
    import torch

    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    weights = tmp_path / "test_resnet.pth"
    torch.save(model.state_dict(), weights)
    embedder = create_embedder("timm:test_resnet", weights=str(weights))
    vectors = embedder.embed_images([scene(1), scene(2)])
    assert vectors.shape == (2, embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert embedder.config.weights.startswith(str(weights))
    with pytest.raises(EmbedderUnavailable, match="unknown timm model"):
        create_embedder("timm:not_a_model_name", weights=str(weights))
