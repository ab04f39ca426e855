"""Search page (AppTest): samples and a demo copy produce matches, verdicts, downloads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.index import build_index
from lib.verdict.sensitivity import learn_sensitivity
from tests.synthetic import write_scenes

PAGE = "../pages/search.py"


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search_page")
    write_scenes(root / "train", range(30))
    return build_index(root / "train", root / "idx", embedder="sscd-distilled").index.path


def test_search_page_without_queries_invites_an_upload(small_index: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(small_index)
    at.run()
    assert not at.exception
    assert "Upload images" in at.info[0].value
    assert at.slider(key="search_k").value == 5


def test_demo_copy_is_found_with_scores_and_a_verdict(small_index: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(small_index)
    at.run()
    at.slider(key="search_k").set_value(3).run()
    at.button(key="search_demo").click().run()
    assert not at.exception
    headings = [m.value for m in at.markdown if m.value.startswith("####")]
    assert len(headings) == 1 and "of “training #" in headings[0], "headed by what it is"
    assert any(badge in headings[0] for badge in ("COPY", "SIMILAR", "NO CLEAR MATCH"))
    source_row = int(re.search(r"training #(\d+)", headings[0]).group(1))  # type: ignore[union-attr]
    assert "made from" in at.success[0].value, "the card says the top match is the source"
    expected = f"img_{source_row:04d}.png"
    match_cards = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert len(match_cards) == 3
    assert expected in match_cards[0], "the edited copy's source must be the top match"
    assert "raw" in match_cards[0] and "cal" in match_cards[0]
    explanation = next(c.value for c in at.caption if "Calibrated score" in c.value)
    assert "Calibrated score" in explanation and "raw cosine" in explanation
    assert "unrelated images" in explanation and "% score lower" in explanation
    # the detail view compares the chosen pair in every mode
    for mode in ("slider", "blink", "difference", "regions"):
        at.radio(key="search_view").set_value(mode).run()
        assert not at.exception
    assert at.get("download_button")
    assert at.get("image"), "the pair is shown as a picture"


def test_operating_point_changes_the_copy_threshold(small_index: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(small_index)
    at.run()
    at.button(key="search_demo").click().run()
    strict_caption = next(c.value for c in at.caption if "copy at ≥" in c.value)
    at.selectbox(key="search_operating_point").set_value("very sensitive (10%)").run()
    sensitive_caption = next(c.value for c in at.caption if "copy at ≥" in c.value)

    def threshold(text: str) -> float:
        return float(text.split("copy at ≥ ")[1].split(",")[0])

    assert threshold(sensitive_caption) < threshold(strict_caption)


def test_the_page_states_how_often_the_check_misses_copies(
    small_index: Path, tmp_path: Path
) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(small_index)
    at.run()
    assert any("has not been measured yet" in c.value for c in at.caption)
    learned = tmp_path / "learned"
    shutil.copytree(small_index, learned)
    measured = learn_sensitivity(learned).calibration
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(learned)
    at.run()
    assert not at.exception
    sensitivity = measured.with_false_alarm_rate(0.02).measured_sensitivity
    assert sensitivity is not None
    stated = next(c.value for c in at.caption if "in 100 unrelated images" in c.value)
    assert f"about {sensitivity.edited.in_100()} in 100 edited copies" in stated
    table = at.dataframe[0].value
    assert "pasted into another picture" in set(table["copies that were"])
    at.button(key="search_demo").click().run()
    explanation = next(c.value for c in at.caption if "Calibrated score" in c.value)
    assert "in 100" in explanation, "the verdict's own sentence repeats the error rates"


def test_region_matching_toggle_reranks_and_marks_matches(small_index: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(small_index)
    at.run()
    at.toggle(key="search_regions").set_value(True).run()
    at.button(key="search_demo").click().run()
    assert not at.exception
    cards = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert len(cards) == 5
    assert all("region" in card for card in cards), "re-ranked matches show their region score"


def _png(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_one_pixel_image_gets_no_verdict_and_a_lone_bad_upload_offers_nothing(
    small_index: Path,
) -> None:
    """A 1 x 1 image carries no picture to compare: it is not judged. When the only
    upload cannot be searched the page says so, without 'the other images are shown' and
    without downloads of empty results."""
    from lib.index import open_index
    from lib.search import search_images

    index = open_index(small_index)
    tiny, fine = search_images(index, [("dot.png", _png((1, 1))), ("ok.png", _png((64, 48)))])
    assert tiny.error is not None and "1 x 1 pixels" in tiny.error and not tiny.matches
    assert fine.error is None and fine.verdict in ("copy", "similar", "none")

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(small_index)
    at.run()
    at.file_uploader(key="search_uploads").upload("dot.png", _png((1, 1)), "image/png")
    at.run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "too small to compare" in warning and "other images" not in warning
    assert not at.get("download_button")
    assert not any("COPY" in m.value or "NO CLEAR MATCH" in m.value for m in at.markdown)
