"""app.py: navigation, the sidebar index picker and card, the licence line; every page
opens under the navigation without an exception."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lib.defaults import DEFAULT_INDEX
from lib.index import is_index

PAGES = {
    "pages/search.py": "Search",
    "pages/distributions.py": "Distributions",
    "pages/generate.py": "Generate",
    "pages/map.py": "Map",
    "pages/duplicates.py": "Duplicates",
    "pages/benchmark.py": "Benchmark",
    "pages/indexes.py": "Indexes",
}


@pytest.fixture
def app() -> AppTest:
    if not is_index(DEFAULT_INDEX):
        pytest.skip("default index not built: run make setup")
    return AppTest.from_file("../app.py", default_timeout=120).run()


def test_sidebar_shows_the_default_index_card_and_attribution(app: AppTest) -> None:
    assert not app.exception
    picker = app.sidebar.selectbox(key="index_path")
    assert picker.value == str(DEFAULT_INDEX)
    card = " ".join(m.value for m in app.sidebar.markdown)
    assert "embedder `sscd`" in card and "images" in card
    assert "CC BY-SA 4.0" in " ".join(c.value for c in app.sidebar.caption)
    assert "Search" in app.header[0].value  # the default page


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_opens_under_the_navigation(app: AppTest, page: str) -> None:
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert PAGES[page] in app.header[0].value
