"""The Streamlit entry page renders the index card for the default index."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lib.defaults import DEFAULT_INDEX
from lib.index import is_index


def test_app_shows_the_default_index_card() -> None:
    if not is_index(DEFAULT_INDEX):
        pytest.skip("default index not built: run make setup")
    app = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not app.exception
    assert app.sidebar.selectbox(key="index").value.name == DEFAULT_INDEX.name
    sidebar_text = " ".join(m.value for m in app.sidebar.markdown)
    assert "embedder `sscd`" in sidebar_text
    assert "OpenMoji" in " ".join(c.value for c in app.sidebar.caption)
    assert app.sidebar.slider(key="top_k").value == 5
