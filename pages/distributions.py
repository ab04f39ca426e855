"""Distributions page: the paper's figure for a set of generations. Top-1 similarity of
generated vs training, held-out vs training and training vs nearest other training image,
the replication rates, and a gallery of the most replicated generations."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from lib.app_config import load_config
from lib.defaults import OPENMOJI_DIR
from lib.demo import make_demo_batch
from lib.diffusion.study import reference_at_size
from lib.images import IMAGE_SUFFIXES
from lib.replication import ReplicationStats, scan, training_baseline
from lib.st_cache import cached_thumbnail
from pages.common import (
    LAST_BATCH_KEY,
    LAST_BATCH_TARGET_KEY,
    current_index,
    embedder_at,
    file_label,
    index_at,
    show_error,
    streamlit_progress,
)

REPORT_KEY = "dist_report"
BASELINE_KEY = "dist_baseline"

st.header("Distributions: how much does a set of generations copy?")
index = current_index()
if index is None:
    st.stop()
config = load_config()

default_reference = (
    str(OPENMOJI_DIR / "heldout") if "openmoji" in " ".join(index.manifest.sources) else ""
)
reference_text = st.text_input(
    "Real held-out images (optional baseline)", value=default_reference, key="dist_reference"
)

sources = ["a folder on the server", "uploaded images", "a demo batch"]
if st.session_state.get(LAST_BATCH_KEY):
    sources.insert(0, "the last batch generated in the app")
source = st.radio("Generated images from", sources, horizontal=True, key="dist_source")
generated: Path | list[Path] | None = None
if source == "the last batch generated in the app":
    generated = Path(st.session_state[LAST_BATCH_KEY])
    st.caption(f"Folder: `{generated}`")
elif source == "a folder on the server":
    folder = st.text_input(
        "Folder of generated images",
        key="dist_folder",
        help="Allowed roots: " + ", ".join(str(r) for r in config.image_roots),
    )
    if folder:
        try:
            generated = config.allowed_image_dir(folder)
        except (PermissionError, FileNotFoundError) as exc:
            show_error("That folder cannot be used", exc, "Pick a folder inside an allowed root.")
elif source == "uploaded images":
    files = st.file_uploader(
        "Generated images",
        type=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES),
        accept_multiple_files=True,
        key="dist_uploads",
    )
    if files:
        tmp = Path(tempfile.mkdtemp(prefix="replica-upload-"))
        for i, f in enumerate(files):
            (tmp / f"{i:04d}_{Path(f.name).name}").write_bytes(f.getvalue())
        generated = tmp
else:
    st.caption(
        "A labelled stand-in for generations: edited copies of 20 training images mixed "
        "with up to 40 images the index has never seen (from the held-out folder above), to see "
        "what replication looks like."
    )
    if st.button("Make a demo batch", key="dist_demo"):
        folder_out = config.upload_root / f"demo-batch-{uuid.uuid4().hex[:6]}"
        unseen = reference_text or None  # held-out images stand in for novel generations
        st.session_state["dist_demo_dir"] = str(make_demo_batch(index, folder_out, unseen))
    if st.session_state.get("dist_demo_dir"):
        generated = Path(st.session_state["dist_demo_dir"])
        st.caption(f"Demo batch: `{generated}`")

# A bundled model's batch was searched in the model's own training subset at its size on the
# Generate page; measure it there too, with the held-out baseline brought to that size.
scan_index, scan_size = index, None
target = st.session_state.get(LAST_BATCH_TARGET_KEY) or {}
searched_in = target.get("index", str(index.path))
if source == "the last batch generated in the app" and searched_in != str(index.path):
    scan_index, scan_size = index_at(searched_in), target.get("image_size")
    if scan_index is None:
        st.stop()
    st.caption(
        f"Measured as on the Generate page: against the model's own {scan_index.count} "
        f"training images ({scan_index.path.name})"
        + (f", with the held-out baseline brought to {scan_size} px too." if scan_size else ".")
    )

if st.button("Measure replication", key="dist_run", type="primary", disabled=generated is None):
    reference = None
    try:
        if reference_text:
            reference = config.allowed_image_dir(reference_text)
            if scan_size:
                with st.spinner(f"Bringing the held-out images to {scan_size} px…"):
                    reference = reference_at_size(reference, scan_size)
        callback, bar = streamlit_progress("Embedding and searching")
        embedder = embedder_at(scan_index.path)
        report = scan(
            scan_index, generated, reference=reference, embedder=embedder, progress=callback
        )
        bar.empty()
        st.session_state[REPORT_KEY] = report
        st.session_state[BASELINE_KEY] = training_baseline(scan_index, scan_index.calibration)
    except (PermissionError, FileNotFoundError, ValueError, OSError) as exc:
        show_error("The scan could not run", exc, "Check the folders and try again.")

report = st.session_state.get(REPORT_KEY)
if report is None or report.index != str(scan_index.path):
    st.info("Choose generated images and press **Measure replication**.")
    st.stop()
baseline: ReplicationStats = st.session_state[BASELINE_KEY]

sets = [report.generated]
if report.reference.name.startswith("held-out"):
    sets.append(report.reference)
sets.append(baseline)

cols = st.columns(4)
g = report.generated
cols[0].metric(
    "Replication rate (copies)",
    f"{g.copy_rate:.1%}",
    help="Share of generations whose calibrated score says copy.",
)
cols[1].metric(
    f"Share above raw {g.threshold}",
    f"{g.rate_above_threshold:.1%}",
    help="The paper's figure: raw SSCD similarity above 0.5.",
)
cols[2].metric("95th percentile top-1", f"{g.p95_top1:.3f}")
cols[3].metric(
    "Generations scanned",
    f"{g.n}",
    delta=f"{len(report.skipped)} unreadable" if report.skipped else None,
    delta_color="off",
)

figure = go.Figure()
colours = ["#d62728", "#1f77b4", "#7f7f7f"]
for stats, colour in zip(sets, colours, strict=False):
    figure.add_trace(
        go.Histogram(
            x=stats.top1,
            name=f"{stats.name} (n={stats.n})",
            histnorm="probability density",
            opacity=0.55,
            marker_color=colour,
            xbins={"start": -0.1, "end": 1.0, "size": 0.025},
        )
    )
figure.add_vline(x=g.threshold, line_dash="dash", annotation_text=f"{g.threshold}")
figure.update_layout(
    barmode="overlay",
    xaxis_title="top-1 similarity to the training set (raw cosine)",
    yaxis_title="density",
    height=380,
    margin={"t": 30},
    legend={"orientation": "h", "y": -0.25},
)
st.plotly_chart(figure, key="dist_histogram")

table = [
    {
        "set": s.name,
        "n": s.n,
        "copies": f"{s.copy_rate:.1%}",
        f"> {s.threshold}": f"{s.rate_above_threshold:.1%}",
        "mean": round(s.mean_top1, 3),
        "median": round(s.median_top1, 3),
        "p95": round(s.p95_top1, 3),
    }
    for s in sets
]
st.dataframe(table, hide_index=True, key="dist_table")

st.subheader("Most replicated generations")
ranked = sorted((r for r in report.results if r.error is None), key=lambda r: -r.score)
shown = st.slider(
    "How many", 1, max(1, min(40, len(ranked))), min(8, len(ranked)), key="dist_gallery_n"
)
for result in ranked[:shown]:
    match = result.top
    if match is None:
        continue
    left, right, info = st.columns([1, 1, 2])
    query_thumb = cached_thumbnail(result.query, 140)
    match_thumb = cached_thumbnail(match.path, 140)
    if query_thumb is not None:
        left.image(query_thumb, caption=file_label(result.query))
    if match_thumb is not None:
        right.image(match_thumb, caption=match.caption or file_label(match.path))
    info.markdown(
        f"**{result.verdict.upper()}** · calibrated {result.score:+.3f} · "
        f"raw {result.raw_score:.3f}  \n{result.explanation()}"
    )
