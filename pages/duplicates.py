"""Duplicates page, for dataset curators: near-duplicate clusters inside the index at a
chosen cosine threshold, one kept image per cluster (by a rule the curator picks), every
image proposed for removal at or above the threshold against the kept one, each cluster's
diameter (and a word when two members are below the threshold against each other), a
warning when a large share would go, CSV/JSON exports of what to remove, clusters paged 20
at a time; and the other check: this index's images found in another index (a test set
in its training set), with a CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from lib.allowed_paths import app_roots, unread_reason
from lib.app_config import available_indexes, load_config
from lib.compare import pair_strip
from lib.duplicates import (
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_KEEP_RULE,
    DEFAULT_NEIGHBOURS,
    KEEP_RULES,
    PIXEL_LIMIT,
    PIXELS_COSINE,
    ContaminationReport,
    DuplicateCluster,
    DuplicateReport,
    PixelCheck,
)
from lib.index import EmbedderMismatch, ReplicaIndex
from lib.st_cache import (
    cached_contamination,
    cached_duplicates,
    cached_index,
    cached_thumbnail,
    manifest_mtime,
)
from pages.common import INDEX_KEY, current_index, show_error, streamlit_progress

MODES = ["Near-duplicates inside this index", "This index's images in another index"]
# Clusters per page.
PAGE_SIZE = 20
# st.session_state: the page of clusters shown (1-based).
PAGE_KEY = "dup_page"
# Pairs drawn as pictures in the other-index check (all are in the table and the CSV).
SHOWN_PAIRS = 12
# Images drawn per cluster (the rest are counted).
MAX_MEMBERS = 8
THUMB = 110
# The pixel check is on by default up to this many images (the page waits for it; the
# command line's `--pixels auto` goes to lib.duplicates.PIXEL_LIMIT).
PAGE_PIXEL_LIMIT = 2000
# Warn when more than this share of the index would be removed.
LARGE_SHARE = 0.2
KEEP_LABELS = {
    "most-linked": "the one with most near-duplicates",
    "largest": "the largest image",
    "first": "the first indexed",
}


def reset_paging() -> None:
    st.session_state[PAGE_KEY] = 1


def turn_page(step: int) -> None:
    st.session_state[PAGE_KEY] = max(1, int(st.session_state.get(PAGE_KEY) or 1) + step)


def show_cluster(cluster: DuplicateCluster, report: DuplicateReport) -> None:
    """One cluster as a row of thumbnails: the kept image first, similarity under each."""
    st.markdown(
        f"**Cluster {cluster.cluster}** · {cluster.size} images · cosine to the kept image "
        f"{cluster.min_similarity:.3f}–{cluster.max_similarity:.3f} · lowest between any two "
        f"{cluster.lowest_pair:.3f}" + (" · :orange[chained]" if cluster.chained else "")
    )
    if cluster.chained:
        a, b = cluster.lowest_pair_ids
        st.caption(
            f"#{a} and #{b} are only at cosine {cluster.lowest_pair:.3f} to each other, below "
            f"the threshold: they are grouped because each is near the kept image."
        )
    members = cluster.members[:MAX_MEMBERS]
    hidden = cluster.size - len(members)
    columns = st.columns(MAX_MEMBERS)
    for col, m in zip(columns, members, strict=False):
        name = m.caption or report.name(m.path)
        label = f"KEEP · #{m.id} {name}" if m.keep else f"#{m.id} {name} · {m.similarity:.3f}"
        thumb = cached_thumbnail(m.path, THUMB)
        if thumb is None:
            col.caption(f"{label} ({unread_reason(m.path, app_roots())})")
        else:
            col.image(thumb, caption=label)
        if m.reason:
            col.caption(m.reason[:1].upper() + m.reason[1:])
    if hidden:
        st.caption(f"… and {hidden} more in this cluster (all listed in the CSV).")


def show_clusters_page(report: DuplicateReport) -> None:
    """The clusters of the current page, with previous/next and a page number."""
    pages = max(1, -(-len(report.clusters) // PAGE_SIZE))
    page = min(max(1, int(st.session_state.get(PAGE_KEY) or 1)), pages)
    st.session_state[PAGE_KEY] = page
    first = (page - 1) * PAGE_SIZE
    shown = report.clusters[first : first + PAGE_SIZE]
    st.caption(
        f"Clusters {first + 1:,}–{first + len(shown):,} of {len(report.clusters):,}, largest "
        f"first (page {page:,} of {pages:,})."
    )
    for cluster in shown:
        show_cluster(cluster, report)
    if pages == 1:
        return
    nav = st.columns([1, 1, 2, 4])
    nav[0].button("← Previous", key="dup_prev", on_click=turn_page, args=(-1,), disabled=page == 1)
    nav[1].button("Next →", key="dup_next", on_click=turn_page, args=(1,), disabled=page == pages)
    nav[2].number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key=PAGE_KEY)


def inside(index: ReplicaIndex, path: str) -> None:
    """Near-duplicate clusters inside ``index`` (the index at ``path``)."""
    st.caption(
        "Images whose pixels line up (when pixels are checked) or whose embeddings are at least "
        "this similar (cosine) are near-duplicates; each image says why it was proposed. Each "
        "cluster keeps one image (by the rule you pick) and proposes for removal only images "
        "at or above the threshold against that kept image; images linked only through "
        "others are never proposed. SSCD scores above about 0.85 are usually crops, resizes "
        "or re-encodings of the same picture, but in look-alike collections (emoji, clothes "
        "on white) unrelated images can score that high too: look at the clusters before "
        "removing anything."
    )
    pixels = pixel_controls(index.count, "dup", "dup_threshold")
    controls = st.columns([3, 2, 1])
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
    threshold = threshold_slider(controls[0], "dup_threshold")
    k = neighbours_input(controls[2], "dup_k")
    try:
        callback, bar = streamlit_progress("Finding near-duplicates")
        report = cached_duplicates(
            path, manifest_mtime(path), threshold, keep_rule, k, pixels, progress=callback
        )
        bar.empty()
    except (ValueError, MemoryError, RuntimeError) as exc:
        show_error("Duplicates could not be computed", exc)
        return
    n_images = report.n_images
    clustered = sum(c.size for c in report.clusters)
    metrics = st.columns(4)
    metrics[0].metric("Clusters", f"{len(report.clusters):,}")
    metrics[1].metric("Images in clusters", f"{clustered:,}")
    metrics[2].metric("Removable", f"{report.n_removable:,}")
    metrics[3].metric("Pairs above threshold", f"{len(report.pairs):,}")
    if not report.clusters:
        st.success(f"No near-duplicates at cosine ≥ {threshold:.2f} among {n_images:,} images.")
        return
    if report.removable_share > LARGE_SHARE:
        unrelated = index.calibration.raw_quantiles.get("0.99")
        hint = (
            f" In this index 1% of unrelated images already reach cosine {unrelated:.2f} with "
            f"their nearest neighbour; try a threshold above that."
            if unrelated is not None
            else ""
        )
        st.warning(
            f"**This would remove {report.n_removable:,} of {n_images:,} images "
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
    if report.n_chained:
        st.caption(
            f"{report.n_chained:,} cluster(s) marked *chained* hold two images below the "
            "threshold against each other: each is near the kept image, not near the other."
        )
    stem = f"{Path(path).name}-duplicates-{threshold:.2f}-{keep_rule}"
    downloads = st.columns(3)
    downloads[0].download_button(
        f"Files to remove ({report.n_removable:,}) · CSV",
        report.removal_csv_text,  # written when clicked: millions of rows cost nothing
        file_name=f"{stem}-remove.csv",
        mime="text/csv",
        key="dup_download_removal",
        help="Every clustered image except the kept one, with the image it duplicates: its "
        "name relative to the image folder and its full path, in columns of their own.",
    )
    downloads[1].download_button(
        "All clusters · CSV",
        report.csv_text,
        file_name=f"{stem}.csv",
        mime="text/csv",
        key="dup_download_csv",
    )
    downloads[2].download_button(
        "All clusters · JSON",
        report.json_text,
        file_name=f"{stem}.json",
        mime="application/json",
        key="dup_download_json",
    )
    show_clusters_page(report)


def pixel_controls(count: int, prefix: str, threshold_key: str) -> PixelCheck | None:
    """The pixel check's toggle (on by default up to :data:`PIXEL_LIMIT` images) and the
    curator's two choices (mirror images, recoloured pictures); keys start with
    ``prefix``. Also sets the threshold slider's default for the mode (``threshold_key``):
    with pixels checked the cosine alone adds only near-identical pictures."""
    toggle_key = f"{prefix}_pixels"
    if toggle_key not in st.session_state:
        st.session_state[toggle_key] = count <= PAGE_PIXEL_LIMIT
    if threshold_key not in st.session_state:
        st.session_state[threshold_key] = threshold_default(toggle_key)
    on = st.toggle(
        "Check pixels too (finds JPEG, resized, cropped, mirrored and pasted copies)",
        key=toggle_key,
        on_change=pixels_changed,
        args=(toggle_key, threshold_key),
        help="Each image's pixels are lined up with its nearest images' (down to cosine 0.4): "
        "an edit that only degrades a picture moves the copy-detection model more than its "
        "pixels. About 5 ms a pair, 2 to 8 pairs an image (look-alike collections the most: "
        "149 s for the 3,918 emoji of the default index, where it also links skin-tone "
        f"variants of small faces); on by default up to {PAGE_PIXEL_LIMIT:,} images here, "
        f"{PIXEL_LIMIT:,} on the command line.",
    )
    if not on:
        return None
    choices = st.columns(2)
    mirrors = choices[0].checkbox(
        "Mirror images are duplicates",
        value=True,
        key=f"{prefix}_mirrors",
        on_change=reset_paging,
        help="A mirrored copy is a copy; but a 'p' and a 'q', or a left and a right arrow, "
        "are mirror images too. Untick to keep mirror images apart.",
    )
    recoloured = choices[1].checkbox(
        "Pictures that differ only in colour are duplicates",
        value=False,
        key=f"{prefix}_recoloured",
        on_change=reset_paging,
        help="Another skin tone or a heart of another colour: by default a different work. "
        "Tick to count recoloured pictures (and colour-shifted copies) as duplicates.",
    )
    return PixelCheck(mirrors=mirrors, same_colours=not recoloured)


def threshold_default(toggle_key: str) -> float:
    """The cosine that makes a duplicate on its own: higher when pixels are checked
    (they find the edited copies; the cosine then only adds near-identical pictures)."""
    return PIXELS_COSINE if st.session_state.get(toggle_key) else DEFAULT_DUPLICATE_THRESHOLD


def pixels_changed(toggle_key: str, threshold_key: str) -> None:
    st.session_state[threshold_key] = threshold_default(toggle_key)
    reset_paging()


def threshold_slider(where: Any, key: str) -> float:
    if key not in st.session_state:
        st.session_state[key] = DEFAULT_DUPLICATE_THRESHOLD
    value = where.slider(
        "Similarity threshold (cosine)",
        min_value=0.5,
        max_value=1.0,
        step=0.01,
        key=key,
        on_change=reset_paging,
        help="Pairs at or above this cosine are duplicates on the embedding alone; lower "
        "finds more (and looser) ones. With pixels checked, pairs whose pixels line up are "
        "duplicates whatever their cosine.",
    )
    return round(float(value), 2)


def neighbours_input(where: Any, key: str) -> int:
    value = where.number_input(
        "Neighbours (k)",
        min_value=1,
        max_value=1024,
        value=DEFAULT_NEIGHBOURS,
        step=1,
        key=key,
        on_change=reset_paging,
        help="Nearest images searched per image: an image with more near-duplicates than "
        "this is linked to its k nearest. Raise it for collections with big groups.",
    )
    return int(value)


def against(path: str) -> None:
    """The images of the index at ``path`` found in another index (contamination)."""
    st.caption(
        "Which images of this index (say, a test set) also appear in another index (say, the "
        "training set)? Each image is searched in the other index for its k nearest; pairs at "
        "or above the threshold are listed. Both indexes must be made by the same embedder."
    )
    others = [str(p) for p in available_indexes(load_config()) if str(p) != path]
    if not others:
        st.info("There is no other index to compare with: build one on the **Indexes** page.")
        return
    controls = st.columns([3, 3, 1])
    other = controls[0].selectbox(
        "Other index (e.g. the training set)",
        others,
        format_func=lambda p: Path(p).name,
        key="dup_other",
    )
    pixels = pixel_controls(cached_index(path, manifest_mtime(path)).count, "dup_against",
                            "dup_against_threshold")  # fmt: skip
    threshold = threshold_slider(controls[1], "dup_against_threshold")
    k = neighbours_input(controls[2], "dup_against_k")
    try:
        callback, bar = streamlit_progress(f"Searching {Path(other).name}")
        report = cached_contamination(
            path,
            manifest_mtime(path),
            other,
            manifest_mtime(other),
            threshold,
            k,
            pixels,
            progress=callback,
        )
        bar.empty()
    except EmbedderMismatch as exc:
        st.error(f"These two indexes cannot be compared. {exc}", icon=":material/block:")
        return
    except (ValueError, MemoryError, RuntimeError, OSError) as exc:
        show_error("The other index could not be searched", exc)
        return
    show_contamination(report, Path(path).name, Path(other).name, threshold)


def show_contamination(
    report: ContaminationReport, name: str, other_name: str, threshold: float
) -> None:
    metrics = st.columns(3)
    metrics[0].metric(f"Images of {name} found", f"{report.n_contaminated:,}")
    metrics[1].metric("Share", f"{report.contaminated_share:.1%}")
    metrics[2].metric("Pairs above threshold", f"{len(report.matches):,}")
    if not report.matches:
        st.success(
            f"None of the {report.n_images:,} images of {name} is in {other_name} at cosine "
            f"≥ {threshold:.2f}" + (" or with pixels that line up." if report.pixels else ".")
        )
        return
    st.download_button(
        f"Images found in {other_name} ({len(report.matches):,} pairs) · CSV",
        report.csv_text,
        file_name=f"{name}-in-{other_name}-{threshold:.2f}.csv",
        mime="text/csv",
        key="dup_download_against",
        help="One row per pair: id, path and caption in this index, the same in the other "
        "index, and their cosine.",
    )
    st.dataframe(
        [
            {
                "id": m.id,
                "image": Path(m.path).name,
                f"in {other_name}": Path(m.other_path).name,
                "other id": m.other_id,
                "cosine": round(m.cosine, 4),
                "why": m.reason or f"cosine at or above {threshold:.2f}",
            }
            for m in report.matches[:1000]
        ],
        key="dup_against_table",
        hide_index=True,
    )
    if len(report.matches) > 1000:
        st.caption(f"The first 1,000 of {len(report.matches):,} pairs; the CSV has them all.")
    for m in report.matches[:SHOWN_PAIRS]:
        labels = []
        thumbs = []
        for label, file in (
            (f"#{m.id} {m.caption or Path(m.path).name}", m.path),
            (f"{other_name} #{m.other_id} {m.other_caption or Path(m.other_path).name}",
             m.other_path),
        ):  # fmt: skip
            thumb = cached_thumbnail(file, THUMB)
            thumbs.append(thumb)
            labels.append(label if thumb else f"{label} ({unread_reason(file, app_roots())})")
        # the pair at one height, whatever the pictures' shapes
        st.image(
            pair_strip(thumbs[0], thumbs[1], THUMB),
            caption=f"{labels[0]} ↔ {labels[1]} · cosine {m.cosine:.3f}"
            + (f" · {m.reason}" if m.reason else ""),
        )


st.header("Duplicates: near-copies inside the training set, or in another one")
index = current_index()
if index is None:
    st.stop()
index_path = str(st.session_state[INDEX_KEY])
mode = st.radio("Check", MODES, horizontal=True, key="dup_mode", label_visibility="collapsed")
if mode == MODES[0]:
    inside(index, index_path)
else:
    against(index_path)
