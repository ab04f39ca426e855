"""Reports from anyone: ``verify`` and :func:`read_document` refuse every damaged or
hostile PDF, HTML or JSON report with "not a Replica report: ..." (exit 2, one line, no
traceback), in bounded memory, and every field of a record is checked before use.

A real finding (a planted copy in a small index) and a scan holding it make the valid
record that the tests then damage."""

from __future__ import annotations

import base64
import io
import json
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lib.evidence.document as document
from lib.evidence import Document, make_finding, read_document, write_document
from lib.evidence.document import ATTACHMENT_NAME, SCRIPT_ID, DocumentError
from lib.evidence.scan_record import ScanRecord
from lib.index import open_index
from tests.cli_runner import run_cli
from tests.evidence_helpers import small_index
from tests.hostile import json_paths


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The record of a real report: one finding (query copies training image #5) and one
    scan holding the same finding."""
    index_path, query = small_index(tmp_path_factory.mktemp("hostile"))
    index = open_index(index_path)
    finding = make_finding(index, query.name, query.read_bytes(), query_path=str(query))
    assert finding.match.id == 5
    scan = ScanRecord(
        created=finding.created,
        index=finding.index,
        embedder=finding.embedder,
        settings={"generated": str(query.parent), "false_alarm_rate": 0.02},
        generated={"n": 1},
        reference={},
        thresholds={"copy": 0.12, "identical": 0.97, "paper": 0.5},
        skipped=0,
        findings=[finding],
        versions={},
    )
    data: dict[str, Any] = Document(title="t", findings=[finding], scans=[scan]).to_dict()
    return data


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def html_with(record_text: str) -> str:
    return f'<html><script type="application/json" id="{SCRIPT_ID}">{record_text}</script></html>'


def pdf_with(attachment: bytes, *, inflating_to: int = 0) -> bytes:
    """A one-page PDF with ``attachment`` as ``replica-evidence.json``; ``inflating_to``:
    instead, a Flate stream of that many zero bytes (compressed a thousand times)."""
    from pypdf import PdfWriter
    from pypdf.generic import EncodedStreamObject, NameObject

    writer = PdfWriter()
    writer.add_blank_page(100, 100)
    writer.add_attachment(ATTACHMENT_NAME, attachment)
    if inflating_to:
        squeeze = zlib.compressobj(9)
        chunk = b"\0" * (1 << 20)
        raw = b"".join(squeeze.compress(chunk) for _ in range(inflating_to >> 20))
        stream = EncodedStreamObject()
        stream._data = raw + squeeze.flush()
        stream[NameObject("/Filter")] = NameObject("/FlateDecode")
        files = next(iter(writer.attachment_list)).pdf_object["/EF"]
        for key in ("/F", "/UF"):
            if key in files:
                files[NameObject(key)] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def refused(done: Any) -> None:
    """``verify``'s exit for a file that is not a report: 2, one line, no traceback."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert "not a Replica report" in done.stdout + done.stderr
    assert len((done.stdout + done.stderr).strip().splitlines()) == 1


# ---------------------------------------------------------------- hostile files
def test_an_attachment_that_inflates_to_400_mb_is_refused_in_bounded_memory(
    tmp_path: Path,
) -> None:
    bomb = tmp_path / "bomb.pdf"
    bomb.write_bytes(pdf_with(b"{}", inflating_to=400 << 20))
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DocumentError, match="inflates to more than 128 MB"):
            read_document(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 350 << 20, f"peak {peak >> 20} MB: the attachment was inflated whole"
    refused(run_cli("verify", str(bomb)))


def test_records_that_are_not_utf8_or_nested_100k_deep_exit_2(
    tmp_path: Path, record: dict[str, Any]
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    latin = json.dumps(record, ensure_ascii=False).replace("t", "\xe9", 1).encode("latin-1")
    files = {
        "latin.pdf": pdf_with(latin),
        "deep.pdf": pdf_with(deep.encode()),
        "deep.json": deep.encode(),
        "deep.html": html_with(deep).encode(),
        "latin.json": latin,
        "half.html": html_with(json.dumps(record))[:-30].encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DocumentError, match=f"^not a Replica report: {name}: "):
            read_document(tmp_path / name)
    for name in ("latin.pdf", "deep.pdf", "deep.json"):
        refused(run_cli("verify", str(tmp_path / name)))


def test_files_too_large_are_refused_unread(tmp_path: Path) -> None:
    for name in ("huge.json", "huge.pdf", "huge.html"):
        with (tmp_path / name).open("wb") as fh:
            fh.truncate(10 << 30)  # sparse: 10 GB that take no disk, and must not be read
        tracemalloc.start()
        try:
            with pytest.raises(DocumentError, match="is larger than"):
                read_document(tmp_path / name)
            assert tracemalloc.get_traced_memory()[1] < 10 << 20
        finally:
            tracemalloc.stop()


def test_a_page_with_many_unclosed_record_tags_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "tags.html"
    page.write_text(html_with("{}")[:-17] * 20_000, encoding="utf-8")  # no </script>
    with pytest.raises(DocumentError, match="holds no Replica record"):
        read_document(page)


# ---------------------------------------------------------------- record fields
def _set(data: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    out: Any = json.loads(json.dumps(data))
    *parents, last = path.split(".")
    place = out
    for step in parents:
        place = place[int(step)] if isinstance(place, list) else place[step]
    if value is KeyError:
        del place[last]
    else:
        place[int(last) if isinstance(place, list) else last] = value
    result: dict[str, Any] = out
    return result


FIELD_DAMAGE = [
    ("findings", "abc", "findings must be a list, not a string"),
    ("findings.0", "abc", "findings[0] must be an object, not a string"),
    ("findings.0.match.id", "5", "findings[0].match.id must be an integer, not a string"),
    ("findings.0.match", KeyError, "findings[0].match is missing"),
    ("findings.0.match.extra", 1, "findings[0].match has unknown key(s) 'extra'"),
    ("findings.0.settings.top_k", 10**12, "settings.top_k must be 1..10000"),
    ("findings.0.settings.top_k", True, "settings.top_k must be an integer, not true"),
    ("findings.0.settings.false_alarm_rate", "x", "false_alarm_rate must be a number"),
    ("findings.0.settings.false_alarm_rate", 2.0, "false_alarm_rate must be between 0 and 1"),
    ("findings.0.query.data_b64", "not base64!", "query.data_b64 is not base64"),
    ("findings.0.query.path", "/tmp/a\0b", "query.path holds a NUL byte"),
    ("findings.0.index.count", 10**30, "findings[0].index.count is out of range"),
    ("findings.0.null.counts", [1, "2"], "findings[0].null.counts[1] must be an integer"),
    ("findings.0.kind", "other", "findings[0] is not a Replica finding"),
    ("scans.0.thresholds", "high", "scans[0].thresholds must be an object, not a string"),
    ("scans.0.findings.0.match.score", None, "scans[0].findings[0].match.score must be a number"),
    ("scans.0.skipped", 1.5, "scans[0].skipped must be an integer, not a number"),
    ("kind", "something", "it holds no Replica record"),
]


@pytest.mark.parametrize(("path", "value", "problem"), FIELD_DAMAGE)
def test_every_field_of_a_record_is_checked_before_use(
    tmp_path: Path, record: dict[str, Any], path: str, value: object, problem: str
) -> None:
    report = write_json(tmp_path / "report.json", _set(record, path, value))
    with pytest.raises(DocumentError) as caught:
        read_document(report)
    assert str(caught.value).startswith("not a Replica report: report.json: ")
    assert problem in str(caught.value)


def test_a_valid_record_reads_back_in_each_format(tmp_path: Path, record: dict[str, Any]) -> None:
    written = read_document(write_json(tmp_path / "report.json", record))
    for suffix in (".html", ".pdf"):
        again = read_document(write_document(written, tmp_path / f"report{suffix}"))
        assert again.findings[0].match == written.findings[0].match
        assert len(again.scans[0].findings) == 1


def test_verify_refuses_damaged_records_on_the_command_line(
    tmp_path: Path, record: dict[str, Any]
) -> None:
    for path, value, _ in FIELD_DAMAGE[:3]:
        report = write_json(tmp_path / "report.json", _set(record, path, value))
        refused(run_cli("verify", str(report)))


# ---------------------------------------------------------------- fuzzing
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples each run: CI stays reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["replica-evidence", "replica-finding", "\0", "../x"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> object:
    """``valid`` with one to three places deleted or given another JSON value."""
    data: Any = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in json_paths(data) if p and p[-1] != "data_b64"]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return data


def _read_or_refuse(path: Path) -> None:
    """The property: a Document, or DocumentError saying "not a Replica report"."""
    try:
        read_document(path)
    except DocumentError as exc:
        assert str(exc).startswith(f"not a Replica report: {path.name}: ")


@FUZZ
@given(data=st.data())
def test_fuzz_json_records(
    tmp_path_factory: pytest.TempPathFactory, record: dict[str, Any], data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    value = data.draw(JSON_VALUES | mutated(record) | mutated(record["findings"][0]))
    _read_or_refuse(write_json(folder / "report.json", value))
    (folder / "report.html").write_text(html_with(json.dumps(value)), encoding="utf-8")
    _read_or_refuse(folder / "report.html")


@FUZZ
@given(data=st.data())
def test_fuzz_pdf_and_html_bytes(
    tmp_path_factory: pytest.TempPathFactory, record: dict[str, Any], data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    small = _set(record, "findings.0.query.data_b64", base64.b64encode(b"x").decode())
    good = pdf_with(json.dumps(small).encode())
    how = data.draw(st.sampled_from(["random", "truncate", "flips", "html"]))
    if how == "random":
        blob = data.draw(st.binary(max_size=3000))
    elif how == "truncate":
        blob = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "flips":
        damaged = bytearray(good)
        for _ in range(data.draw(st.integers(1, 10))):
            damaged[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
        blob = bytes(damaged)
    else:
        blob = html_with(data.draw(st.text(max_size=300))).encode("utf-8", "surrogatepass")
    suffix = ".html" if how == "html" else ".pdf"
    (folder / f"report{suffix}").write_bytes(blob)
    _read_or_refuse(folder / f"report{suffix}")


def test_limits_are_module_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The record cap applies to every format (a small cap shows it without 128 MB files)."""
    monkeypatch.setattr(document, "MAX_RECORD_BYTES", 1000)
    text = json.dumps({"kind": "replica-evidence", "title": "x" * 2000})
    for name, blob in (
        ("big.json", text.encode()),
        ("big.html", html_with(text).encode()),
        ("big.pdf", pdf_with(text.encode())),
    ):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DocumentError, match=r"larger than|inflates to more than"):
            read_document(tmp_path / name)
