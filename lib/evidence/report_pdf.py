"""The PDF report, laid out by reportlab (platypus), with the report's record attached as
``replica-evidence.json`` (pypdf) so that ``verify`` reads it back.

Text uses DejaVu Sans where Debian's fonts-dejavu-core is installed (captions in any
script), else Helvetica.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

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
from lib.evidence.document import (
    ATTACHMENT_NAME,
    TERMS,
    Document,
    caveats,
    verdict_words,
)
from lib.evidence.finding import Finding
from lib.evidence.scan_record import ScanRecord

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
VERDICT_COLOURS = {"copy": "#c0392b", "similar": "#d68910", "none": "#1e8449"}


def _fonts() -> tuple[str, str]:
    """(regular, bold) font names, registering DejaVu Sans when it is installed."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    regular, bold = DEJAVU / "DejaVuSans.ttf", DEJAVU / "DejaVuSans-Bold.ttf"
    if regular.is_file() and bold.is_file():
        if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
            pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold)))
        return "DejaVuSans", "DejaVuSans-Bold"
    return "Helvetica", "Helvetica-Bold"


class _Layout:
    """Paragraph styles and flowable helpers for one PDF."""

    def __init__(self) -> None:
        from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

        regular, bold = _fonts()
        base = getSampleStyleSheet()
        self.body = ParagraphStyle(
            "body", base["BodyText"], fontName=regular, fontSize=9, leading=11.5
        )
        self.small = ParagraphStyle("small", self.body, fontSize=7.5, leading=9.5)
        self.h1 = ParagraphStyle("h1", base["Heading1"], fontName=bold, fontSize=16)
        # a heading never ends a page: it keeps with what follows it
        self.h2 = ParagraphStyle("h2", base["Heading2"], fontName=bold, fontSize=13, keepWithNext=1)
        self.h3 = ParagraphStyle(
            "h3", base["Heading3"], fontName=bold, fontSize=10.5, keepWithNext=1
        )
        self.width = 0.0

    def p(self, text: str, style: Any = None) -> Any:
        from reportlab.platypus import Paragraph

        return Paragraph(escape(text), style or self.body)

    def image(self, b64: str | None, max_w: float, max_h: float) -> Any:
        from reportlab.platypus import Image

        if not b64:
            return self.p("(picture not available)", self.small)
        data = base64.b64decode(b64)
        from PIL import Image as PILImage

        w, h = PILImage.open(io.BytesIO(data)).size
        scale = min(max_w / w, max_h / h)
        return Image(io.BytesIO(data), width=w * scale, height=h * scale)

    def same_height(self, pictures: list[str | None], max_w: float, max_h: float) -> list[Any]:
        """Pictures (base64 PNG) drawn at one common height: the tallest at which each fits
        ``max_w`` points wide, at most ``max_h``."""
        from PIL import Image as PILImage

        sizes = [
            PILImage.open(io.BytesIO(base64.b64decode(b))).size if b else (1, 1) for b in pictures
        ]
        height = min([max_h] + [max_w * h / w for w, h in sizes])
        return [
            self.image(b, max_w, height) if b else self.p("(picture not available)", self.small)
            for b in pictures
        ]

    def rows(self, rows: Rows) -> Any:
        return self.table(
            [[self.p(k, self.small), self.p(v, self.small)] for k, v in rows],
            [self.width * 0.26, self.width * 0.74],
        )

    def grid(self, header: list[str], rows: list[list[str]], widths: list[float]) -> Any:
        cells = [[self.p(c, self.small) for c in header]]
        cells += [[self.p(c, self.small) for c in r] for r in rows]
        return self.table(cells, [self.width * w for w in widths], header=True)

    def table(self, cells: list[list[Any]], widths: list[float], header: bool = False) -> Any:
        from reportlab.lib import colors
        from reportlab.platypus import Table, TableStyle

        style = [
            ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#bbbbbb")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        if header:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")))
        else:
            style.append(("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f4f4f4")))
        table = Table(cells, colWidths=widths, repeatRows=1 if header else 0)
        table.setStyle(TableStyle(style))
        return table

    def caveats(self, rate: float) -> list[Any]:
        from reportlab.platypus import KeepTogether, Paragraph

        out = [self.p("What this means, and what it does not", self.h3)]
        out += [self.p("• " + c) for c in caveats(rate)]
        terms: list[Any] = [self.p("Terms used", self.h3)]
        terms += [Paragraph(f"<b>{escape(t)}</b>: {escape(m)}", self.small) for t, m in TERMS]
        return [KeepTogether(out), KeepTogether(terms)]  # no bullet left alone on a page


