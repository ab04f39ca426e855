"""Distributions page: the paper's figure for a set of generations. Top-1 similarity of
generated vs training, held-out vs training and training vs nearest other training image,
the replication rates, and a gallery of the most replicated generations. Before anything is
measured it shows the bundled study's figures (docs/study)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from lib.allowed_paths import app_roots, unread_reason
from lib.app_config import AppConfig, load_config
from lib.compare import pair_strip
from lib.defaults import DATA_DIR, OPENMOJI_DIR
from lib.demo import make_demo_batch
from lib.diffusion.study import reference_at_size
from lib.images import IMAGE_SUFFIXES, read_caption
from lib.index import ReplicaIndex
from lib.replication import ReplicationStats, ScanReport, scan, training_baseline
from lib.search import QueryResult
from lib.st_cache import cached_query_thumbnail, cached_thumbnail
from lib.uploads import UploadLimitExceeded, save_uploads, session_ledger
from pages.case_ui import scan_actions
from pages.common import (
    GLOSSARY,
    LAST_BATCH_KEY,
    LAST_BATCH_TARGET_KEY,
    MEASURE_BATCH_KEY,
    current_index,
    display_path,
    embedder_at,
    index_at,
    show_error,
    streamlit_progress,
    threshold_note,
    verdict_badge,
)

REPORT_KEY = "dist_report"
BASELINE_KEY = "dist_baseline"
# st.session_state: the inputs the stored report was measured with; other inputs clear it.
INPUTS_KEY = "dist_inputs"
LAST_BATCH = "the last batch generated in the app"
STUDY_DIR = DATA_DIR.parent / "docs" / "study"
GALLERY_MAX = 40
DEMO_SOURCE = re.compile(r"copy_\d+_(?P<edit>[a-z]+)_of_(?P<row>\d+)\.png$")
UPLOAD_PREFIX = re.compile(r"^\d{4}_")

# One colour per kind of set, whichever sets a report holds: red your generations, blue
# real held-out images, grey training images against each other.
SET_COLOURS = {"generated": "#d62728", "held-out": "#1f77b4", "training": "#7f7f7f"}


def how_to_read(has_heldout: bool) -> str:
    """How to read the histogram, naming only the sets it shows."""
    other = (
        "the blue ones (real images never used for training, searched in the same training set)"
        if has_heldout
        else "the grey ones (each training image against its nearest training image outside "
        "its own family of variants: no held-out folder was given)"
    )
    return (
        f"**How to read this:** compare the red bars (your generations) with {other}. A set "
        "that copies has more generations flagged as copies, and its red bars sit to the "
        "right. The raw share above 0.5 can be *higher* for real images when all images of "
        "a kind look alike (every 32 px emoji resembles some training emoji); the copy rate "
        "subtracts each image's background and is the fair comparison."
    )


def set_colour(name: str) -> str:
    if name.startswith("held-out"):
        return SET_COLOURS["held-out"]
    if name.startswith("training"):
        return SET_COLOURS["training"]
    return SET_COLOURS["generated"]


def upload_folder(files: list[UploadedFile], config: AppConfig) -> Path:
    """The uploads written once into a private temporary folder named by their content (the
    same files give the same folder, so a rerun does not look like new inputs), counted
    against the session's upload allowance; sets older than ``upload_temp_hours`` are
    deleted first (:func:`lib.uploads.save_uploads`).

    Raises:
        UploadLimitExceeded: over the session's allowance or the disk's free-space reserve.
    """
    return save_uploads(
        [(f.name, f.getvalue()) for f in files],
        ledger=session_ledger(st.session_state, config.upload_session_bytes),
        max_age_hours=config.upload_temp_hours,
        min_free_bytes=config.upload_min_free_bytes,
    )


def query_name(path: str) -> str:
    """A generation's name as the user knows it: its caption, else its file name (uploads
    without the numbering added on the server)."""
    return read_caption(Path(path)) or UPLOAD_PREFIX.sub("", Path(path).name)


def demo_source_note(index: ReplicaIndex, result: QueryResult) -> str:
    """For a demo copy: which training image it was made from, and whether the top match is it."""
    found = DEMO_SOURCE.search(Path(result.query).name)
    if found is None or result.top is None:
        return ""
    row = int(found["row"])
    if row >= index.count:
        return ""
    source_id = int(index.metadata["id"].iloc[row])
    edit = found["edit"]
    if result.top.id == source_id:
        return f"Demo copy ({edit} of training #{source_id}): **the top match is its source.**"
    return f"Demo copy ({edit} of training #{source_id}): the top match is another image."


def show_bundled_study() -> None:
    """The bundled study's figures (docs/study), so that a first visit has something to read."""
    study_file = STUDY_DIR / "study.json"
    if not study_file.is_file():
        return
    try:
        rows = json.loads(study_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    st.subheader("An example: the bundled study")
    sizes = sorted({int(r["n_train"]) for r in rows})
    st.markdown(
        f"{len(rows)} small diffusion models trained here on "
        f"{', '.join(f'{n:,}' for n in sizes[:-1])}{' and ' if len(sizes) > 1 else ''}"
        f"{sizes[-1]:,} OpenMoji emoji, with the same recipe and number of steps, 64 samples "
        "each, searched in their own training images (held-out = real emoji never trained on, "
        "brought to the same size and searched in the same images). The smaller the training "
        "set, the more its samples copy it. Measure your own set above to draw the same figure."
    )
    curve = STUDY_DIR / "curve.png"
    if curve.is_file():
        st.image(
            str(curve),
            caption="Each measure against the number of training images; dashed: real "
            "held-out images searched the same way",
        )
    tabs = st.tabs([str(r["model"]) for r in rows])
    for tab, row in zip(tabs, rows, strict=True):
        with tab:
            cols = st.columns(4)
            cols[0].metric("Copies among samples", f"{row['copy_rate']:.1%}")
            cols[1].metric("Copies among held-out", f"{row['heldout']['copy_rate']:.1%}")
            cols[2].metric("Mean top-1, samples", f"{row['mean_top1']:.3f}")
            cols[3].metric("Mean top-1, held-out", f"{row['heldout']['mean_top1']:.3f}")
            left, right = st.columns(2)
            for col, kind, caption in (
                (left, "histogram", "top-1 similarity: samples vs held-out"),
                (right, "gallery", "most-copied samples beside their training matches"),
            ):
                png = STUDY_DIR / f"{row['model']}-{kind}.png"
                if png.is_file():
                    col.image(str(png), caption=caption)


def measure(
    scan_index: ReplicaIndex,
    generated: Path,
    reference_text: str,
    scan_size: int | None,
) -> None:
    """Scan the generations (and the held-out folder) and keep the report in the session."""
    config = load_config()
    try:
        reference = None
        if reference_text:
            reference = config.allowed_image_dir(reference_text)
            if scan_size:
                with st.spinner(f"Bringing the held-out images to {scan_size} px…"):
                    reference = reference_at_size(reference, scan_size)
        callback, bar = streamlit_progress("Embedding and searching")
        embedder = embedder_at(scan_index.path)
        if embedder is None:
            return
        report = scan(
            scan_index, generated, reference=reference, embedder=embedder, progress=callback
        )
        bar.empty()
        st.session_state[REPORT_KEY] = report
        st.session_state[BASELINE_KEY] = training_baseline(scan_index, scan_index.calibration)
    except (PermissionError, FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        show_error(
            "The scan could not run",
            exc,
            "Pick a folder or files holding readable images (PNG, JPEG, WebP…), check the "
            "held-out folder, and press Measure replication again.",
        )


def show_report(
    report: ScanReport, baseline: ReplicationStats, scan_index: ReplicaIndex, label: str = ""
) -> None:
    sets = [report.generated]
    if report.reference.name.startswith("held-out"):
        sets.append(report.reference)
    sets.append(baseline)

    g = report.generated
    cols = st.columns(4)
    cols[0].metric(
        "Replication rate (copies)",
        f"{g.copy_rate:.1%}",
        help="Share of generations whose verdict is COPY (the calibrated score; see below). "
        + GLOSSARY["calibrated score"],
    )
    cols[1].metric(
        f"Share above raw {g.threshold}",
        f"{g.rate_above_threshold:.1%}",
        help="The paper's figure: raw SSCD similarity above 0.5. " + GLOSSARY["raw cosine"],
    )
    cols[2].metric(
        "95th percentile top-1",
        f"{g.p95_top1:.3f}",
        help="95% of the generations have a best match below this raw cosine.",
    )
    cols[3].metric(
        "Generations scanned",
        f"{g.n}",
        help=f"{len(report.skipped)} file(s) could not be read (listed below)"
        if report.skipped
        else None,
    )
    if report.skipped:
        st.warning(
            f"{len(report.skipped)} file(s) could not be read and were left out: "
            + "; ".join(f"{query_name(s.path)} ({s.reason})" for s in report.skipped[:10])
        )
    st.caption(threshold_note(scan_index, label))
    st.markdown(how_to_read(any(x.name.startswith("held-out") for x in sets)))

    figure = go.Figure()
    for stats in sets:
        colour = set_colour(stats.name)
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
    with st.expander("What the sets mean"):
        for name in ("held-out vs training", "training vs training", "calibrated score"):
            st.markdown(f"**{name}**: {GLOSSARY[name]}")

    st.subheader("Most replicated generations")
    ranked = sorted((r for r in report.results if r.error is None), key=lambda r: -r.score)
    shown = len(ranked)
    if len(ranked) > 1:
        most = min(GALLERY_MAX, len(ranked))
        shown = st.slider("How many", 1, most, min(8, most), key="dist_gallery_n")
    for result in ranked[:shown]:
        show_generation(scan_index, result)


def show_generation(scan_index: ReplicaIndex, result: QueryResult) -> None:
    match = result.top
    if match is None:
        return
    pair, info = st.columns([2, 2])
    query_thumb = cached_query_thumbnail(result.query, 140)
    match_thumb = cached_thumbnail(match.path, 140)
    match_label = f"#{match.id} {match.caption or Path(match.path).name}"
    if match_thumb is None:
        match_label += f" ({unread_reason(match.path, app_roots())})"
    # query and match at one height, whatever their shapes
    pair.image(
        pair_strip(query_thumb, match_thumb, 140),
        caption=f"{query_name(result.query)} · {match_label}",
    )
    note = demo_source_note(scan_index, result)
    info.markdown(
        f"{verdict_badge(result.verdict)} · calibrated {result.score:+.3f} "
        f"(copy at ≥ {scan_index.calibration.copy_threshold:+.3f}) · raw {result.raw_score:.3f}"
        f"  \n{result.explanation()}" + (f"  \n{note}" if note else "")
    )


st.header("Distributions: how much does a set of generations copy?")
index = current_index()
if index is None:
    st.stop()
config = load_config()

measure_now = bool(st.session_state.pop(MEASURE_BATCH_KEY, False))
if measure_now and st.session_state.get(LAST_BATCH_KEY):
    st.session_state["dist_source"] = LAST_BATCH  # sent here by Generate's button

default_reference = (
    display_path(OPENMOJI_DIR / "heldout", [DATA_DIR.parent])
    if "openmoji" in " ".join(index.manifest.sources)
    else ""
)
reference_text = st.text_input(
    "Real held-out images (optional baseline)",
    value=default_reference,
    key="dist_reference",
    help="A folder of real images of the same kind that were never used for training. "
    + GLOSSARY["held-out vs training"],
)

sources = ["a folder on the server", "uploaded images", "a demo batch"]
if st.session_state.get(LAST_BATCH_KEY):
    sources.insert(0, LAST_BATCH)
source = st.radio("Generated images from", sources, horizontal=True, key="dist_source")
generated: Path | None = None
if source == LAST_BATCH:
    generated = Path(st.session_state[LAST_BATCH_KEY])
    count = len(list(generated.glob("*.png"))) if generated.is_dir() else 0
    st.caption(f"{count} images generated on the Generate page.")
elif source == "a folder on the server":
    folder = st.text_input(
        "Folder of generated images",
        key="dist_folder",
        help="Allowed: folders inside "
        + ", ".join(
            display_path(r, [DATA_DIR.parent]) if DATA_DIR.parent in r.resolve().parents else str(r)
            for r in config.image_roots
        )
        + " (relative to the app's folder, such as data/openmoji/heldout, or a full path).",
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
        try:
            generated = upload_folder(files, config)
        except (UploadLimitExceeded, OSError) as exc:
            show_error("These images cannot be uploaded", exc, "Upload fewer or smaller images.")
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
        count = len(list(generated.glob("*.png")))
        st.caption(f"Demo batch: {count} images ({display_path(generated)}).")

# A bundled model's batch was searched in the model's own training subset at its size on the
# Generate page; measure it there too, with the held-out baseline brought to that size.
scan_index, scan_size, scan_label = index, None, ""
target = st.session_state.get(LAST_BATCH_TARGET_KEY) or {}
searched_in = target.get("index", str(index.path))
if source == LAST_BATCH and searched_in != str(index.path):
    model_index = index_at(searched_in)
    if model_index is None:
        st.stop()
    scan_index, scan_size = model_index, target.get("image_size")
    scan_label = target.get("label") or f"the model's own {scan_index.count} training images"
    st.caption(
        f"Measured as on the Generate page: against {scan_label}"
        + (f", with the held-out baseline brought to {scan_size} px too." if scan_size else ".")
    )
# A report belongs to the inputs it was measured with: any other input clears it.
inputs = (source, str(generated), reference_text, str(scan_index.path), scan_size)
if st.session_state.get(INPUTS_KEY) != inputs:
    st.session_state.pop(REPORT_KEY, None)
    st.session_state.pop(BASELINE_KEY, None)
    st.session_state[INPUTS_KEY] = inputs

clicked = st.button(
    "Measure replication", key="dist_run", type="primary", disabled=generated is None
)
if generated is not None and (clicked or (measure_now and source == LAST_BATCH)):
    measure(scan_index, generated, reference_text, scan_size)

report = st.session_state.get(REPORT_KEY)
baseline = st.session_state.get(BASELINE_KEY)
if report is None or baseline is None:
    st.info("Choose generated images and press **Measure replication**.")
    show_bundled_study()
    st.stop()
show_report(report, baseline, scan_index, scan_label)
scan_embedder = embedder_at(scan_index.path)
if scan_embedder is not None and generated is not None:
    scan_actions(scan_index, report, generated, reference_text, scan_embedder)
