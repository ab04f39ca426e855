"""The HTML report: one self-contained file (pictures as data URIs, no script, no server)
that also carries the report's record as JSON for ``verify``."""

from __future__ import annotations

from html import escape

from lib.evidence.content import (
    Rows,
    identity_rows,
    scan_identity_rows,
    scan_rows,
    scan_title,
    score_rows,
    summary_header,
    summary_line,
    summary_rows,
)
from lib.evidence.document import SCRIPT_ID, TERMS, Document, caveats, json_for_html, verdict_words
from lib.evidence.finding import Finding
from lib.evidence.scan_record import ScanRecord

STYLE = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-top:2px solid #ddd;padding-top:.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:4px 8px;
vertical-align:top;text-align:left}th{background:#f2f2f2}
.pair{display:flex;gap:16px;align-items:flex-end}.pair figure{margin:0}
.pair img{height:280px;width:auto;max-width:100%;object-fit:contain}
figcaption{font-size:.85em;color:#555}code{background:#f5f5f5;padding:2px 4px;word-break:break-all}
.verdict{font-weight:bold;padding:2px 8px;border-radius:4px;color:white}
.copy{background:#c0392b}.similar{background:#d68910}.none{background:#1e8449}
.caveats{background:#fff8e1;padding:.6em 1.2em;border-left:4px solid #f0b400}
"""


def _img(b64: str | None, alt: str) -> str:
    if not b64:
        return f"<p><em>{escape(alt)}: not available</em></p>"
    return f'<img src="data:image/png;base64,{b64}" alt="{escape(alt)}">'


def _rows(rows: Rows) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _caveats(rate: float) -> str:
    items = "".join(f"<li>{escape(c)}</li>" for c in caveats(rate))
    heading = "<h3>What this means, and what it does not</h3>"
    terms = "".join(f"<li><strong>{escape(t)}</strong>: {escape(m)}</li>" for t, m in TERMS)
    return (
        f'<div class="caveats">{heading}<ul>{items}</ul><h3>Terms used</h3><ul>{terms}</ul></div>'
    )


def finding_html(finding: Finding, number: int | None = None) -> str:
    """One finding's section: pictures, comparison, scores, identity, reproduction, caveats."""
    m, p = finding.match, finding.pictures
    label = f"Finding {number}: " if number else ""
    verdict = f'<span class="verdict {escape(m.verdict)}">{verdict_words(m.verdict)}</span>'
    parts = [
        f"<h2>{escape(label + finding.title)} {verdict}</h2>",
        f"<p>{escape(summary_line(finding))}</p>",
        f"<p><strong>Note:</strong> {escape(finding.note)}</p>" if finding.note else "",
        "<h3>Images</h3><div class='pair'>",
        f"<figure>{_img(p.get('query'), 'query')}<figcaption>query: "
        f"{escape(finding.query.name)}</figcaption></figure>",
        f"<figure>{_img(p.get('match'), 'training image')}<figcaption>training image "
        f"#{m.id}: {escape(m.caption or m.name)}</figcaption></figure></div>",
        "<h4>The next matches</h4>",
        _img(p.get("strip"), "next matches"),
        _table(
            ["rank", "training image", "raw", "calibrated"],
            [
                [
                    str(x["rank"]),
                    f"#{x['id']} {x.get('caption') or ''}",
                    f"{x['score']:.3f}",
                    f"{x['calibrated']:+.3f}",
                ]
                for x in finding.result.get("matches", [])[1:]
            ],
        ),
        "<h3>Comparison</h3>",
        _img(p.get("difference"), "difference image"),
        "<p>Absolute difference of the two images, contrast-stretched: black = identical.</p>",
    ]
    if p.get("regions"):
        parts += [
            _img(p.get("regions"), "matching regions"),
            "<p>Matching regions: boxes of one colour match each other (thickest = best); "
            "red tint = the query's areas whose crops match best.</p>",
        ]
    parts += [
        "<h3>Scores in plain words</h3>",
        _rows(score_rows(finding)),
        _img(p.get("null"), "null histogram"),
        "<h3>Identity of everything used</h3>",
        _rows(identity_rows(finding)),
        "<h3>Reproduce and check</h3>",
        f"<p>Make this finding again: <code>{escape(finding.readable_command())}</code></p>",
        "<p>Check this report: <code>python -m lib verify THIS_FILE [--index INDEX_DIR]</code></p>",
        _caveats(finding.settings["false_alarm_rate"]),
    ]
    return "\n".join(parts)


def scan_html(scan: ScanRecord, number: int | None = None) -> str:
    """A scan's section: histogram, rates with their meaning, most-copied gallery, identity."""
    label = f"Scan {number}: " if number else "Scan: "
    rows = scan_rows(scan)
    gallery = "".join(
        f"<div class='pair'><figure>{_img(f.pictures.get('query'), 'generation')}<figcaption>"
        f"{escape(f.query.name)}</figcaption></figure><figure>"
        f"{_img(f.pictures.get('match'), 'match')}<figcaption>#{f.match.id} "
        f"{escape(f.match.caption or f.match.name)}: {verdict_words(f.match.verdict)}, "
        f"calibrated {f.match.calibrated:+.3f}, raw {f.match.score:.3f}</figcaption></figure>"
        "</div>"
        for f in scan.findings
    )
    return "\n".join(
        [
            f"<h2>{escape(label + scan_title(scan))}</h2>",
            _img(scan.pictures.get("histogram"), "histogram"),
            _table(rows[0], rows[1:]),
            "<h3>Most-copied generations beside their matches</h3>",
            gallery or "<p>No generation could be read.</p>",
            "<h3>Identity of everything used</h3>",
            _rows(scan_identity_rows(scan)),
            f"<p>Run this scan again: <code>{escape(scan.readable_command())}</code></p>",
            _caveats(scan.settings["false_alarm_rate"]),
        ]
    )


def render_html(document: Document) -> str:
    """The whole report as one HTML page (UTF-8 text)."""
    parts = [
        f"<h1>{escape(document.title)}</h1>",
        f"<p>Made {escape(document.created)} by Replica.</p>",
    ]
    if document.case or len(document.findings) > 1:
        parts += ["<h2>Summary</h2>", _table(summary_header(), summary_rows(document))]
    many = len(document.findings) + len(document.scans) > 1
    parts += [finding_html(f, n if many else None) for n, f in enumerate(document.findings, 1)]
    parts += [scan_html(s, n if many else None) for n, s in enumerate(document.scans, 1)]
    record = json_for_html(document.to_dict())
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(document.title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + f'<script type="application/json" id="{SCRIPT_ID}">{record}</script>'
        + "</body></html>"
    )
