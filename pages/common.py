"""Shared UI pieces for the pages (not a page itself): the current index, its embedder,
friendly error display and small image helpers. Pages hold UI only; computing is in lib/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
from PIL import Image

from lib.app_config import available_indexes, load_config
from lib.datasets import DATASETS
from lib.embedders import Embedder
from lib.index import ReplicaIndex
from lib.st_cache import cached_embedder, cached_index, cached_missing_files, manifest_mtime

VERDICT_BADGES = {
    "copy": ("COPY", "red", ":material/warning:"),
    "similar": ("SIMILAR", "orange", ":material/help:"),
    "none": ("NO CLEAR MATCH", "gray", ":material/search_off:"),  # never a clearance tick
}
"""The one vocabulary for verdicts on every page: verdict -> (words, colour, icon)."""

INDEX_KEY = "index_path"
"""st.session_state key holding the path (str) of the index picked in the sidebar."""
PENDING_INDEX_KEY = "pending_index_path"
"""A page asks the sidebar to switch index by setting this; app.py applies it next run."""
LAST_BATCH_KEY = "last_generated_batch"
"""st.session_state key: a folder (str) of the last batch generated in the app."""
LAST_BATCH_TARGET_KEY = "last_generated_target"
"""st.session_state key: where the Generate page searched that batch, a dict with ``index``
(path, str) and ``image_size`` (px, int; None for full-size images). A bundled model's batch is
searched in its own training subset at its size; the Distributions page measures it there."""


def select_index(path: str) -> None:
    """Make ``path`` the sidebar's index from the next run on (call ``st.rerun()`` after).

    The sidebar picker is already drawn when a page runs and Streamlit refuses writes to a
    drawn widget's key, so the choice is parked under :data:`PENDING_INDEX_KEY` and applied
    by :func:`apply_pending_index` before the picker is drawn.
    """
    st.session_state[PENDING_INDEX_KEY] = str(path)


def apply_pending_index() -> None:
    """Move a parked index choice into the picker's key (call before drawing the picker)."""
    if PENDING_INDEX_KEY in st.session_state:
        st.session_state[INDEX_KEY] = st.session_state.pop(PENDING_INDEX_KEY) or None


def current_index() -> ReplicaIndex | None:
    """The index picked in the sidebar (cached, shared read-only), or None with a message."""
    leave_folder_mode()
    if INDEX_KEY not in st.session_state:
        # opened directly (Streamlit's folder mode on a fresh server): draw the sidebar here
        render_sidebar()
    path = st.session_state.get(INDEX_KEY)
    if not path:
        st.info("No index yet: build one on the **Indexes** page, or run `make setup`.")
        return None
    return index_at(path)


def current_embedder() -> Embedder | None:
    """The embedder of the current index, loaded once per process."""
    path = st.session_state.get(INDEX_KEY)
    return embedder_at(path) if path else None


def index_at(path: str | Path) -> ReplicaIndex | None:
    """The index at ``path`` (cached, shared read-only), or None with a message."""
    try:
        return cached_index(str(path), manifest_mtime(path))
    except Exception as exc:
        show_error("This index could not be opened", exc)
        return None


def embedder_at(path: str | Path) -> Embedder | None:
    """The embedder the index at ``path`` was built with, loaded once per process, or None
    with a message."""
    try:
        return cached_embedder(str(path), manifest_mtime(path))
    except Exception as exc:
        show_error("The embedding model could not be loaded", exc)
        return None


def show_error(what: str, exc: BaseException | str, hint: str = "") -> None:
    """A readable error: what failed, why, and what to do next; never a traceback."""
    message = f"**{what}.** {exc}"
    if hint:
        message += f"\n\n{hint}"
    st.error(message, icon=":material/error:")


