"""Replica's Streamlit app: navigation, the sidebar index picker, the index card and the
licence line. Every page is UI only over lib/."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lib.app_config import available_indexes, load_config
from lib.datasets import DATASETS
from lib.st_cache import cached_index, manifest_mtime
from pages.common import INDEX_KEY, apply_pending_index

st.set_page_config(page_title="Replica", page_icon="🔎", layout="wide")

PAGES = {
    "Check images": [
        st.Page("pages/search.py", title="Search", icon="🔎", default=True),
        st.Page("pages/distributions.py", title="Distributions", icon="📊"),
    ],
    "Explore the training set": [
        st.Page("pages/map.py", title="Map", icon="🗺️"),
        st.Page("pages/duplicates.py", title="Duplicates", icon="👯"),
    ],
    "Manage": [
        st.Page("pages/indexes.py", title="Indexes", icon="🗂️"),
    ],
}


def _attribution(index_sources: list[str]) -> str:
    """The licence line for the data behind the index."""
    lines = []
    text = " ".join(index_sources).lower()
    for key, info in DATASETS.items():
        if key.split("-")[0] in text:
            lines.append(f"{info.title}: {info.attribution}")
    return "  \n".join(lines) or "Data: your own images (their licences apply)."


def sidebar() -> None:
    """Index picker and index card."""
    config = load_config()
    apply_pending_index()
    indexes = [str(p) for p in available_indexes(config)]
    st.sidebar.markdown("### Index")
    if not indexes:
        st.sidebar.warning("No index found. Build one on the Indexes page or run `make setup`.")
        st.session_state[INDEX_KEY] = None
        return
    current = st.session_state.get(INDEX_KEY)
    if current not in indexes:
        st.session_state[INDEX_KEY] = indexes[0]
    st.sidebar.selectbox(
        "Training-set index",
        indexes,
        key=INDEX_KEY,
        format_func=lambda p: Path(p).name,
        label_visibility="collapsed",
    )
    path = st.session_state[INDEX_KEY]
    try:
        index = cached_index(path, manifest_mtime(path))
    except Exception as exc:
        st.sidebar.error(f"Cannot open {Path(path).name}: {exc}")
        return
    m = index.manifest
    st.sidebar.markdown(
        f"**{index.count:,}** images · embedder `{m.embedder_name}`  \n"
        f"created {m.created[:10]} · {len(m.skipped)} skipped at build"
    )
    st.sidebar.caption(_attribution(m.sources))


st.session_state.setdefault(INDEX_KEY, None)
sidebar()
st.navigation(PAGES).run()
