"""End to end in a real browser: `streamlit run app.py`, Debian's Chromium driven by
Playwright. Opens every page, uploads an image on Search and checks that its matches and
verdict appear; saves a screenshot of each page under test-artifacts/screenshots/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.bench.edits import EDITS
from lib.defaults import DEFAULT_INDEX
from lib.images import load_image
from lib.index import is_index, open_index

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "screenshots"
PAGES = ["search", "distributions", "generate", "map", "duplicates", "benchmark", "indexes"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or not is_index(DEFAULT_INDEX),
    reason="needs Debian's chromium (apt-get install chromium) and the default index",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
def browser_page() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def _wait_for_app(page: object) -> None:
    page.wait_for_selector("[data-testid='stSidebar']", timeout=60_000)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
    )
    # every picture on the page has finished loading
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
        timeout=60_000,
    )


def test_search_upload_shows_matches_and_verdict(
    server: str, browser_page: object, tmp_path: Path
) -> None:
    import numpy as np

    page = browser_page
    index = open_index(DEFAULT_INDEX)
    source = load_image(str(index.metadata["path"].iloc[100])).image
    query = tmp_path / "edited_copy.png"
    EDITS["flip"](source, np.random.default_rng(0)).save(query)

    page.goto(server)  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.get_by_text("Search: did this image copy").wait_for(timeout=60_000)  # type: ignore[attr-defined]
    page.locator("input[type=file]").first.set_input_files(str(query))  # type: ignore[attr-defined]
    page.get_by_text("edited_copy.png").first.wait_for(timeout=90_000)  # type: ignore[attr-defined]
    page.get_by_text("#1", exact=False).first.wait_for(timeout=90_000)  # type: ignore[attr-defined]
    body = page.inner_text("body")  # type: ignore[attr-defined]
    assert any(v in body for v in ("COPY", "SIMILAR", "NO CLEAR MATCH"))
    assert "raw" in body and "Calibrated score" in body
    assert Path(str(index.metadata["path"].iloc[100])).name in body
    _wait_for_app(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "search.png"), full_page=True)  # type: ignore[attr-defined]


def test_distributions_demo_batch_draws_the_papers_figure(
    server: str, browser_page: object
) -> None:
    page = browser_page
    page.goto(f"{server}/distributions")  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.get_by_text("a demo batch").click()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Make a demo batch").click()  # type: ignore[attr-defined]
    page.get_by_text("Demo batch:").wait_for(timeout=60_000)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Measure replication").click()  # type: ignore[attr-defined]
    page.get_by_text("Replication rate (copies)").wait_for(timeout=180_000)  # type: ignore[attr-defined]
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)  # type: ignore[attr-defined]
    _wait_for_app(page)
    body = page.inner_text("body")  # type: ignore[attr-defined]
    assert "Share above raw 0.5" in body and "95th percentile top-1" in body
    assert "Most replicated generations" in body
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "distributions.png"), full_page=True)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [p for p in PAGES if p not in ("search", "distributions")])
def test_every_page_opens(server: str, browser_page: object, name: str) -> None:
    page = browser_page
    page.goto(f"{server}/{name}")  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.wait_for_selector("h2, h1", timeout=60_000)  # type: ignore[attr-defined]
    time.sleep(1.0)
    body = page.inner_text("body")  # type: ignore[attr-defined]
    assert "Traceback" not in body and "Error" not in body.split("\n")[0]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_screenshots_can_be_copied_to_docs() -> None:
    """Keep the README's screenshots fresh when REPLICA_UPDATE_DOCS=1."""
    if os.environ.get("REPLICA_UPDATE_DOCS") != "1":
        pytest.skip("set REPLICA_UPDATE_DOCS=1 to refresh docs/screenshots")
    docs = REPO / "docs" / "screenshots"
    docs.mkdir(parents=True, exist_ok=True)
    for shot in SHOTS.glob("*.png"):
        shutil.copy(shot, docs / shot.name)
