"""Replica's Streamlit app: navigation, the sidebar index picker, the index card and the
licence line. Every page is UI only over lib/."""

from __future__ import annotations

import streamlit as st

from pages.common import render_sidebar

st.set_page_config(page_title="Replica", page_icon=":material/image_search:", layout="wide")

PAGES = {
    "Check images": [
        st.Page("pages/search.py", title="Search", icon=":material/image_search:", default=True),
        st.Page("pages/distributions.py", title="Distributions", icon=":material/bar_chart:"),
        st.Page("pages/generate.py", title="Generate", icon=":material/auto_awesome:"),
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
st.navigation(PAGES).run()
