"""Reports and cases in a real browser: `streamlit run app.py` with Debian's Chromium driven
by Playwright. On the Search page an upload's report is made and downloaded as PDF, every page
rendered by `pdftoppm`, and `verify` confirms it; the finding goes into the session's case,
whose whole export is downloaded from the Case page; a new session opens the case by name.

Page 1 of the report is kept as test-artifacts/screenshots/report-page1.png (and copied to
docs/screenshots/ for the README when REPLICA_UPDATE_DOCS=1)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.bench.edits import EDITS
from lib.defaults import DEFAULT_INDEX, INDEX_ROOT
from lib.images import load_image
from lib.index import is_index, open_index
from tests.cli_runner import run_cli
from tests.evidence_helpers import PDFTOPPM, colourful_share, render_pages
from tests.test_e2e_browser import CHROMIUM, RAW_ERROR, SHOTS, _free_port, _wait_for_app

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or not is_index(DEFAULT_INDEX) or not PDFTOPPM,
    reason="needs Debian's chromium and poppler-utils, and the default index",
)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e_cases")


@pytest.fixture(scope="module")
def server(cases: Path) -> Iterator[str]:
    """The app with its cases in a temporary folder (indexes where they always are)."""
    config = cases / "replica.toml"
    config.write_text(f'index_root = "{INDEX_ROOT}"\ncase_root = "{cases / "store"}"\n')
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "REPLICA_CONFIG": str(config)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start within 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield chromium
        chromium.close()


def _download(page: object, button: str, target: Path) -> Path:
    with page.expect_download(timeout=120_000) as info:  # type: ignore[attr-defined]
        page.get_by_role("button", name=button).first.click()  # type: ignore[attr-defined]
    info.value.save_as(str(target))
    return target


def test_report_and_case_export_download_as_pdf(
    server: str, browser: object, tmp_path: Path
) -> None:
    import numpy as np

    index = open_index(DEFAULT_INDEX)
    source = load_image(str(index.metadata["path"].iloc[100])).image
    query = tmp_path / "my_generation.png"
    EDITS["jpeg"](source, np.random.default_rng(0)).save(query)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    page.goto(server)
    _wait_for_app(page)
    page.get_by_text("Search: did this image copy").wait_for(timeout=60_000)
    page.locator("input[type=file]").first.set_input_files(str(query))
    page.get_by_text("#1", exact=False).first.wait_for(timeout=120_000)
    _wait_for_app(page)

    # one finding's report, downloaded as PDF and checked page by page
    page.get_by_role("button", name="Make a report").first.click()
    page.get_by_role("button", name="Download report (PDF)").wait_for(timeout=120_000)
    _wait_for_app(page)
    assert RAW_ERROR not in page.inner_text("body")
    pdf = _download(page, "Download report (PDF)", tmp_path / "report.pdf")
    pages = render_pages(pdf, tmp_path / "report-pages", dpi=90)
    assert len(pages) >= 2
    assert colourful_share(pages[0]) > 0.01, "page 1 shows the query and its match"
    from pypdf import PdfReader

    assert len(PdfReader(pdf).pages[0].images) >= 3
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(pages[0], SHOTS / "report-page1.png")
    if os.environ.get("REPLICA_UPDATE_DOCS") == "1":
        docs = REPO / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(pages[0], docs / "report-page1.png")
    verified = run_cli("verify", str(pdf))
    assert verified.returncode == 0, verified.stdout
    assert "copy embedded in the report" in verified.stdout

    # the finding goes into this session's case; the Case page exports the whole case
    page.get_by_role("button", name="Add to case").first.click()
    page.get_by_text("Added to case").wait_for(timeout=120_000)
    body = page.inner_text("body")
    name = re.search(r"Added to case (case-\d{8}-[0-9a-f]{8})", body).group(1)  # type: ignore[union-attr]
    assert "/work/" not in body and str(REPO) not in body, "no server path shown"
    page.locator("[data-testid='stSidebarNavLink']", has_text="Case").first.click()
    page.get_by_text(f"Current case: {name}").wait_for(timeout=60_000)
    page.get_by_role("button", name="Prepare the export").click()
    page.get_by_role("button", name="Download case (PDF)").wait_for(timeout=120_000)
    _wait_for_app(page)
    page.screenshot(path=str(SHOTS / "case.png"), full_page=True)
    case_pdf = _download(page, "Download case (PDF)", tmp_path / "case.pdf")
    case_pages = render_pages(case_pdf, tmp_path / "case-pages")
    assert len(case_pages) >= 2
    first = PdfReader(case_pdf).pages[0].extract_text()
    assert "Summary" in first and "my_generation.png" in first
    assert run_cli("verify", str(case_pdf)).returncode == 0

    # another browser session has its own case until it opens this one by name
    other = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    other.goto(f"{server}/case")
    _wait_for_app(other)
    other.get_by_text("This case is empty").wait_for(timeout=60_000)
    box = other.get_by_label("Open a case by its name", exact=True)
    box.fill(name)
    box.press("Enter")
    other.get_by_role("button", name="Open this case").click()
    other.get_by_text(f"Current case: {name}").wait_for(timeout=60_000)
    other.get_by_role("button", name="Prepare the export").wait_for(timeout=60_000)
    assert "my_generation.png" in other.inner_text("body")
