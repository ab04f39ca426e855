"""Benchmark page (AppTest): a saved result shows its table, curves and hardest failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.bench.evaluate import evaluate
from lib.bench.generator import generate_benchmark
from tests.synthetic import write_scenes


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench_page")
    write_scenes(root / "images", range(16))
    generate_benchmark(
        root / "images",
        root / "bench",
        n_sources=6,
        n_distractors=4,
        kinds=["crop", "flip", "segmix"],
        seed=2,
    )
    out = root / "result"
    evaluate(root / "bench", ["pixels"], top_k=5).write(out)
    return out


def test_saved_result_renders_table_curves_and_failures(result_dir: Path) -> None:
    at = AppTest.from_file("../pages/benchmark.py", default_timeout=120)
    at.session_state["bench_result_dir"] = str(result_dir)
    at.run()
    assert not at.exception, at.exception
    tables = [m.value for m in at.markdown if "| embedder" in m.value]
    assert tables and "pixels" in tables[0]
    assert len(at.get("image")) >= 1
    assert at.selectbox(key="bench_failures_embedder").value == "pixels"
    summary = [c.value for c in at.caption if "copies whose source" in c.value]
    assert summary, "the failure counts are stated"


def test_plain_words_and_a_too_small_benchmark_says_so(result_dir: Path) -> None:
    at = AppTest.from_file("../pages/benchmark.py", default_timeout=120)
    at.session_state["bench_result_dir"] = str(result_dir)
    at.run()
    assert not at.exception, at.exception
    glossary = " ".join(m.value for m in at.markdown)
    for term in ("**uAP**", "**mAP**", "**recall@P90**", "**calibrated score**"):
        assert term in glossary
    # 6 sources: too few to measure the thresholds, and the page says what that means
    warning = " ".join(w.value for w in at.warning)
    assert "`pixels`" in warning and "too few to calibrate" in warning
    assert "default thresholds" in warning
    cards = [m.value for m in at.markdown if "top-1 raw" in m.value]
    assert cards and all("-badge[" in c and "(copy at ≥ " in c for c in cards)
