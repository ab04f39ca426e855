"""Cases on disk and scan reports: several findings against several indexes, notes, a
restart, atomic writes, one export with a summary table first; a scan as a report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lib.evidence import CaseStore, make_finding, read_document, verify_document, write_document
from lib.evidence.case import CASE_FILE, CaseError, new_case_name
from lib.index import open_index
from tests.cli_runner import run_cli
from tests.evidence_helpers import PDFTOPPM, render_pages, small_index
from tests.synthetic import scene

needs_pdftoppm = pytest.mark.skipif(not PDFTOPPM, reason="needs pdftoppm (poppler-utils)")


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("case")
    return [
        small_index(root / "a", name="scenes-a"),
        small_index(root / "b", range(40, 64), name="scenes-b"),
    ]


def test_a_case_keeps_findings_and_notes_across_a_restart(
    two_indexes: list[tuple[Path, Path]], tmp_path: Path
) -> None:
    store = CaseStore(tmp_path / "cases")
    name = new_case_name()
    for index_dir, query in two_indexes:
        finding = make_finding(open_index(index_dir), query.name, query.read_bytes())
        store.add_finding(name, finding)
    store.set_note(name, 1, "against the second collection")
    reopened = CaseStore(tmp_path / "cases").load(name)  # a new process
    assert [f.index.name for f in reopened.findings] == ["scenes-a", "scenes-b"]
    assert reopened.findings[0].index.path != reopened.findings[1].index.path
    assert reopened.findings[1].note == "against the second collection"
    assert reopened.findings[0].picture("query") is not None, "pictures are kept"
    folder = tmp_path / "cases" / name
    assert sorted(p.name for p in folder.iterdir()) == [".lock", CASE_FILE], "no temporary file"
    json.loads((folder / CASE_FILE).read_text())
    store.remove_finding(name, 0)
    assert len(store.load(name).findings) == 1


def test_case_names_are_checked_and_unknown_cases_say_so(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    for bad in ("", "../etc", "a/b", ".hidden", "x" * 65):
        with pytest.raises(CaseError):
            store.open_or_create(bad)
    with pytest.raises(CaseError, match="no case called"):
        store.load("never-made")
    assert store.open_or_create("Smith v. Model 2").findings == []
    assert new_case_name() != new_case_name()


@needs_pdftoppm
def test_a_case_exports_as_one_pdf_and_html_with_a_summary_first(
    two_indexes: list[tuple[Path, Path]], tmp_path: Path
) -> None:
    store = CaseStore(tmp_path / "cases")
    for n, (index_dir, query) in enumerate(two_indexes):
        store.add_finding(
            "my case", make_finding(open_index(index_dir), query.name, query.read_bytes())
        )
        store.set_note("my case", n, f"note {n}")
    document = store.load("my case").document()
    pdf = write_document(document, tmp_path / "case.pdf")
    html = write_document(document, tmp_path / "case.html")
    pages = render_pages(pdf, tmp_path / "pages")
    assert len(pages) >= 3
    from pypdf import PdfReader

    first = PdfReader(pdf).pages[0].extract_text()
    assert "Summary" in first and "note 0" in first and "note 1" in first
    assert first.index("Summary") < first.index("Finding 1")
    text = html.read_text(encoding="utf-8")
    assert text.index("Summary") < text.index("Finding 1") < text.index("Finding 2")
    assert len(read_document(pdf).findings) == 2
    report = verify_document(pdf)
    assert report.ok, report.lines()
    assert len(report.findings) == 2
    # the checker's copies of both indexes, matched to their findings by folder name
    moved = [tmp_path / "checker" / path.name for path, _ in two_indexes]
    for (path, _), copy in zip(two_indexes, moved, strict=True):
        shutil.copytree(path, copy)
    done = run_cli("verify", str(pdf), "--index", str(moved[0]), "--index", str(moved[1]))
    assert done.returncode == 0, done.stdout
    assert "VERIFIED: all 12 checks pass" in done.stdout


@needs_pdftoppm
def test_scan_writes_a_report_that_verifies(
    two_indexes: list[tuple[Path, Path]], tmp_path: Path
) -> None:
    index_dir, _ = two_indexes[0]
    generated = tmp_path / "generated"
    generated.mkdir()
    for seed in (3, 7):
        scene(seed).rotate(2, fillcolor=(255, 255, 255)).save(generated / f"gen_{seed}.png")
    scene(999).save(generated / "gen_new.png")
    out = tmp_path / "scan.pdf"
    done = run_cli("scan", str(index_dir), str(generated), "--report", str(out))
    assert done.returncode == 0, done.stderr
    pages = render_pages(out, tmp_path / "pages")
    assert pages
    from pypdf import PdfReader

    text = " ".join(p.extract_text() for p in PdfReader(out).pages).replace("\n", " ")
    for needed in (
        "Copy rate",
        "Share above raw 0.5",
        "Most-copied generations",
        "python -m lib scan",
        "not a legal conclusion",
    ):
        assert needed in text, needed
    document = read_document(out)
    (scan,) = document.scans
    assert scan.generated["n"] == 3 and len(scan.findings) == 3
    assert {f.match.id for f in scan.findings[:2]} == {3, 7}, "most copied first"
    assert verify_document(out).ok
    bad = run_cli("scan", str(index_dir), str(generated), "--report", str(tmp_path / "x.docx"))
    assert bad.returncode == 2 and "--report must end in" in bad.stderr
