"""Replica's Streamlit app: navigation, the sidebar index picker, the index card and the
licence line. Every page is UI only over lib/."""

from __future__ import annotations

import streamlit as st

from pages.case_ui import keep_case_in_address
from pages.common import (
    INDEX_KEY,
    index_at,
    is_calibrated,
    render_sidebar,
    run_guarded,
    threshold_note,
)

st.set_page_config(page_title="Replica", page_icon=":material/image_search:", layout="wide")
# .streamlit/config.toml hides the sidebar navigation, so that the very first run of a fresh
# server (which Streamlit starts in its old pages/ folder mode) does not list pages/*.py
# modules such as "common"; the app's own navigation below turns it back on.
st.set_option("client.showSidebarNavigation", True)

PAGES = {
    "Check images": [
        st.Page("pages/search.py", title="Search", icon=":material/image_search:", default=True),
        st.Page("pages/distributions.py", title="Distributions", icon=":material/bar_chart:"),
        st.Page("pages/generate.py", title="Generate", icon=":material/auto_awesome:"),
        st.Page("pages/case.py", title="Case", icon=":material/folder_open:"),
    ],
    "Explore the training set": [
        st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
        st.Page("pages/duplicates.py", title="Duplicates", icon=":material/content_copy:"),
    ],
    "Evaluate": [
        st.Page("pages/benchmark.py", title="Benchmark", icon=":material/science:"),
    ],
    "Manage": [
        st.Page("pages/indexes.py", title="Indexes", icon=":material/folder_managed:"),
    ],
}


render_sidebar()
keep_case_in_address()
if st.session_state.get(INDEX_KEY):
    sidebar_index = index_at(st.session_state[INDEX_KEY])
    if sidebar_index is not None and not is_calibrated(sidebar_index):
        st.sidebar.warning(threshold_note(sidebar_index), icon=":material/warning:")
run_guarded(st.navigation(PAGES))
