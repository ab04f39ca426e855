"""Duplicates page, for dataset curators: near-duplicate clusters inside the index at a
chosen cosine threshold, one kept image per cluster (by a rule the curator picks), every
image proposed for removal at or above the threshold against the kept one, a warning when a
large share would go, and CSV/JSON exports of what to remove."""

from __future__ import annotations

import streamlit as st

from lib.duplicates import (
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_KEEP_RULE,
    KEEP_RULES,
    DuplicateCluster,
    DuplicateReport,
)
from lib.st_cache import cached_duplicates, cached_thumbnail, manifest_mtime
from pages.common import INDEX_KEY, current_index, show_error

# Clusters drawn at first and added by each 'show more'.
PAGE_SIZE = 30
# Images drawn per cluster (the rest are counted).
MAX_MEMBERS = 8
SHOWN_KEY = "dup_shown"
THUMB = 110
# Warn when more than this share of the index would be removed.
LARGE_SHARE = 0.2
KEEP_LABELS = {
    "most-linked": "the one with most near-duplicates",
    "largest": "the largest image",
    "first": "the first indexed",
}


def reset_paging() -> None:
    st.session_state[SHOWN_KEY] = PAGE_SIZE


def show_more() -> None:
    st.session_state[SHOWN_KEY] = st.session_state.get(SHOWN_KEY, PAGE_SIZE) + PAGE_SIZE


def show_cluster(cluster: DuplicateCluster, report: DuplicateReport) -> None:
    """One cluster as a row of thumbnails: the kept image first, similarity under each."""
    st.markdown(
        f"**Cluster {cluster.cluster}** · {cluster.size} images · cosine to the kept image "
        f"{cluster.min_similarity:.3f}–{cluster.max_similarity:.3f} · lowest between any two "
        f"{cluster.lowest_pair:.3f}"
    )
    members = cluster.members[:MAX_MEMBERS]
    hidden = cluster.size - len(members)
    columns = st.columns(MAX_MEMBERS)
    for col, m in zip(columns, members, strict=False):
        name = m.caption or report.name(m.path)
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
    "Images whose embeddings are at least this similar (cosine) are near-duplicates. Each "
    "cluster keeps one image (by the rule you pick) and proposes for removal only images at "
    "or above the threshold against that kept image; images linked only through others are "
    "never proposed. SSCD scores above about 0.85 are usually crops, resizes or re-encodings "
    "of the same picture, but in look-alike collections (emoji, clothes on white) unrelated "
    "images can score that high too: look at the clusters before removing anything."
)
controls = st.columns([3, 2])
with controls[1]:
    keep_rule = st.selectbox(
        "Keep in each cluster",
        list(KEEP_RULES),
        index=list(KEEP_RULES).index(DEFAULT_KEEP_RULE),
        format_func=lambda k: KEEP_LABELS.get(k, k),
        key="dup_keep",
        on_change=reset_paging,
        help="Which image of a cluster stays: "
        + "; ".join(f"{KEEP_LABELS[k]}: {v}" for k, v in KEEP_RULES.items()),
    )
threshold = controls[0].slider(
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
    report = cached_duplicates(path, manifest_mtime(path), threshold, keep_rule)
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
if report.removable_share > LARGE_SHARE:
    unrelated = index.calibration.raw_quantiles.get("0.99")
    hint = (
        f" In this index 1% of unrelated images already reach cosine {unrelated:.2f} with their "
        f"nearest neighbour; try a threshold above that."
        if unrelated is not None
        else ""
    )
    st.warning(
        f"**This would remove {report.n_removable:,} of {index.count:,} images "
        f"({report.removable_share:.0%}).** That many near-duplicates is unusual: at cosine "
        f"≥ {threshold:.2f} unrelated images of the same kind are probably linked.{hint} "
        "Raise the threshold and check the clusters before removing anything.",
        icon=":material/warning:",
    )
if report.n_unassigned:
    st.caption(
        f"{report.n_unassigned:,} more images are linked to a cluster only through others "
        "(below the threshold against every kept image): they are not proposed for removal."
    )

stem = f"{index.path.name}-duplicates-{threshold:.2f}-{keep_rule}"
downloads = st.columns(3)
downloads[0].download_button(
    f"Files to remove ({report.n_removable:,}) · CSV",
    report.removal_csv_text(),
    file_name=f"{stem}-remove.csv",
    mime="text/csv",
    key="dup_download_removal",
    help="Every clustered image except the kept one, with the image it duplicates: its name "
    "relative to the image folder and its full path, in columns of their own.",
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
    show_cluster(cluster, report)
rest = len(report.clusters) - shown
if rest > 0:
    st.button(
        f"Show {min(rest, PAGE_SIZE)} more of {rest} remaining clusters",
        key="dup_more",
        on_click=show_more,
    )
