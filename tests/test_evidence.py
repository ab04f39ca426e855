"""Reports, verify and its tamper checks, on a small real index with a planted copy."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lib.evidence import Document, make_finding, read_document, write_document
from lib.index import add_to_index, build_index, open_index
from tests.cli_runner import run_cli
from tests.evidence_helpers import PDFTOPPM, colourful_share, render_pages, small_index
from tests.synthetic import scene, write_scenes

needs_pdftoppm = pytest.mark.skipif(not PDFTOPPM, reason="needs pdftoppm (poppler-utils)")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return small_index(tmp_path_factory.mktemp("evidence"))


@pytest.fixture(scope="module")
def report_json(planted: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    index, query = planted
    out = tmp_path_factory.mktemp("reports") / "finding.json"
    done = run_cli("report", str(index), str(query), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


@needs_pdftoppm
def test_report_pdf_shows_the_pictures_scores_and_identities(
    planted: tuple[Path, Path], tmp_path: Path
) -> None:
    index, query = planted
    out = tmp_path / "report.pdf"
    done = run_cli("report", str(index), str(query), "--regions", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "training image #5" in done.stdout and "COPY" in done.stdout
    pages = render_pages(out, tmp_path / "pages")
    assert len(pages) >= 2
    assert colourful_share(pages[0]) > 0.05, "page 1 shows the query and its match"
    from pypdf import PdfReader

    reader = PdfReader(out)
    assert len(reader.pages[0].images) >= 3, "query, match and the strip of next matches"
    pictures = sum(len(page.images) for page in reader.pages)
    assert pictures == 6, "query, match, strip, difference, regions and the null"
    for png in pages:
        assert Image.open(png).convert("L").getextrema()[0] < 100, f"{png.name} is blank"
    text = "\n".join(page.extract_text() for page in reader.pages)
    finding = read_document(out).findings[0]
    for needed in (
        "Raw cosine",
        "Calibrated score",
        "score lower",
        finding.query.sha256,
        finding.match.sha256,
        finding.index.manifest_sha256,
        finding.embedder["weights_sha256"],
        "python -m lib report",
        "not a legal conclusion",
        "about 2 in 100",
        "Matching regions",
    ):
        assert needed in text.replace("\n", " "), needed


def test_report_html_is_self_contained(planted: tuple[Path, Path], tmp_path: Path) -> None:
    index, query = planted
    out = tmp_path / "report.html"
    assert run_cli("report", str(index), str(query), "--out", str(out)).returncode == 0
    page = out.read_text(encoding="utf-8")
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pictures) >= 5, "query, match, strip, difference and the null"
    for data in pictures:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    assert not re.search(r'(src|href)="(https?:|/|file:)', page), "nothing to fetch"
    finding = read_document(out).findings[0]
    assert finding.match.id == 5 and finding.match.verdict == "copy"
    assert finding.query.sha256 in page and "not a legal conclusion" in page


def test_report_of_a_chosen_match_and_of_a_missing_one(
    planted: tuple[Path, Path], tmp_path: Path
) -> None:
    index, query = planted
    opened = open_index(index)
    second = make_finding(opened, query.name, query.read_bytes(), pictures=False)
    other = int(second.result["matches"][1]["id"])
    chosen = make_finding(opened, query.name, query.read_bytes(), match_id=other, pictures=False)
    assert chosen.match.id == other and chosen.match.rank == 2
    assert chosen.match.calibrated < second.match.calibrated
    out = tmp_path / "x.pdf"
    done = run_cli("report", str(index), str(query), "--match", "999", "--out", str(out))
    assert done.returncode == 2 and "not among the 5 best matches" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".json", ".html", ".pdf"])
def test_verify_confirms_an_untouched_report(
    planted: tuple[Path, Path], tmp_path: Path, suffix: str
) -> None:
    index, query = planted
    out = tmp_path / f"report{suffix}"
    assert run_cli("report", str(index), str(query), "--out", str(out)).returncode == 0
    done = run_cli("verify", str(out))
    assert done.returncode == 0, done.stdout
    assert "VERIFIED: all 6 checks pass" in done.stdout
    assert "FAIL" not in done.stdout


def test_verify_re_runs_from_the_embedded_query_and_a_moved_index(
    planted: tuple[Path, Path], report_json: Path, tmp_path: Path
) -> None:
    """The checker has neither the query file nor the index at the recorded path."""
    index, _ = planted
    data = json.loads(report_json.read_text())
    data["findings"][0]["query"]["path"] = str(tmp_path / "gone.png")
    moved = tmp_path / "copy-of-index"
    shutil.copytree(index, moved)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(data))
    assert run_cli("verify", str(report)).returncode == 0
    done = run_cli("verify", str(report), "--index", str(moved))
    assert done.returncode == 0, done.stdout
    assert "copy embedded in the report" in done.stdout


def _verify_tampered(report_json: Path, tmp_path: Path, change: object) -> str:
    data = json.loads(report_json.read_text())
    change(data["findings"][0])  # type: ignore[operator]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))
    done = run_cli("verify", str(tampered))
    assert done.returncode == 1, done.stdout
    assert "NOT VERIFIED" in done.stdout
    return done.stdout


def test_verify_refuses_a_different_model(report_json: Path, tmp_path: Path) -> None:
    def other_model(finding: dict) -> None:
        finding["embedder"]["name"] = "sscd"
        finding["embedder"]["weights_sha256"] = "0" * 64

    out = _verify_tampered(report_json, tmp_path, other_model)
    assert "FAIL  same model [different model]" in out
    assert "PASS  scores" in out and "PASS  query file" in out


def test_verify_refuses_changed_scores(report_json: Path, tmp_path: Path) -> None:
    def inflate(finding: dict) -> None:
        finding["match"]["calibrated"] += 0.01

    out = _verify_tampered(report_json, tmp_path, inflate)
    assert "FAIL  scores [scores differ]" in out and "calibrated" in out
    assert "PASS  same model" in out


def test_verify_refuses_a_tiny_score_change_but_not_rounding(
    report_json: Path, tmp_path: Path
) -> None:
    def nudge(finding: dict) -> None:
        finding["match"]["score"] += 3e-4

    assert "scores differ" in _verify_tampered(report_json, tmp_path, nudge)


def test_verify_refuses_a_changed_query_file(planted: tuple[Path, Path], tmp_path: Path) -> None:
    index, original = planted
    query = tmp_path / "query.png"
    shutil.copy(original, query)
    report = tmp_path / "report.html"
    assert run_cli("report", str(index), str(query), "--out", str(report)).returncode == 0
    scene(5).rotate(4, fillcolor=(255, 255, 255)).save(query)  # someone edits the file
    done = run_cli("verify", str(report))
    assert done.returncode == 1
    assert "FAIL  query file [file changed]" in done.stdout
    assert "PASS  training file" in done.stdout


@pytest.fixture
def own_index(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An index this test may change: (index, query, its report as JSON)."""
    index, query = small_index(tmp_path / "own")
    report = tmp_path / "report.json"
    assert run_cli("report", str(index), str(query), "--out", str(report)).returncode == 0
    return index, query, report


