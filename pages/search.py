"""Search page: drop images (or pick samples) and see each beside its top-k training
matches, with raw and calibrated scores, a verdict that explains itself, a detail view
for one pair, and CSV/JSON downloads."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from lib.allowed_paths import (
    OUTSIDE_REASON,
    OutsideAllowedFolders,
    app_roots,
    index_roots,
    load_inside,
    resolve_inside,
)
from lib.bench.edits import EDITS
from lib.compare import blend, blink_gif, difference, fit_height
from lib.defaults import OPENMOJI_DIR
from lib.images import (
    IMAGE_SUFFIXES,
    ImageLoadError,
    list_image_files,
    load_image,
    read_caption,
)
from lib.regions import compare_regions, region_heatmap
from lib.results import percentile_words
from lib.search import QueryResult, ordered_pair, search_images
from lib.st_cache import cached_thumbnail
from lib.verdict.copy_tests import EDIT_WORDS
from pages.case_ui import finding_actions
from pages.common import (
    VERDICT_BADGES,
    current_embedder,
    current_index,
    file_label,
    placeholder,
    show_error,
)

ROW_HEIGHT = 170
OPERATING_POINTS = {
    "strict (0.5% false alarms)": 0.005,
    "balanced (2%)": 0.02,
    "sensitive (5%)": 0.05,
    "very sensitive (10%)": 0.10,
}
DEMO_KEY = "search_demo_copies"
# label of a demo copy -> (id of the training image it was made from, a heading)
DEMO_SOURCE_KEY = "search_demo_sources"


@st.cache_data(show_spinner=False)
def sample_captions(folder: str) -> dict[str, str]:
    """Held-out sample paths with their captions (file name when there is none)."""
    return {str(p): read_caption(p) or p.name for p in list_image_files(folder)}


st.header("Search: did this image copy a training image?")
index = current_index()
if index is None:
    st.stop()

controls = st.columns([1, 1, 2])
top_k = controls[0].slider("Matches per query (k)", 1, 10, 5, key="search_k")
operating_point = controls[1].selectbox(
    "Operating point",
    list(OPERATING_POINTS),
    index=1,
    key="search_operating_point",
    help="How many unrelated images of the same kind may be flagged as copies. "
    "Measured on this index's own images when it was built.",
)
calibration = index.calibration.with_false_alarm_rate(OPERATING_POINTS[operating_point])
measured = calibration.measured_sensitivity
if measured is None:
    st.caption(
        "How many copies this check misses on this collection has not been measured yet: "
        "recalibrating the index measures it."
    )
else:
    st.caption(measured.error_rates())
    with st.expander("How often this check misses a copy, by kind of edit"):
        st.caption(
            "Copies of this collection's own images, made and searched when the index was "
            "calibrated. A copy counts as caught when it is called a copy with its source as "
            "the top match. Each copy went through one to three edits."
        )
        st.dataframe(
            [
                {
                    "copies that were": EDIT_WORDS.get(name, name),
                    "copies": rate.copies,
                    "caught": f"{rate.share:.0%}",
                }
                for name, rate in [
                    *sorted(measured.by_edit.items(), key=lambda kv: -kv[1].share),
                    ("paste", measured.pasted),
                ]
            ],
            hide_index=True,
        )

regions = st.toggle(
    "Match regions too (finds objects pasted into new scenes; about 1 s more per image)",
    key="search_regions",
)
uploads = st.file_uploader(
    "Drop one or many images",
    type=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES),
    accept_multiple_files=True,
    key="search_uploads",
)

heldout_dir = OPENMOJI_DIR / "heldout"
samples: list[str] = []
captions: dict[str, str] = {}
with controls[2]:
    if heldout_dir.is_dir() and "openmoji" in " ".join(index.manifest.sources).lower():
        captions = sample_captions(str(heldout_dir))
        samples = st.multiselect(
            "…or pick held-out samples (never in training)",
            list(captions),
            key="search_samples",
            format_func=lambda p: captions[p],
        )
    if st.button("Try an edited copy of a training image", key="search_demo"):
        demo_count = st.session_state.get("search_demo_count", 0)
        st.session_state["search_demo_count"] = demo_count + 1
        rng = np.random.default_rng(demo_count)  # reproducible sequence of demos
        row = int(rng.integers(index.count))
        edit = str(rng.choice(["crop", "jpeg", "colour", "text", "flip"]))
        try:
            source = load_inside(index.file_path(row), index_roots(index)).image
            buf = io.BytesIO()
            EDITS[edit](source, rng).save(buf, format="PNG")
            st.session_state[DEMO_KEY] = [(f"{edit} of training #{row}.png", buf.getvalue())]
            st.session_state[DEMO_SOURCE_KEY] = {
                f"{edit} of training #{row}.png": (
                    int(index.metadata["id"].iloc[row]),
                    f"{edit} of “{index.metadata['caption'].iloc[row] or 'training #' + str(row)}”",
                )
            }
        except ImageLoadError as exc:
            show_error("Could not make a demo copy", exc)

queries: list[tuple[str, bytes]] = [(u.name, u.getvalue()) for u in uploads or []]
queries += [(Path(p).name, Path(p).read_bytes()) for p in samples]
headings = {Path(p).name: captions[p] for p in samples}
demo_sources: dict[str, tuple[int, str]] = st.session_state.get(DEMO_SOURCE_KEY, {})
headings |= {label: heading for label, (_, heading) in demo_sources.items()}
queries += st.session_state.get(DEMO_KEY, [])
if not queries:
    st.info("Upload images or pick a sample to see their closest training images.")
    st.stop()

embedder = current_embedder()
if embedder is None:
    st.stop()
with st.spinner(f"Searching {len(queries)} image(s)…"):
    results = search_images(
        index, queries, embedder=embedder, top_k=top_k, calibration=calibration, regions=regions
    )


def query_image(data: bytes) -> Image.Image | None:
    try:
        return load_image(data).image
    except ImageLoadError:
        return None


def render_result(label: str, data: bytes, result: QueryResult) -> None:
    heading = headings.get(label, label)
    if result.error:
        others = " The other images are shown." if len(results) > 1 else ""
        st.warning(f"**{heading}** was not searched: {result.error}.{others}")
        return
    text, colour, icon = VERDICT_BADGES[result.verdict]
    st.markdown(f"#### {heading} &nbsp; :{colour}-badge[{icon} {text}]")
    percentile = (
        ""
        if result.null_percentile is None
        else f" · {percentile_words(result.verdict, result.null_percentile)}"
    )
    score, threshold = ordered_pair(result.score, result.copy_threshold, sign=True)
    st.caption(
        f"{result.explanation()}  \nCalibrated score {score} "
        f"(copy at ≥ {threshold}, {result.false_alarm_rate:.1%} false "
        f"alarms){percentile}; raw cosine {result.raw_score:.3f}, the paper's measure "
        f"({'above' if result.raw_score > 0.5 else 'not above'} its 0.5; copy at ≥ "
        f"{result.identical_threshold:.2f} whatever the neighbourhood)."
    )
    if label in demo_sources and result.top is not None:
        source_id = demo_sources[label][0]
        if result.top.id == source_id:
            st.success(
                f"The top match is the training image this copy was made from (#{source_id}).",
                icon=":material/check:",
            )
        else:
            st.warning(
                f"The training image this copy was made from (#{source_id}) is not the top match."
            )
    cols = st.columns(len(result.matches) + 1)
    image = query_image(data)
    if image is not None:
        cols[0].image(fit_height(image, ROW_HEIGHT), caption="query")
    for col, match in zip(cols[1:], result.matches, strict=True):
        thumb = cached_thumbnail(match.path, ROW_HEIGHT)
        if thumb is not None:
            col.image(thumb)
        elif resolve_inside(match.path, app_roots()) is None:
            col.image(placeholder(OUTSIDE_REASON, ROW_HEIGHT))
            col.caption(f"({OUTSIDE_REASON})")
        else:
            col.image(placeholder("image file not found on this server", ROW_HEIGHT))
            col.caption(index.stand_in(match.id, match.caption))
        if match.combined is not None:  # region matching: ordered by the combined score
            card = (
                f"**#{match.rank}** combined **{match.combined:+.3f}** · "
                f"cal {match.calibrated:+.3f} · raw {match.score:.3f} · "
                f"region {match.region_score or match.score:.3f}"
            )
        else:
            card = f"**#{match.rank}** cal **{match.calibrated:+.3f}** · raw {match.score:.3f}"
        col.markdown(f"{card}  \n{match.caption or ''}  \n`{file_label(match.path)}`")
    finding_actions(
        index,
        label,
        data,
        match_id=None,
        top_k=top_k,
        false_alarm_rate=OPERATING_POINTS[operating_point],
        regions=regions,
        embedder=embedder,
        where="search",
    )


for (label, data), result in zip(queries, results, strict=True):
    with st.container(border=True):
        render_result(label, data, result)

good = [(q, r) for q, r in zip(queries, results, strict=True) if r.error is None]
if good:
    st.subheader("Compare one pair")
    names = [f"{q[0]} → #{m.rank} {file_label(m.path)}" for q, r in good for m in r.matches]
    pairs = [(q, m) for q, r in good for m in r.matches]
    choice = st.selectbox(
        "Pair", range(len(pairs)), format_func=lambda i: names[i], key="search_pair"
    )
    (label, data), match = pairs[choice]
    query_img = query_image(data)
    try:
        match_img = load_inside(match.path, index_roots(index)).image
    except OutsideAllowedFolders:
        st.info(f"This pair cannot be compared: {OUTSIDE_REASON}.")
        match_img = None
    except ImageLoadError:
        st.info(
            "This pair cannot be compared: the training image's file is not on this server "
            "(its match was found from the index's stored fingerprint)."
        )
        match_img = None
    if query_img is not None and match_img is not None:
        mode = st.radio(
            "View",
            ["side by side", "slider", "blink", "difference", "regions"],
            horizontal=True,
            key="search_view",
        )
        if mode == "side by side":
            left, right = st.columns(2)
            left.image(fit_height(query_img, 384), caption=f"query: {label}")
            right.image(
                fit_height(match_img, 384),
                caption=f"training #{match.id}: {match.caption or file_label(match.path)}",
            )
        elif mode == "slider":
            mix = st.slider("Query ← → training image", 0.0, 1.0, 0.5, key="search_mix")
            st.image(blend(query_img, match_img, mix), width=384)
        elif mode == "blink":
            st.image(
                blink_gif(query_img, match_img),
                width=384,
                caption="alternates query and training image",
            )
        elif mode == "regions":
            with st.spinner("Matching crops of both images…"):
                region_match = compare_regions(embedder, query_img, match_img)
            left, right = st.columns(2)
            marked_query, marked_match = region_heatmap(query_img, match_img, region_match)
            left.image(fit_height(marked_query, 384), caption="query: best-matching crops")
            right.image(fit_height(marked_match, 384), caption="training image: their matches")
            st.caption(
                f"Best crop pair: cosine {region_match.score:.3f}. Boxes of one colour match "
                "each other (thickest = best); red tint = query areas whose crops match best."
            )
        else:
            st.image(
                difference(query_img, match_img),
                width=384,
                caption="absolute difference, contrast-stretched: black = identical",
            )
        st.caption(f"raw cosine {match.score:.3f}, calibrated {match.calibrated:+.3f}")
        st.caption("A report of this pair, or this pair added to the case:")
        finding_actions(
            index,
            label,
            data,
            match_id=match.id,
            top_k=top_k,
            false_alarm_rate=OPERATING_POINTS[operating_point],
            regions=regions,
            embedder=embedder,
            where="pair",
        )


def results_csv(results: list[QueryResult]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            "query",
            "verdict",
            "calibrated_top1",
            "raw_top1",
            "null_percentile",
            "rule",
            "copy_threshold",
            "rank",
            "match_id",
            "match_name",
            "match_path",
            "raw",
            "calibrated",
            "caption",
            "error",
        ]
    )
    for r in results:
        if r.error:
            writer.writerow([r.query, *[""] * 13, r.error])
        for m in r.matches:
            writer.writerow(
                [
                    r.query,
                    r.verdict,
                    f"{r.score:.6f}",
                    f"{r.raw_score:.6f}",
                    "" if r.null_percentile is None else f"{r.null_percentile:.2f}",
                    r.rule or "",
                    f"{r.copy_threshold:.6f}",
                    m.rank,
                    m.id,
                    file_label(m.path),
                    m.path,
                    f"{m.score:.6f}",
                    f"{m.calibrated:.6f}",
                    m.caption,
                    "",
                ]
            )
    return buf.getvalue()


if not good:  # nothing was searched: nothing to download
    st.stop()
left, right = st.columns(2)
left.download_button(
    "Download results (CSV)",
    results_csv(results),
    "replica-search.csv",
    "text/csv",
    key="search_csv",
)
right.download_button(
    "Download results (JSON)",
    json.dumps([r.to_dict() for r in results], indent=2),
    "replica-search.json",
    "application/json",
    key="search_json",
)
