"""Shared UI for reports and cases (not a page): the buttons that make a report of one
finding or add it to the current case, and this browser session's case.

A session starts with a fresh case name that nobody else knows; a case is shared only when
someone opens it by name on the Case page.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from lib.app_config import load_config
from lib.embedders import Embedder, EmbedderUnavailable
from lib.evidence import CaseStore, Document, make_finding
from lib.evidence.case import CaseError, check_name, new_case_name
from lib.evidence.finding import Finding, FindingError
from lib.evidence.report_html import render_html
from lib.evidence.report_pdf import render_pdf
from lib.evidence.scan_record import make_scan_record
from lib.index import ReplicaIndex
from lib.replication import ScanReport
from pages.common import show_error

CASE_KEY = "case_name"
"""st.session_state key: the name (str) of this session's current case."""
REPORTS_KEY = "evidence_reports"
"""st.session_state key: reports made in this session, widget key -> (stem, PDF, HTML)."""


def case_store() -> CaseStore:
    """The cases under the configured ``case_root`` (``data/cases`` by default)."""
    return CaseStore(load_config().case_root)


CASE_PARAM = "case"
"""The address's query parameter carrying this session's case name, so a reload (or the
link) reopens the case instead of starting an empty one under a new name."""


def current_case_name() -> str:
    """This session's case: the one the address names (``?case=NAME``) when the session
    starts, else a fresh, unguessable name until one is opened by name. The name is kept
    in the address from then on."""
    if CASE_KEY not in st.session_state:
        st.session_state[CASE_KEY] = _case_in_address() or new_case_name()
    name = str(st.session_state[CASE_KEY])
    if st.query_params.get(CASE_PARAM) != name:
        st.query_params[CASE_PARAM] = name
    return name


def keep_case_in_address() -> None:
    """app.py, on every run: once a session has a case, every page's address carries its
    name; a new session opened on such an address takes that case back."""
    if CASE_KEY in st.session_state or _case_in_address():
        current_case_name()


def _case_in_address() -> str | None:
    asked = st.query_params.get(CASE_PARAM)
    try:
        return check_name(asked) if asked else None
    except CaseError:
        return None


def widget_key(*parts: object) -> str:
    """A short, stable widget key for a finding's buttons."""
    return "ev_" + hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def render_document(document: Document) -> tuple[bytes, bytes]:
    """(PDF, HTML) bytes of a report."""
    return render_pdf(document), render_html(document).encode("utf-8")


def _make(
    index: ReplicaIndex,
    label: str,
    data: bytes,
    *,
    match_id: int | None,
    top_k: int,
    false_alarm_rate: float,
    regions: bool,
    embedder: Embedder,
    query_path: str = "",
) -> Finding | None:
    try:
        return make_finding(
            index,
            label,
            data,
            query_path=query_path,
            match_id=match_id,
            top_k=top_k,
            false_alarm_rate=false_alarm_rate,
            regions=regions,
            embedder=embedder,
        )
    except (FindingError, EmbedderUnavailable) as exc:
        show_error("The finding could not be recorded", exc)
    except OSError:
        show_error("The finding could not be recorded", "a file it needs could not be read")
    return None


def add_to_case(finding: Finding) -> None:
    """Append a finding to this session's case and say so."""
    name = current_case_name()
    try:
        case = case_store().add_finding(name, finding)
    except (CaseError, OSError) as exc:
        show_error("The finding could not be added to the case", exc)
        return
    st.success(
        f"Added to case **{name}** ({len(case.findings)} finding(s)). Write notes and export "
        "it on the **Case** page.",
        icon=":material/folder_open:",
    )