def test_verify_refuses_a_changed_training_file(own_index: tuple[Path, Path, Path]) -> None:
    _, _, report = own_index
    training = Path(read_document(report).findings[0].match.path)
    scene(77).save(training)
    done = run_cli("verify", str(report))
    assert done.returncode == 1
    assert "FAIL  training file [file changed]" in done.stdout
    assert "PASS  query file" in done.stdout


def test_verify_refuses_an_index_with_an_image_added(
    own_index: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    index, _, report = own_index
    write_scenes(tmp_path / "more", [500])
    add_to_index(index, tmp_path / "more")
    done = run_cli("verify", str(report))
    assert done.returncode == 1
    assert "FAIL  index unchanged [index changed]" in done.stdout
    assert "25 images now, 24 then" in done.stdout
    assert "PASS  index holds the match" in done.stdout


def test_verify_refuses_an_index_rebuilt_from_other_images(
    own_index: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    index, _, report = own_index
    write_scenes(tmp_path / "others", range(100, 124))
    build_index(tmp_path / "others", index, embedder="sscd-distilled", overwrite=True)
    done = run_cli("verify", str(report))
    assert done.returncode == 1
    assert "FAIL  index unchanged [index changed]" in done.stdout
    assert "FAIL  index holds the match [index changed]" in done.stdout
    assert "FAIL  scores" in done.stdout


def test_verify_says_what_is_not_a_report(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><body>hello</body></html>")
    done = run_cli("verify", str(page))
    assert done.returncode == 2 and "no Replica record" in done.stdout
    blank = tmp_path / "blank.pdf"
    write_document(Document(title="empty"), tmp_path / "empty.pdf")
    blank.write_bytes((tmp_path / "empty.pdf").read_bytes())
    done = run_cli("verify", str(blank))
    assert done.returncode == 1 and "holds no finding" in done.stdout


def test_verify_reads_a_tampered_html_record(planted: tuple[Path, Path], tmp_path: Path) -> None:
    """Someone edits the score inside the HTML's embedded record: verify re-runs and refuses."""
    index, query = planted
    out = tmp_path / "report.html"
    assert run_cli("report", str(index), str(query), "--out", str(out)).returncode == 0
    page = out.read_text(encoding="utf-8")
    recorded = read_document(out).findings[0].match.score
    pattern = re.compile(r'("score": )' + re.escape(repr(recorded)))
    assert len(pattern.findall(page)) >= 1
    out.write_text(pattern.sub(r"\g<1>0.99", page), encoding="utf-8")
    done = run_cli("verify", str(out))
    assert done.returncode == 1 and "FAIL  scores [scores differ]" in done.stdout


def test_the_facade_exports_reports_and_verify() -> None:
    import lib

    assert lib.make_finding is make_finding and callable(lib.verify_document)
