"""Replica's Streamlit app: pick an index, upload images, see their training matches.

The full multipage app (search, distributions, map, duplicates, indexes) is the next
step; this page already works on every index under data/indexes/.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lib.datasets import OPENMOJI_ATTRIBUTION
from lib.defaults import INDEX_ROOT
from lib.index import list_indexes
from lib.search import search_images
from lib.st_cache import cached_embedder, cached_index, manifest_mtime

VERDICT_COLOURS = {"copy": "red", "similar": "orange", "none": "green"}

st.set_page_config(page_title="Replica", page_icon="🔎", layout="wide")
st.title("Replica: did this image copy a training image?")

indexes = list_indexes(INDEX_ROOT)
if not indexes:
    st.error(f"No index found under {INDEX_ROOT}. Run `make setup` to build the default one.")
    st.stop()
choice = st.sidebar.selectbox("Index", indexes, format_func=lambda p: Path(p).name, key="index")
mtime = manifest_mtime(choice)
index = cached_index(str(choice), mtime)
m = index.manifest
st.sidebar.markdown(
    f"**{index.count}** images · embedder `{m.embedder_name}` · created {m.created[:10]} · "
    f"{len(m.skipped)} skipped at build"
)
st.sidebar.caption(OPENMOJI_ATTRIBUTION)
top_k = st.sidebar.slider("Matches per query", 1, 10, 5, key="top_k")

uploads = st.file_uploader(
    "Drop images to check",
    type=["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"],
    accept_multiple_files=True,
    key="uploads",
)
if uploads:
    embedder = cached_embedder(str(choice), mtime)
    with st.spinner("Searching…"):
        results = search_images(
            index, [(u.name, u.getvalue()) for u in uploads], embedder=embedder, top_k=top_k
        )
    for upload, result in zip(uploads, results, strict=True):
        st.divider()
        if result.error:
            st.warning(f"**{result.query}**: {result.explanation()}")
            continue
        colour = VERDICT_COLOURS[result.verdict]
        st.markdown(f"### {result.query} — :{colour}[{result.verdict.upper()}]")
        st.caption(
            f"{result.explanation()} Calibrated score {result.score:+.3f}, "
            f"raw cosine {result.raw_score:.3f}."
        )
        cols = st.columns(len(result.matches) + 1)
        cols[0].image(upload.getvalue(), caption="query", width=160)
        for col, match in zip(cols[1:], result.matches, strict=True):
            col.image(
                match.path,
                width=160,
                caption=f"#{match.rank} raw {match.score:.3f} · cal {match.calibrated:+.3f}"
                f"\n{match.caption or Path(match.path).name}",
            )
