"""What a report says, as plain rows of text that both renderers (HTML, PDF) lay out: the
scores in plain words, the identities, the summary table of a case and a scan's rates."""

from __future__ import annotations

from pathlib import PurePath

from lib.evidence.document import PAPER, Document, verdict_words
from lib.evidence.finding import Finding
from lib.evidence.scan_record import RATE_MEANINGS, ScanRecord
from lib.results import percentile_words

Rows = list[tuple[str, str]]


def _percentile(verdict: str, value: float | None) -> str:
    """Where the evidence sits among unrelated images, framed as the verdict's sentence
    frames it (:func:`lib.results.percentile_words`: never more evidence than the verdict)."""
    if value is None:
        return "not measured (the index is too small to calibrate)"
    return percentile_words(verdict, value).replace("unrelated images", "unrelated images of "
                                                    "this collection")  # fmt: skip


def summary_line(finding: Finding) -> str:
    """The verdict and why, in one paragraph, for the top of a finding."""
    m = finding.match
    return (
        f"Verdict: {verdict_words(m.verdict)}. {finding.result.get('explanation', '')} "
        f"Raw cosine {m.score:.3f} (the measure of {PAPER}), calibrated score "
        f"{m.calibrated:+.3f}."
    )


def score_rows(finding: Finding) -> Rows:
    """The scores of a finding in plain words."""
    m, r = finding.match, finding.result
    paper = "above" if m.score > 0.5 else "not above"
    rows = [
        ("Verdict", verdict_words(m.verdict)),
        ("Why", str(r.get("explanation", ""))),
        (
            "Raw cosine",
            f"{m.score:.4f} (1 = identical fingerprints; the measure of {PAPER}, {paper} its 0.5)",
        ),
        (
            "Calibrated score",
            f"{m.calibrated:+.4f} (how far the match stands above this image's other close "
            f"matches; copy at {float(r.get('copy_threshold', 0.0)):+.4f} or more)",
        ),
        ("Among unrelated images", _percentile(m.verdict, m.null_percentile)),
        (
            "Operating point",
            f"{finding.settings['false_alarm_rate'] * 100:g}% of unrelated images flagged",
        ),
    ]
    if m.alignment is not None:
        needed = r.get("alignment_threshold")
        tail = "" if needed is None else f"; copy at {float(needed):.4f} or more"
        rows.append(("Pixel alignment", f"{m.alignment:.4f} (1 = pixels line up exactly{tail})"))
    return rows


def identity_rows(finding: Finding) -> Rows:
    """Everything the finding rests on, by name and hash."""
    q, m, ix, e = finding.query, finding.match, finding.index, finding.embedder
    versions = ", ".join(f"{k} {v}" for k, v in finding.versions.items())
    withheld = [("Training picture", f"not included in this report: {m.file_note}")]
    return [
        ("Query file", q.name),
        ("Query SHA-256", q.sha256),
        ("Training file", PurePath(m.path).name),
        ("Training SHA-256", m.sha256 + ("" if m.file_available else " (index record)")),
        *(withheld if m.file_note else []),
        ("Training image", f"#{m.id}, rank {m.rank}; caption: {m.caption or '(none)'}"),
        ("Source and licence", f"{_name(m.source) if m.source else '(unknown)'}: {m.licence}"),
        ("Index", f"{ix.name} ({ix.count:,} images)"),
        ("Index manifest SHA-256", ix.manifest_sha256),
        ("Embedder", f"{e['name']} (weights {_name(e.get('weights_file'))})"),
        ("Weights SHA-256", str(e["weights_sha256"])),
        ("Packages", versions),
        ("Made at", finding.created),
    ]


def _name(path: object) -> str:
    """A file or folder's own name, never where it lies on the machine that made the
    report (the record inside the report keeps the full path for ``verify``)."""
    return PurePath(str(path)).name if path else "none"


def scan_title(scan: ScanRecord) -> str:
    """The scan's heading: the generated folder by name."""
    return f"the generations in {_name(scan.settings['generated'])}"


def summary_header() -> list[str]:
    return ["#", "Query", "Index", "Training image", "Verdict", "Calibrated", "Raw", "Note"]


def summary_rows(document: Document) -> list[list[str]]:
    """One row per finding (scans' galleries not included), for the case's first table."""
    return [
        [
            str(n),
            f.query.name,
            f.index.name,
            f"#{f.match.id} {f.match.caption or f.match.name}",
            verdict_words(f.match.verdict),
            f"{f.match.calibrated:+.3f}",
            f"{f.match.score:.3f}",
            f.note,
        ]
        for n, f in enumerate(document.findings, start=1)
    ]


def scan_rows(scan: ScanRecord) -> list[list[str]]:
    """The scan's rates for both sets, with what each means."""
    rows = [["Measure", "Generated", "Reference", "What it means"]]
    for key, meaning in RATE_MEANINGS.items():
        g, ref = scan.generated.get(key, 0.0), scan.reference.get(key, 0.0)
        fmt = "{:.1%}" if "rate" in key else "{:.3f}"
        rows.append([key.replace("_", " "), fmt.format(g), fmt.format(ref), meaning])
    rows.append(["images", str(scan.generated.get("n", 0)), str(scan.reference.get("n", 0)), ""])
    return rows


def scan_identity_rows(scan: ScanRecord) -> Rows:
    ix, e = scan.index, scan.embedder
    return [
        ("Generated images", f"the folder {_name(scan.settings['generated'])}"),
        (
            "Reference",
            f"the folder {_name(scan.settings['reference'])}"
            if scan.settings.get("reference")
            else "training vs training (no held-out set)",
        ),
        ("Unreadable files skipped", str(scan.skipped)),
        ("Index", f"{ix.name} ({ix.count:,} images)"),
        ("Index manifest SHA-256", ix.manifest_sha256),
        ("Embedder", f"{e['name']} (weights {_name(e.get('weights_file'))})"),
        ("Weights SHA-256", str(e["weights_sha256"])),
        (
            "Copy threshold",
            f"calibrated {scan.thresholds['copy']:+.4f} or raw {scan.thresholds['identical']:.2f}",
        ),
        (
            "Known error rates",
            scan.sensitivity_note or "not measured for this index (recalibrating it measures them)",
        ),
        ("Packages", ", ".join(f"{k} {v}" for k, v in scan.versions.items())),
        ("Made at", scan.created),
    ]
