"""Reports a lawyer can send: the pages a person reads name no folder of the machine that
made them (the record inside, for `verify`, keeps the full paths), name the paper whose
measure they quote, explain every term they use, and `verify` still passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pypdf import PdfReader

from tests.cli_runner import run_cli
from tests.evidence_helpers import small_index

TERMS = ("COPY", "SIMILAR", "NO CLEAR MATCH", "Raw cosine", "Calibrated score", "null",
         "operating point", "Pixel alignment")  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("words")
    index, query = small_index(root)
    for suffix in ("html", "pdf"):
        result = run_cli("report", str(index), str(query), "--out", str(root / f"r.{suffix}"))
        assert result.returncode == 0, result.stderr
    scan = run_cli("scan", str(index), str(query.parent), "--report", str(root / "scan.html"))
    assert scan.returncode == 0, scan.stderr
    return root, index, query


def _visible_html(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)  # the verify record
    return re.sub(r"<[^>]+>", " ", text)


def _visible_pdf(path: Path) -> str:
    return " ".join(page.extract_text() or "" for page in PdfReader(path).pages)


@pytest.mark.parametrize("name", ["r.html", "r.pdf", "scan.html"])
def test_the_readable_pages_name_no_server_folder(made: tuple[Path, Path, Path], name: str) -> None:
    root, index, query = made
    path = root / name
    text = _visible_html(path) if name.endswith(".html") else _visible_pdf(path)
    flat = re.sub(r"\s+", "", text)  # PDF text wraps long lines anywhere
    for folder in (root, index, query.parent, root / "train"):
        assert re.sub(r"\s+", "", str(folder)) not in flat, f"{folder} shown in {name}"
    assert "Somepalli" in text and "CVPR 2023" in text
    if not name.startswith("scan"):
        for term in TERMS:
            assert term in text, f"{term!r} is not explained in {name}"
        assert "Terms used" in text


def test_the_record_still_holds_the_paths_and_verifies(made: tuple[Path, Path, Path]) -> None:
    root, index, _ = made
    assert str(index) in (root / "r.html").read_text(encoding="utf-8")  # inside the record
    for name in ("r.html", "r.pdf"):
        result = run_cli("verify", str(root / name))
        assert result.returncode == 0, result.stdout + result.stderr