def streamlit_progress(label: str) -> Any:
    """A lib.progress callback drawing an ``st.progress`` bar; returns (callback, bar).

    Long work runs in phases (embedding, then calibrating verdicts, then the approximate
    index): when a new phase starts counting from zero, the phases before it stay named as
    done, so the bar never reads as a restart ("Embedding images 802/802 done ·
    calibrating verdicts: 25/801")."""
    bar = st.progress(0.0, text=label)
    state: dict[str, Any] = {"phase": label, "done": 0, "total": 0, "finished": []}

    def callback(done: int, total: int, message: str = "") -> None:
        phase = state["phase"]
        if message and message != phase and total and done < state["done"]:
            state["finished"].append(f"{phase} {state['total']:,}/{state['total']:,} done")
            phase = state["phase"] = message
        state["done"], state["total"] = done, total
        fraction = min(1.0, done / total) if total else 0.0
        count = f"{done:,}/{total:,}" if total else f"{done:,}"
        current = f"{phase}: {count}"
        if message and message != phase:
            current += f" · {message}"
        bar.progress(fraction, text=" · ".join([*state["finished"], current]))

    return callback, bar


def placeholder(text: str, height: int) -> Image.Image:
    """A light grey picture of ``height`` pixels saying ``text``, drawn where a training
    image cannot be shown, so that a row of pictures keeps one height."""
    from PIL import ImageDraw

    width = max(height, 8)
    image = Image.new("RGB", (width, height), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    words, lines = text.split(), [""]
    for word in words:  # wrap to the width
        trial = f"{lines[-1]} {word}".strip()
        if draw.textlength(trial) <= width - 12:
            lines[-1] = trial
        else:
            lines.append(word)
    y = max(4, (height - 14 * len(lines)) // 2)
    for line in lines:
        draw.text((6, y), line, fill=(90, 90, 90))
        y += 14
    return image


def file_label(path: str) -> str:
    """A short name for a file path."""
    return Path(path).name


def _attribution(index_sources: list[str]) -> str:
    """The licence line for the data behind the index."""
    lines = []
    text = " ".join(index_sources).lower()
    for key, info in DATASETS.items():
        if key.split("-")[0] in text:
            lines.append(f"{info.title}: {info.attribution}")
    return "  \n".join(lines) or "Data: your own images (their licences apply)."


INDEX_PARAM = "index"
"""The address's query parameter naming the sidebar's index (its folder name, never a path)."""


def session_start_index(indexes: list[str], asked: str | None, default_name: str) -> str:
    """The index a browser session starts on: the one its address names (``?index=NAME``),
    else the configured default (``default_index`` in replica.toml, the bundled index by
    default), else the first listed. Each session keeps its own choice from then on, so
    one visitor's new index never changes what another searches.

    >>> session_start_index(["/x/a", "/x/openmoji-sscd"], None, "openmoji-sscd")
    '/x/openmoji-sscd'
    """
    by_name = {Path(p).name: p for p in reversed(indexes)}  # the first of equal names wins
    for name in (asked, default_name):
        if name and name in by_name:
            return by_name[name]
    return indexes[0]


def render_sidebar() -> None:
    """Index picker and index card; app.py draws it before every page."""
    st.session_state.setdefault(INDEX_KEY, None)
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
        current = session_start_index(
            indexes, st.query_params.get(INDEX_PARAM), config.default_index
        )
    # set on every run: when another visitor's build adds an index, the picker's options
    # change and Streamlit makes it a new widget, which would start on the first option
    st.session_state[INDEX_KEY] = current
    st.sidebar.selectbox(
        "Training-set index",
        indexes,
        key=INDEX_KEY,
        format_func=lambda p: Path(p).name,
        label_visibility="collapsed",
    )
    path = st.session_state[INDEX_KEY]
    if st.query_params.get(INDEX_PARAM) != Path(path).name:
        st.query_params[INDEX_PARAM] = Path(path).name  # a link opens this same view
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
    missing = cached_missing_files(path, manifest_mtime(path))
    if missing:
        st.sidebar.caption(
            f"{missing.capitalize()}: their matches are found and scored, and shown by "
            "caption instead of a picture."
        )
    if index.calibration_stale:
        st.sidebar.caption(
            "This index's stored calibration was measured before its last images were "
            "added (that write was stopped): its verdicts use a calibration recomputed when "
            "it was opened (without pixel alignment). The next change to the index, or "
            "`python -m lib index calibrate`, stores a full one."
        )
    elif index.recalibrated:
        st.sidebar.caption(
            "This index was calibrated by an older version of Replica: its verdicts use a "
            "calibration recomputed when it was opened (without pixel alignment). To store a "
            "full one, run `python -m lib index calibrate` on it."
        )
    st.sidebar.caption(_attribution(m.sources))


# --- added for issue 13 (the first hour in the app) -------------------------------------

MEASURE_BATCH_KEY = "measure_batch_now"
"""st.session_state key: set (True) by Generate's 'Measure this batch' button; the
Distributions page then measures the last generated batch at once, without another click."""

GLOSSARY = {
    "calibrated score": "How far the best match stands above the query's other close matches "
    "(raw cosine minus the mean of the next two that are not duplicates of it). Unrelated "
    "images of the same kind score near 0; copies score well above 0.",
    "raw cosine": "Similarity of the two images' SSCD fingerprints, from -1 to 1; 1 means "
    "identical. Look-alike collections (emoji, clothes on white) score high even when unrelated.",
    "training vs training": "Each training image against its nearest training image outside "
    "its own family of variants (skin tones, colourways): how close distinct works of this set "
    "already are to each other, the floor for any comparison.",
    "held-out vs training": "Real images never used for training, searched in the same training "
    "set: how close a new, honest image of the same kind comes. Generations that copy score "
    "above these.",
    "null percentile": "Of the index's own images searched as if they were new (each "
    "without its family of variants), the share whose evidence is weaker than this query's: "
    "99% means only 1 in 100 unrelated images of this collection looks this much like a copy.",
    "alignment": "How well the query's pixels line up with a training image (normalised "
    "cross-correlation in grey, also mirrored, cropped or pasted smaller; 1 = identical). "
    "It catches copies that a blur, JPEG or downscale hides from the fingerprint.",
    "uAP": "Micro average precision: all (query, match) pairs of the benchmark ranked by score in "
    "one list; 1.0 means every true copy scores above every wrong match. The SSCD paper's main "
    "figure.",
    "mAP": "Mean average precision: per query, how high its true source is ranked among its "
    "matches, averaged over queries (1.0 = always first).",
    "recall@P90": "The share of copies found at the score threshold where 90% of what is flagged "
    "is right (precision 90%).",
    "recall@k": "The share of copies whose true source is among the first k matches.",
}
"""Plain-word definitions of the terms the pages show, for ``help=`` tooltips."""

MIN_CALIBRATION_IMAGES = 20
"""An index needs at least this many images to measure its own thresholds (see
lib.calibration.fit_calibration); a smaller one uses the default thresholds."""


def is_calibrated(index: ReplicaIndex) -> bool:
    """Whether the index's verdict thresholds were measured on its own images."""
    return index.calibration.null_sample > 0


def threshold_note(index: ReplicaIndex, label: str = "") -> str:
    """One or two sentences: the copy threshold that applies in ``index`` and what it rests on
    (why it differs from another index's), or plainly that the index is too small to calibrate."""
    cal = index.calibration
    name = label or f"this index ({index.count:,} images)"
    if not is_calibrated(index):
        return (
            f"**{name.capitalize()} is too small to calibrate**: with fewer than "
            f"{MIN_CALIBRATION_IMAGES} images (or too few unrelated pairs) it cannot measure how "
            f"unrelated images of its kind score, so verdicts rest on default thresholds (copy "
            f"at calibrated ≥ {cal.copy_threshold:+.3f}, or raw ≥ {cal.identical_threshold:.2f}) "
            "that were not measured on these images. Treat them as rough; add images to calibrate."
        )
    aligned = (
        f", or pixels that line up at ≥ {cal.alignment_threshold:.3f}" if cal.uses_alignment else ""
    )
    return (
        f"Copy at calibrated ≥ {cal.copy_threshold:+.3f}{aligned} (or raw ≥ "
        f"{cal.identical_threshold:.2f}) in {name}: together, what only "
        f"{cal.false_alarm_rate:.0%} of {cal.null_sample:,} unrelated images of this index reach. "
        "Each index measures its own threshold, so it differs between indexes."
    )


def verdict_badge(verdict: str) -> str:
    """The verdict in the one vocabulary of every page, as a coloured Markdown badge."""
    text, colour, icon = VERDICT_BADGES[verdict]
    return f":{colour}-badge[{icon} {text}]"


def display_path(path: str | Path, roots: tuple[Path, ...] | list[Path] = ()) -> str:
    """A file or folder as a user should see it: relative to the first of ``roots`` (or of
    the data folder, the configured image roots and upload root) that holds it, else only its
    name. Never the absolute server path."""
    from lib.defaults import DATA_DIR

    target = Path(path).resolve()
    config = load_config()
    candidates = [*roots, config.upload_root, *config.image_roots, DATA_DIR]
    for root in candidates:
        base = Path(root).resolve()
        if target == base:
            return base.name
        if base in target.parents:
            return str(target.relative_to(base))
    return target.name


def show_unexpected_error(exc: BaseException) -> None:
    """What a user sees instead of Streamlit's error box when a page fails unexpectedly."""
    import logging

    logging.getLogger("replica.app").error("page failed", exc_info=exc)
    show_error(
        "Something went wrong on this page",
        f"{type(exc).__name__}: {exc}",
        "Your inputs are kept. Change them (another file, folder or setting) and try again, "
        "or reload the page; the details are in the server's log.",
    )


def run_guarded(page: Any) -> None:
    """Run the page that ``st.navigation`` returned; an exception no page caught becomes a
    readable message (:func:`show_unexpected_error`), never Streamlit's raw error box."""
    try:
        page.run()
    except Exception as exc:  # the last line of defence; st.stop and st.rerun pass through
        show_unexpected_error(exc)


def progress_while(
    bar: Any, label: str, work: Any, start: float, end: float, expected_s: float = 10.0
) -> Any:
    """``work()`` (a function without arguments) run in a worker thread while ``bar`` (an
    ``st.progress`` element) moves from ``start`` towards ``end`` (0..1) with the seconds
    spent, for steps that report no progress of their own (loading a model, a pipeline
    call). Returns what ``work`` returns; its exception is raised here."""
    import math
    import time
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as WaitTimeout

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(work)
        while True:
            elapsed = time.monotonic() - t0
            fraction = start + (end - start) * (1.0 - math.exp(-elapsed / max(expected_s, 0.1)))
            bar.progress(min(end, fraction), text=f"{label} · {elapsed:.0f} s")
            try:
                return future.result(timeout=0.25)
            except WaitTimeout:
                continue


def staged_progress(bar: Any, label: str, start: float, end: float) -> Any:
    """A lib.progress callback drawing on ``bar`` between ``start`` and ``end`` (0..1), so
    that several steps share one bar."""

    def callback(done: int, total: int, message: str = "") -> None:
        fraction = min(1.0, done / total) if total else 0.0
        suffix = f" · {message}" if message else ""
        bar.progress(start + (end - start) * fraction, text=f"{label}: {done}/{total}{suffix}")

    return callback


def leave_folder_mode() -> None:
    """Run again under app.py's navigation when Streamlit ran this page on its own.

    A fresh server starts in Streamlit's old ``pages/`` folder mode until app.py calls
    ``st.navigation``; a first visit straight to a page's address (``/distributions``) then
    runs that page without app.py: no navigation, no sidebar card, no error guard, and it
    stays so until someone opens the app's root. Leaving that mode and rerunning gives the
    page its app around it from the first visit on.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