def finding_actions(
    index: ReplicaIndex,
    label: str,
    data: bytes,
    *,
    match_id: int | None,
    top_k: int,
    false_alarm_rate: float,
    regions: bool,
    embedder: Embedder,
    where: str,
) -> None:
    """ "Make a report" (then PDF and HTML downloads) and "Add to case" for one finding:
    ``label``'s image (``data``, its bytes) against the match ``match_id`` (None: top)."""
    key = widget_key(where, label, match_id, top_k, false_alarm_rate, regions, str(index.path))
    reports: dict[str, tuple[str, bytes, bytes]] = st.session_state.setdefault(REPORTS_KEY, {})
    cols = st.columns([1, 1, 1, 1])
    settings = dict(
        match_id=match_id,
        top_k=top_k,
        false_alarm_rate=false_alarm_rate,
        regions=regions,
        embedder=embedder,
    )
    if cols[0].button("Make a report", key=f"{key}_make", icon=":material/description:"):
        with st.spinner("Making the report…"):
            finding = _make(index, label, data, **settings)
            if finding is not None:
                document = Document(title=f"Replica report: {finding.title}", findings=[finding])
                pdf, html = render_document(document)
                stem = f"replica-report-{Path(label).stem}-{finding.match.id}"
                reports[key] = (stem, pdf, html)
    if cols[1].button("Add to case", key=f"{key}_case", icon=":material/create_new_folder:"):
        with st.spinner("Recording the finding…"):
            finding = _make(index, label, data, **settings)
        if finding is not None:
            add_to_case(finding)
    if key in reports:
        stem, pdf, html = reports[key]
        cols[2].download_button(
            "Download report (PDF)",
            pdf,
            f"{stem}.pdf",
            "application/pdf",
            key=f"{key}_pdf",
            icon=":material/download:",
        )
        cols[3].download_button(
            "Download report (HTML)",
            html,
            f"{stem}.html",
            "text/html",
            key=f"{key}_html",
            icon=":material/download:",
        )


def add_files_to_case(
    index: ReplicaIndex, paths: list[Path], embedder: Embedder, false_alarm_rate: float
) -> None:
    """Record each image file as a finding (its top match) and add them all to the case."""
    bar = st.progress(0.0, text="Recording the findings")
    findings = []
    for n, path in enumerate(paths, start=1):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        finding = _make(
            index,
            path.name,
            data,
            match_id=None,
            top_k=5,
            false_alarm_rate=false_alarm_rate,
            regions=False,
            embedder=embedder,
            query_path=str(path),
        )
        if finding is not None:
            findings.append(finding)
        bar.progress(n / max(len(paths), 1), text=f"Recording the findings: {n}/{len(paths)}")
    bar.empty()
    for finding in findings[:-1]:
        _quiet_add(finding)
    if findings:
        add_to_case(findings[-1])


def _quiet_add(finding: Finding) -> None:
    try:
        case_store().add_finding(current_case_name(), finding)
    except (CaseError, OSError) as exc:
        show_error("A finding could not be added to the case", exc)


def scan_actions(
    index: ReplicaIndex, report: ScanReport, generated: Path, reference: str, embedder: Embedder
) -> None:
    """ "Make a report of this scan" (then PDF and HTML downloads) and "Add this scan to
    the case"."""
    key = widget_key("scan", str(generated), reference, str(index.path), report.generated.n)
    reports: dict[str, tuple[str, bytes, bytes]] = st.session_state.setdefault(REPORTS_KEY, {})
    cols = st.columns(4)
    make = cols[0].button(
        "Make a report of this scan", key=f"{key}_make", icon=":material/description:"
    )
    add = cols[1].button(
        "Add this scan to the case", key=f"{key}_case", icon=":material/create_new_folder:"
    )
    if make or add:
        with st.spinner("Recording the scan and its most-copied generations…"):
            try:
                record = make_scan_record(
                    index,
                    report,
                    generated=str(generated),
                    reference=reference or None,
                    embedder=embedder,
                )
            except (EmbedderUnavailable, OSError) as exc:
                show_error("The scan could not be recorded", exc)
                return
        if make:
            title = f"Replica replication scan: {generated.name}"
            pdf, html = render_document(Document(title=title, scans=[record]))
            reports[key] = (f"replica-scan-{generated.name}", pdf, html)
        if add:
            try:
                case = case_store().add_scan(current_case_name(), record)
            except (CaseError, OSError) as exc:
                show_error("The scan could not be added to the case", exc)
            else:
                st.success(f"Scan added to case **{case.name}**. Export it on the **Case** page.")
    if key in reports:
        stem, pdf, html = reports[key]
        cols[2].download_button(
            "Download scan report (PDF)",
            pdf,
            f"{stem}.pdf",
            "application/pdf",
            key=f"{key}_pdf",
            icon=":material/download:",
        )
        cols[3].download_button(
            "Download scan report (HTML)",
            html,
            f"{stem}.html",
            "text/html",
            key=f"{key}_html",
            icon=":material/download:",
        )
