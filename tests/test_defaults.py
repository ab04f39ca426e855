"""`make setup` (prepare_default_data) leaves the default index with its map stored, so that
the Map page opens on a picture."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import lib.defaults
from lib.defaults import DEFAULT_INDEX, prepare_default_data
from lib.index import is_index, open_index
from lib.projection import PROJECTION_DIR, load_projection


def test_setup_stores_the_default_index_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not is_index(DEFAULT_INDEX):
        pytest.skip("default index not built: run make setup")
    # a copy of the default index without its map, as a first `make setup` leaves it
    copy = Path(shutil.copytree(DEFAULT_INDEX, tmp_path / "openmoji-sscd"))
    shutil.rmtree(copy / PROJECTION_DIR, ignore_errors=True)
    monkeypatch.setattr(lib.defaults, "DEFAULT_INDEX", copy)
    steps: list[str] = []
    summary = prepare_default_data(progress=lambda done, total, message="": steps.append(message))
    assert summary.startswith("default data ready")
    index = open_index(copy)
    projection = load_projection(index)
    assert projection is not None and projection.n_points == index.count
    assert any("UMAP" in s for s in steps)  # with progress
    # the second time it is loaded, not computed again
    steps.clear()
    prepare_default_data(progress=lambda done, total, message="": steps.append(message))
    assert not any("UMAP" in s for s in steps)
