"""Distributions page (AppTest): a demo batch is scanned and the paper's figures shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.index import build_index
from tests.synthetic import write_scenes

PAGE = "../pages/distributions.py"


@pytest.fixture
def small_index(tmp_path: Path) -> Path:
    write_scenes(tmp_path / "train", range(40))
    return build_index(tmp_path / "train", tmp_path / "idx", embedder="sscd-distilled").index.path


def test_demo_batch_shows_rates_histogram_and_gallery(
    small_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "replica.toml"
    config.write_text(f'upload_root = "{tmp_path / "uploads"}"\n')
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(small_index)
    at.run()
    at.text_input(key="dist_reference").set_value("").run()
    at.radio(key="dist_source").set_value("a demo batch").run()
    at.button(key="dist_demo").click().run()
    at.button(key="dist_run").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    # the demo batch holds 20 edited training images and no unseen ones (no held-out folder)
    assert metrics["Generations scanned"] == "20"
    assert float(metrics["Replication rate (copies)"].rstrip("%")) >= 50.0
    assert at.get("plotly_chart")
    table = at.dataframe[0].value
    assert list(table["set"]) == ["generated vs training", "training vs training"]
    gallery = [m.value for m in at.markdown if m.value.startswith("**COPY**")]
    assert gallery, "the most replicated generations are shown with their verdict"


def test_folder_outside_allowed_roots_is_refused(small_index: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(small_index)
    at.run()
    at.text_input(key="dist_folder").set_value("/etc").run()
    assert not at.exception
    assert "outside the allowed folders" in at.error[0].value
