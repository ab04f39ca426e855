"""Duplicates page, for dataset curators: near-duplicate clusters inside the index at a
chosen cosine threshold, one kept image per cluster, and CSV/JSON exports of what to remove."""

from __future__ import annotations

import streamlit as st

from lib.duplicates import DEFAULT_DUPLICATE_THRESHOLD, DuplicateCluster
from lib.st_cache import cached_duplicates, cached_thumbnail, manifest_mtime
from pages.common import INDEX_KEY, current_index, file_label, show_error

# Clusters drawn at first and added by each 'show more'.
PAGE_SIZE = 30
# Images drawn per cluster (the rest are counted).
MAX_MEMBERS = 8
SHOWN_KEY = "dup_shown"
THUMB = 110


def reset_paging() -> None:
    st.session_state[SHOWN_KEY] = PAGE_SIZE


def show_more() -> None:
    st.session_state[SHOWN_KEY] = st.session_state.get(SHOWN_KEY, PAGE_SIZE) + PAGE_SIZE


def show_cluster(cluster: DuplicateCluster) -> None:
    """One cluster as a row of thumbnails: the kept image first, similarity under each."""
    st.markdown(
        f"**Cluster {cluster.cluster}** · {cluster.size} images · cosine to the kept image "
        f"{cluster.min_similarity:.3f}–{cluster.max_similarity:.3f}"
    )
    members = cluster.members[:MAX_MEMBERS]
    hidden = cluster.size - len(members)
    columns = st.columns(MAX_MEMBERS)
    for col, m in zip(columns, members, strict=False):
        name = m.caption or file_label(m.path)
        label = f"KEEP · #{m.id} {name}" if m.keep else f"#{m.id} {name} · {m.similarity:.3f}"
        thumb = cached_thumbnail(m.path, THUMB)
        if thumb is None:
            col.caption(f"{label} (image not readable)")
        else:
            col.image(thumb, caption=label)
    if hidden:
        st.caption(f"… and {hidden} more in this cluster (all listed in the CSV).")


st.header("Duplicates: near-copies inside the training set")
index = current_index()
if index is None:
    st.stop()
path = str(st.session_state[INDEX_KEY])
st.caption(
    "Images whose embeddings are at least this similar (cosine) are linked; linked images "
    "form a cluster. In each cluster the largest image is kept and the others are proposed "
    "for removal. SSCD scores above about 0.85 are usually crops, resizes or re-encodings "
    "of the same picture."
)
threshold = st.slider(
    "Similarity threshold (cosine)",
    min_value=0.5,
    max_value=1.0,
    value=DEFAULT_DUPLICATE_THRESHOLD,
    step=0.01,
    key="dup_threshold",
    on_change=reset_paging,
    help="Lower finds more (and looser) duplicates.",
)
threshold = round(float(threshold), 2)
try:
    report = cached_duplicates(path, manifest_mtime(path), threshold)
except (ValueError, MemoryError, RuntimeError) as exc:
    show_error("Duplicates could not be computed", exc)
    st.stop()

clustered = sum(c.size for c in report.clusters)
metrics = st.columns(4)
metrics[0].metric("Clusters", f"{len(report.clusters):,}")
metrics[1].metric("Images in clusters", f"{clustered:,}")
metrics[2].metric("Removable", f"{report.n_removable:,}")
metrics[3].metric("Pairs above threshold", f"{len(report.pairs):,}")
if not report.clusters:
    st.success(f"No near-duplicates at cosine ≥ {threshold:.2f} among {index.count:,} images.")
    st.stop()

stem = f"{index.path.name}-duplicates-{threshold:.2f}"
downloads = st.columns(3)
downloads[0].download_button(
    f"Files to remove ({report.n_removable:,}) · CSV",
    report.removal_csv_text(),
    file_name=f"{stem}-remove.csv",
    mime="text/csv",
    key="dup_download_removal",
    help="Every clustered image except the kept one, with the image it duplicates.",
)
downloads[1].download_button(
    "All clusters · CSV",
    report.csv_text(),
    file_name=f"{stem}.csv",
    mime="text/csv",
    key="dup_download_csv",
)
downloads[2].download_button(
    "All clusters · JSON",
    report.json_text(),
    file_name=f"{stem}.json",
    mime="application/json",
    key="dup_download_json",
)

shown = st.session_state.setdefault(SHOWN_KEY, PAGE_SIZE)
for cluster in report.clusters[:shown]:
    show_cluster(cluster)
rest = len(report.clusters) - shown
if rest > 0:
    st.button(
        f"Show {min(rest, PAGE_SIZE)} more of {rest} remaining clusters",
        key="dup_more",
        on_click=show_more,
    )
