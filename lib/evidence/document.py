"""A report document: one or more findings and scans, written as JSON, HTML or PDF, and read
back from any of the three (the HTML carries the JSON in a ``<script type=
"application/json">`` block, the PDF as an attached file, ``replica-evidence.json``).

The JSON read back is the record ``verify`` re-runs; the report pictures are left out of it
(the HTML and PDF show them).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.evidence.finding import FINDING_KIND, Finding, FindingError, now
from lib.evidence.scan_record import ScanRecord

DOCUMENT_KIND = "replica-evidence"
DOCUMENT_VERSION = 1
ATTACHMENT_NAME = "replica-evidence.json"
SCRIPT_ID = "replica-evidence"
SUFFIXES = (".pdf", ".html", ".json")
VERDICT_WORDS = {"copy": "COPY", "similar": "SIMILAR", "none": "NO CLEAR MATCH"}


class DocumentError(ValueError):
    """A file is not a Replica report, or its embedded record cannot be read."""


@dataclass
class Document:
    """What a report holds: ``findings`` and ``scans``, with a title; ``case``: the case it
    was exported from (empty for a single report)."""

    title: str
    findings: list[Finding] = field(default_factory=list)
    scans: list[ScanRecord] = field(default_factory=list)
    case: str = ""
    created: str = field(default_factory=now)

    def to_dict(self, *, pictures: bool = False) -> dict[str, Any]:
        return {
            "kind": DOCUMENT_KIND,
            "version": DOCUMENT_VERSION,
            "title": self.title,
            "case": self.case,
            "created": self.created,
            "findings": [f.to_dict(pictures=pictures) for f in self.findings],
            "scans": [s.to_dict(pictures=pictures) for s in self.scans],
            "verify_command": "python -m lib verify REPORT [--index INDEX_DIR]",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Document:
        if data.get("kind") == FINDING_KIND:  # a bare finding
            finding = Finding.from_dict(data)
            return cls(title=finding.title, findings=[finding])
        if data.get("kind") != DOCUMENT_KIND:
            raise DocumentError("this is not a Replica report (no Replica record inside)")
        try:
            return cls(
                title=str(data.get("title", "")),
                findings=[Finding.from_dict(f) for f in data.get("findings", [])],
                scans=[ScanRecord.from_dict(s) for s in data.get("scans", [])],
                case=str(data.get("case", "")),
                created=str(data.get("created", "")),
            )
        except FindingError as exc:
            raise DocumentError(str(exc)) from exc


def caveats(false_alarm_rate: float) -> list[str]:
    """What the numbers mean and what they do not, in plain words."""
    percent = f"{false_alarm_rate * 100:g}"
    return [
        "Similarity is evidence of copying, not a legal conclusion: whether a use is "
        "permitted (licence, fair use, quotation) is for people and courts to judge.",
        f"A copy verdict at the {percent}% operating point means that about {percent} in 100 "
        "unrelated images of this collection would also be flagged: a verdict can be wrong, "
        "and the pictures should be looked at.",
        "The scores compare two images' copy-detection fingerprints (SSCD) and their pixels. "
        "They say nothing about who made either image or which came first.",
        "The null (the histogram) is measured on this index's own images searched as if they "
        "were new; another collection has its own, so scores from different indexes do not "
        "compare directly.",
    ]


def verdict_words(verdict: str) -> str:
    return VERDICT_WORDS.get(verdict, verdict.upper())


def json_for_html(data: dict[str, Any]) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` can end it early)."""
    text = json.dumps(data, ensure_ascii=False, indent=1)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_document(document: Document, path: str | os.PathLike[str]) -> Path:
    """Write ``document`` as PDF, HTML or JSON (by the suffix), atomically: a complete file
    replaces any old one, never a half-written one.

    Raises:
        DocumentError: the suffix is not .pdf, .html or .json.
        OSError: the file cannot be written.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix == ".json":
        data = json.dumps(document.to_dict(), indent=2, ensure_ascii=False).encode("utf-8")
    elif suffix == ".html":
        from lib.evidence.report_html import render_html

        data = render_html(document).encode("utf-8")
    elif suffix == ".pdf":
        from lib.evidence.report_pdf import render_pdf

        data = render_pdf(document)
    else:
        raise DocumentError(f"{out.name}: a report is written as {', '.join(SUFFIXES)}")
    write_atomic(out, data)
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file beside it, flushed and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_SCRIPT = re.compile(
    r'<script type="application/json" id="' + SCRIPT_ID + r'">(.*?)</script>', re.DOTALL
)


def read_document(path: str | os.PathLike[str]) -> Document:
    """The record inside a report (.pdf, .html or .json).

    Raises:
        DocumentError: not a Replica report, or its record is missing or damaged.
        OSError: the file cannot be read.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".json":
        text = file.read_text(encoding="utf-8")
    elif suffix == ".html":
        found = _SCRIPT.search(file.read_text(encoding="utf-8"))
        if not found:
            raise DocumentError(f"{file.name} holds no Replica record (it may have been re-saved)")
        text = found.group(1)
    elif suffix == ".pdf":
        text = _pdf_attachment(file)
    else:
        raise DocumentError(f"{file.name}: verify reads {', '.join(SUFFIXES)} reports")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"the record inside {file.name} is damaged: {exc}") from exc
    if not isinstance(data, dict):
        raise DocumentError(f"the record inside {file.name} is not a Replica record")
    return Document.from_dict(data)


def _pdf_attachment(file: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        attachments = PdfReader(file).attachments
    except (PdfReadError, ValueError, KeyError) as exc:
        raise DocumentError(f"{file.name} is not a readable PDF: {exc}") from exc
    if ATTACHMENT_NAME not in attachments:
        raise DocumentError(f"{file.name} has no attached {ATTACHMENT_NAME}: not a Replica report")
    return attachments[ATTACHMENT_NAME][0].decode("utf-8")