def _finding(lay: _Layout, finding: Finding, number: int | None) -> list[Any]:
    from reportlab.platypus import KeepTogether, PageBreak, Paragraph, Spacer, Table

    m, pics = finding.match, finding.pictures
    label = f"Finding {number}: " if number else ""
    colour = VERDICT_COLOURS.get(m.verdict, "#333333")
    out: list[Any] = [
        Paragraph(
            f"{escape(label + finding.title)} "
            f"<font color='{colour}'>[{verdict_words(m.verdict)}]</font>",
            lay.h2,
        )
    ]
    out.append(lay.p(summary_line(finding)))
    if finding.note:
        out.append(lay.p(f"Note: {finding.note}"))
    half = lay.width / 2 - 6
    pair = Table(
        [
            lay.same_height([pics.get("query"), pics.get("match")], half, 170),
            [
                lay.p(f"query: {finding.query.name}", lay.small),
                lay.p(f"training image #{m.id}: {m.caption or m.name}", lay.small),
            ],
        ],
        colWidths=[half + 6, half + 6],
    )
    out += [
        lay.p("Images", lay.h3),
        pair,
        lay.p("The next matches", lay.h3),
        lay.image(pics.get("strip"), lay.width, 80),
    ]
    nxt = [
        [
            str(x["rank"]),
            f"#{x['id']} {x.get('caption') or ''}",
            f"{x['score']:.3f}",
            f"{x['calibrated']:+.3f}",
        ]
        for x in finding.result.get("matches", [])[1:]
    ]
    if nxt:
        out.append(
            lay.grid(["rank", "training image", "raw", "calibrated"], nxt, [0.08, 0.62, 0.15, 0.15])
        )
    out += [
        lay.p("Comparison", lay.h3),
        Table(
            [
                [
                    lay.image(pics.get("difference"), 140, 140),
                    lay.p(
                        "Difference image: the absolute difference of the two images, "
                        "letterboxed to the same square and contrast-stretched. Black = "
                        "identical; bright = where they differ.",
                        lay.small,
                    ),
                ]
            ],
            colWidths=[150, lay.width - 150],
        ),
    ]
    if pics.get("regions"):
        out += [
            lay.image(pics.get("regions"), lay.width, 200),
            lay.p(
                "Matching regions: boxes of one colour match each other (thickest = best); "
                "red tint = the query's areas whose crops match best.",
                lay.small,
            ),
        ]
    out += [
        KeepTogether(
            [
                lay.p("Scores in plain words", lay.h3),
                lay.rows(score_rows(finding)),
                Spacer(1, 4),
                lay.image(pics.get("null"), lay.width, 190),
            ]
        ),
    ]
    out += [
        lay.p("Identity of everything used", lay.h3),
        lay.rows(identity_rows(finding)),
        lay.p("Reproduce and check", lay.h3),
        lay.p(f"Make this finding again: {finding.readable_command()}", lay.small),
        lay.p("Check this report: python -m lib verify THIS_FILE [--index INDEX_DIR]", lay.small),
    ]
    out += lay.caveats(finding.settings["false_alarm_rate"])
    out.append(PageBreak())
    return out


def _gallery_caption(f: Finding) -> str:
    m = f.match
    return (
        f"{f.query.name} → #{m.id} {m.caption or m.name}: {verdict_words(m.verdict)}, "
        f"calibrated {m.calibrated:+.3f}, raw {m.score:.3f}"
    )


def _scan(lay: _Layout, scan: ScanRecord, number: int | None) -> list[Any]:
    from reportlab.platypus import PageBreak, Table

    label = f"Scan {number}: " if number else "Scan: "
    rows = scan_rows(scan)
    out: list[Any] = [
        lay.p(label + scan_title(scan), lay.h2),
        lay.image(scan.pictures.get("histogram"), lay.width, 260),
        lay.grid(rows[0], rows[1:], [0.2, 0.12, 0.12, 0.56]),
        lay.p("Most-copied generations beside their matches", lay.h3),
    ]
    cell = lay.width / 4 - 4
    for f in scan.findings:
        out.append(
            Table(
                [
                    [
                        lay.image(f.pictures.get("query"), cell, 110),
                        lay.image(f.pictures.get("match"), cell, 110),
                        lay.p(
                            _gallery_caption(f),
                            lay.small,
                        ),
                    ]
                ],
                colWidths=[cell + 4, cell + 4, 2 * cell],
            )
        )
    out += [
        lay.p("Identity of everything used", lay.h3),
        lay.rows(scan_identity_rows(scan)),
        lay.p(f"Run this scan again: {scan.readable_command()}", lay.small),
    ]
    out += lay.caveats(scan.settings["false_alarm_rate"])
    out.append(PageBreak())
    return out


def _layout_pdf(document: Document) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=16 * mm,
        rightMargin=16 * mm,
        topMargin=14 * mm,
        bottomMargin=14 * mm,
        title=document.title,
        author="Replica",
        subject="Image copy-detection evidence",
    )
    lay = _Layout()
    lay.width = doc.width
    made = lay.p(f"Made {document.created} by Replica.")
    story: list[Any] = [lay.p(document.title, lay.h1), made]
    if document.case or len(document.findings) > 1:
        story += [
            lay.p("Summary", lay.h2),
            lay.grid(
                summary_header(),
                summary_rows(document),
                [0.04, 0.14, 0.15, 0.2, 0.11, 0.11, 0.08, 0.17],
            ),
        ]
    many = len(document.findings) + len(document.scans) > 1
    for n, finding in enumerate(document.findings, 1):
        story += _finding(lay, finding, n if many else None)
    for n, scan in enumerate(document.scans, 1):
        story += _scan(lay, scan, n if many else None)
    if story and type(story[-1]).__name__ == "PageBreak":
        story.pop()
    doc.build(story)
    return buf.getvalue()


def render_pdf(document: Document) -> bytes:
    """The whole report as PDF bytes, with its record attached as JSON."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_layout_pdf(document))))
    record = json.dumps(document.to_dict(), indent=1, ensure_ascii=False).encode("utf-8")
    writer.add_attachment(ATTACHMENT_NAME, record)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
