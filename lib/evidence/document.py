"""A report document: one or more findings and scans, written as JSON, HTML or PDF, and read
back from any of the three (the HTML carries the JSON in a ``<script type=
"application/json">`` block, the PDF as an attached file, ``replica-evidence.json``).

The JSON read back is the record ``verify`` re-runs; the report pictures are left out of it
(the HTML and PDF show them).
"""

from __future__ import annotations

import json
import os
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


PAPER = (
    'Somepalli, Singla, Goldblum, Geiping and Goldstein, "Diffusion Art or Digital Forgery? '
    'Investigating Data Replication in Diffusion Models", CVPR 2023'
)
"""The paper whose method Replica applies, named wherever its measure is quoted."""

TERMS: list[tuple[str, str]] = [
    (
        "COPY",
        "the evidence that the query reproduces this training image is stronger than "
        "all but the stated share of unrelated images of the collection show",
    ),
    (
        "SIMILAR",
        "the two images look alike more than most unrelated pairs do, but not enough "
        "to call a copy at this setting: look at the pictures",
    ),
    (
        "NO CLEAR MATCH",
        "no training image stands out; this is not a clearance: a copy can be missed",
    ),
    (
        "Raw cosine",
        "how alike the two images' copy-detection fingerprints (SSCD) are, from "
        "-1 to 1 (1: identical); the measure of the paper, which used 0.5 as its threshold",
    ),
    (
        "Calibrated score",
        "the raw cosine minus that of the query's other close matches (its "
        "neighbourhood): how far this match stands out from images that merely look alike",
    ),
    (
        "Unrelated images (the null)",
        "this collection's own images searched as if they were "
        "new, each without its near-identical siblings: what scores look like when nothing was "
        "copied",
    ),
    (
        "Setting (operating point)",
        "the share of unrelated images that would be flagged as "
        "copies: the known false-alarm rate of the verdict",
    ),
    (
        "Pixel alignment",
        "how well the two pictures' pixels line up after the best crop or "
        "placement, from -1 to 1 (1: identical pixels)",
    ),
]
"""Every term a report uses, with its one-line plain meaning (both renderers list them)."""


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


SCRIPT_START = f'<script type="application/json" id="{SCRIPT_ID}">'
MAX_REPORT_BYTES = 256 * 1024 * 1024
"""A report file larger than this is refused unread (a report of dozens of findings with
their pictures is a few tens of MB)."""
MAX_RECORD_ITEMS = 2_000_000
"""Objects, arrays and list items a report's record may hold (counted before it is
parsed): ``[{},{},...]`` in 128 MB parses to several GB of Python objects."""
MAX_RECORD_BYTES = 128 * 1024 * 1024
"""The record (JSON) may hold at most this many bytes, decompressed: a PDF attachment
that inflates to more is refused while it inflates, so memory stays bounded."""


def read_document(path: str | os.PathLike[str]) -> Document:
    """The record inside a report (.pdf, .html or .json), every field checked
    (:mod:`lib.evidence.record_check`) so that ``verify`` can use it.

    Memory is bounded: files over :data:`MAX_REPORT_BYTES` are refused unread, records
    over :data:`MAX_RECORD_BYTES` (a PDF attachment: while it inflates) too.

    Example:
        >>> try:
        ...     read_document("notes.txt")
        ... except DocumentError as exc:
        ...     print(exc)
        not a Replica report: notes.txt: verify reads .pdf, .html, .json reports

    Raises:
        DocumentError: not a Replica report, for any reason (the message starts with
            "not a Replica report:" and says why).
        OSError: the file cannot be read (FileNotFoundError when it is missing).
    """
    from lib.evidence.record_check import check_record
    from lib.json_shape import ShapeError

    file = Path(path)
    try:
        text = _record_text(file)
        items = text.count("{") + text.count("[") + text.count(",")
        if items > MAX_RECORD_ITEMS:  # pictures are base64: no braces or commas in them
            raise DocumentError(
                f"its record holds {items:,} JSON values, more than a report's "
                f"{MAX_RECORD_ITEMS:,} (it would decode to far more memory than its size)"
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"its record is damaged: {exc}") from None
        except RecursionError:
            raise DocumentError("its record is nested too deeply") from None
        try:
            check_record(data, "its record")
            return Document.from_dict(data)
        except (ShapeError, FindingError) as exc:
            raise DocumentError(str(exc)) from None
    except DocumentError as exc:
        raise DocumentError(f"not a Replica report: {file.name}: {exc}") from None


def _record_text(file: Path) -> str:
    """The record's JSON text, by the file's suffix. Raises DocumentError, OSError."""
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise DocumentError(f"verify reads {', '.join(SUFFIXES)} reports")
    limit = MAX_RECORD_BYTES if suffix == ".json" else MAX_REPORT_BYTES
    if file.stat().st_size > limit:
        raise DocumentError(f"it is larger than {_size(limit)}")
    with file.open("rb") as fh:
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise DocumentError(f"it is larger than {_size(limit)}")
    if suffix == ".pdf":
        raw = _pdf_attachment(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"its record is not UTF-8 text ({exc})") from None
    if suffix == ".html":
        text = _html_record(text)
    return text


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def _html_record(page: str) -> str:
    """The JSON inside the page's record ``<script>`` (found in one linear pass)."""
    start = page.find(SCRIPT_START)
    end = page.find("</script>", start + len(SCRIPT_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise DocumentError("it holds no Replica record (it may have been re-saved)")
    record = page[start + len(SCRIPT_START) : end]
    if len(record.encode("utf-8")) > MAX_RECORD_BYTES:
        raise DocumentError(f"its record is larger than {_size(MAX_RECORD_BYTES)}")
    return record


def _pdf_attachment(data: bytes) -> bytes:
    """The bytes of the PDF's ``replica-evidence.json`` attachment, inflated at most to
    :data:`MAX_RECORD_BYTES` (pypdf's limits, set for this read only)."""
    import io

    from pypdf import PdfReader, apply_configuration, get_configuration

    limits = get_configuration().with_overwrites(
        **{
            name: MAX_RECORD_BYTES
            for name in (
                "maximum_declared_stream_length",
                "array_based_stream_maximum_output_length",
                "jbig2_maximum_output_length",
                "lzw_maximum_output_length",
                "run_length_maximum_output_length",
                "zlib_maximum_output_length",
                "brotli_maximum_output_length",
                "stream_decoding_work_maximum_length",
            )
        }
    )
    try:
        with apply_configuration(limits):
            reader = PdfReader(io.BytesIO(data))
            found = [f for f in reader.attachment_list if f.name == ATTACHMENT_NAME]
            content = found[0].content if found else None
    # pypdf raises many kinds of exception on a damaged or hostile file (its own
    # PyPdfError, LimitReachedError, and ValueError, KeyError, TypeError, AttributeError,
    # IndexError, RecursionError, zlib.error from its parsers): all mean "not readable"
    except Exception as exc:
        if type(exc).__name__ == "LimitReachedError":
            raise DocumentError(
                f"its content inflates to more than {_size(MAX_RECORD_BYTES)}"
            ) from None
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise DocumentError(
            f"it is not a readable PDF ({type(exc).__name__}{': ' if reason else ''}{reason})"
        ) from None
    if content is None:
        raise DocumentError(f"it has no attached {ATTACHMENT_NAME}")
    if len(content) > MAX_RECORD_BYTES:
        raise DocumentError(f"its record is larger than {_size(MAX_RECORD_BYTES)}")
    return bytes(content)
