"""Case page: the findings collected in this session's case (from Search, Generate and
Distributions), a note on each, and one export of the whole case as PDF and HTML with a
summary table first. A case is opened by its name; nothing lists other people's cases."""

from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from lib.evidence.case import Case, CaseError, check_name, new_case_name
from lib.evidence.document import verdict_words
from lib.evidence.finding import Finding
from lib.results import percentile_words
from pages.case_ui import CASE_KEY, case_store, current_case_name, render_document
from pages.common import leave_folder_mode, show_error, verdict_badge

# st.session_state key: (case name, its last update, PDF bytes, HTML bytes) of the export
EXPORT_KEY = "case_export"


def picture(finding: Finding, name: str) -> Image.Image | None:
    data = finding.picture(name)
    return Image.open(io.BytesIO(data)) if data else None


def open_by_name() -> None:
    left, right = st.columns([3, 1])
    typed = left.text_input(
        "Open a case by its name",
        key="case_open_name",
        placeholder="case-20261130-1a2b3c4d",
        help="Cases are private to whoever knows their name: give it to a colleague to share.",
    )
    right.write("")
    if right.button("Open this case", key="case_open"):
        try:
            name = check_name(typed)
        except CaseError as exc:
            show_error("That is not a case name", exc)
            return
        if not store.exists(name):
            st.warning(f"There is no case called **{name}**. Check the spelling.")
            return
        st.session_state[CASE_KEY] = name
        st.session_state.pop(EXPORT_KEY, None)
        st.rerun()


def show_finding(case: Case, position: int, finding: Finding) -> None:
    m = finding.match
    with st.container(border=True):
        st.markdown(
            f"**{position + 1}. {finding.query.name}** → training image #{m.id} "
            f"({m.caption or m.name}) in **{finding.index.name}** &nbsp; "
            f"{verdict_badge(m.verdict)}"
        )
        left, middle, right = st.columns([1, 1, 2])
        for col, name, caption in ((left, "query", "query"), (middle, "match", "training image")):
            image = picture(finding, name)
            if image is not None:
                col.image(image, caption=caption, width=150)
        among = (
            ""
            if m.null_percentile is None
            else f" · {percentile_words(m.verdict, m.null_percentile)}"
        )
        right.caption(
            f"Calibrated score {m.calibrated:+.3f} · raw cosine {m.score:.3f}{among}. "
            f"Recorded {finding.created[:16].replace('T', ' ')} UTC."
        )
        key = f"case_note_{finding.created}_{finding.query.sha256[:8]}_{m.id}"
        note = right.text_area("Note", value=finding.note, key=key, height=80)
        save, remove = right.columns(2)
        if save.button("Save note", key=f"{key}_save"):
            store.set_note(case.name, position, note)
            st.session_state.pop(EXPORT_KEY, None)
            st.rerun()
        if remove.button("Remove from case", key=f"{key}_remove"):
            store.remove_finding(case.name, position)
            st.session_state.pop(EXPORT_KEY, None)
            st.rerun()


def show_export(case: Case) -> None:
    st.subheader("Export the whole case")
    st.caption(
        "One PDF and one HTML file: a summary table first, then each finding with its "
        "pictures, scores in plain words, the identity of every file, index and model used, "
        "and the command that reproduces it. `python -m lib verify FILE` checks a report."
    )
    stamp = (case.name, case.updated)
    export = st.session_state.get(EXPORT_KEY)
    if st.button("Prepare the export", key="case_prepare", icon=":material/picture_as_pdf:"):
        with st.spinner("Laying out the case…"):
            pdf, html = render_document(case.document())
        export = (*stamp, pdf, html)
        st.session_state[EXPORT_KEY] = export
    if export is not None and tuple(export[:2]) == stamp:
        left, right = st.columns(2)
        left.download_button(
            "Download case (PDF)",
            export[2],
            f"{case.name}.pdf",
            "application/pdf",
            key="case_pdf",
            icon=":material/download:",
        )
        right.download_button(
            "Download case (HTML)",
            export[3],
            f"{case.name}.html",
            "text/html",
            key="case_html",
            icon=":material/download:",
        )


leave_folder_mode()  # a first visit straight to /case runs again under app.py
st.header("Case: collect findings, write notes, export them")
store = case_store()
name = current_case_name()
st.markdown(
    f"Current case: **{name}**. Keep this name to open the case again later; nobody else "
    "sees it unless you give them the name."
)
open_by_name()
if st.button("Start a new case", key="case_new"):
    st.session_state[CASE_KEY] = new_case_name()
    st.session_state.pop(EXPORT_KEY, None)
    st.rerun()

if not store.exists(name):
    st.info(
        "This case is empty. Add findings with **Add to case** on the Search page (beside "
        "each query, or in the pair view), on the Generate page, or add a replication scan on "
        "the Distributions page."
    )
    st.stop()
try:
    case = store.load(name)
except CaseError as exc:
    show_error("This case could not be read", exc)
    st.stop()

st.dataframe(
    [
        {
            "#": n,
            "query": f.query.name,
            "index": f.index.name,
            "training image": f"#{f.match.id} {f.match.caption or f.match.name}",
            "verdict": verdict_words(f.match.verdict),
            "calibrated": round(f.match.calibrated, 3),
            "raw": round(f.match.score, 3),
            "note": f.note,
        }
        for n, f in enumerate(case.findings, start=1)
    ],
    hide_index=True,
    key="case_summary",
)
for position, finding in enumerate(case.findings):
    show_finding(case, position, finding)
for scan in case.scans:
    with st.container(border=True):
        g = scan.generated
        st.markdown(
            f"**Replication scan** of {g.get('n', 0)} generations against "
            f"**{scan.index.name}**: copy rate {g.get('copy_rate', 0.0):.1%}, share above raw "
            f"0.5 {g.get('rate_above_threshold', 0.0):.1%}; {len(scan.findings)} most-copied "
            "generations kept with their matches."
        )
if case.findings or case.scans:
    show_export(case)
