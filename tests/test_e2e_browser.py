"""End to end in a real browser: `streamlit run app.py`, Debian's Chromium driven by
Playwright. Opens every page, uploads an image on Search and checks that its matches and
verdict appear; walks a new user's first hour (the sidebar on first load, Generate then
measure on Distributions, one readable and one broken upload on Distributions, the map with
a selected point, Duplicates at 0.5); saves a screenshot of each under
test-artifacts/screenshots/."""

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
PAGES = ["search", "distributions", "generate", "case", "map", "duplicates", "benchmark", "indexes"]

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
        # every text the sidebar navigation ever shows, from the first paint on
        page.add_init_script(
            "window.__navTexts = [];"
            "new MutationObserver(() => {"
            "  const nav = document.querySelector('[data-testid=\"stSidebarNav\"]');"
            "  if (nav) window.__navTexts.push(nav.innerText);"
            "}).observe(document, {subtree: true, childList: true, characterData: true});"
        )
        yield page
        browser.close()
    if os.environ.get("REPLICA_UPDATE_DOCS") == "1":  # keep the README's screenshots fresh
        docs = REPO / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        for shot in SHOTS.glob("*.png"):
            shutil.copy(shot, docs / shot.name)


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


RAW_ERROR = "This app has encountered an error"


def _shot(page: object, name: str) -> None:
    _wait_for_app(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_first_load_lists_only_the_apps_pages(server: str, browser_page: object) -> None:
    """A fresh server's first run starts in Streamlit's pages/ folder mode; its sidebar must
    not list modules such as "common", not even for a moment."""
    page = browser_page
    page.goto(server)  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.get_by_text("Search: did this image copy").wait_for(timeout=60_000)  # type: ignore[attr-defined]
    seen = page.evaluate("window.__navTexts")  # type: ignore[attr-defined]
    assert seen, "the navigation is drawn"
    assert not [t for t in seen if "common" in t.lower()], seen
    assert "Distributions" in seen[-1] and "Duplicates" in seen[-1]


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
    # a first visit has something to look at: the bundled study's figures
    page.get_by_text("An example: the bundled study").wait_for(timeout=60_000)  # type: ignore[attr-defined]
    _shot(page, "distributions-first-visit")
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


def test_generate_then_measure_on_distributions(server: str, browser_page: object) -> None:
    page = browser_page
    page.goto(f"{server}/generate")  # type: ignore[attr-defined]
    _wait_for_app(page)
    for label, value in (("Images", "4"), ("Steps", "5")):
        box = page.get_by_label(label, exact=True)  # type: ignore[attr-defined]
        box.fill(value)
        box.press("Enter")
        _wait_for_app(page)
    page.get_by_role("button", name="Generate", exact=True).click()  # type: ignore[attr-defined]
    page.get_by_text("4 generations").wait_for(timeout=300_000)  # type: ignore[attr-defined]
    # the threshold note is drawn just after the count: wait for it, not for luck
    page.get_by_text("Copy at calibrated ≥").first.wait_for(timeout=60_000)  # type: ignore[attr-defined]
    body = page.inner_text("body")  # type: ignore[attr-defined]
    assert "Copy at calibrated ≥" in body and RAW_ERROR not in body
    assert "/data/uploads/" not in body and "px-" not in body
    _shot(page, "generate-batch")
    page.get_by_role("button", name="Measure this batch on the Distributions page").click()  # type: ignore[attr-defined]
    page.get_by_text("Replication rate (copies)").wait_for(timeout=300_000)  # type: ignore[attr-defined]
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)  # type: ignore[attr-defined]
    body = page.inner_text("body")  # type: ignore[attr-defined]
    assert "Choose generated images and press" not in body
    assert "Measured as on the Generate page" in body and RAW_ERROR not in body
    _shot(page, "distributions-generated")


def test_distributions_one_readable_and_one_broken_upload(
    server: str, browser_page: object, tmp_path: Path
) -> None:
    page = browser_page
    index = open_index(DEFAULT_INDEX)
    good = tmp_path / "my_generation.png"
    load_image(str(index.metadata["path"].iloc[7])).image.save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    page.goto(f"{server}/distributions")  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.get_by_text("uploaded images").click()  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.locator("input[type=file]").first.set_input_files([str(good), str(broken)])  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.get_by_role("button", name="Measure replication").click()  # type: ignore[attr-defined]
    page.get_by_text("Generations scanned").wait_for(timeout=180_000)  # type: ignore[attr-defined]
    _wait_for_app(page)
    body = page.inner_text("body")  # type: ignore[attr-defined]
    assert RAW_ERROR not in body and "broken.png" in body
    assert "my_generation.png" in body
    _shot(page, "distributions-one-readable")


def test_map_with_a_selected_point(server: str, browser_page: object) -> None:
    page = browser_page
    page.goto(f"{server}/map")  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot", timeout=120_000)  # type: ignore[attr-defined]
    box = page.get_by_label("Pick an image by id")  # type: ignore[attr-defined]
    box.fill("100")
    box.press("Enter")
    page.get_by_text("Nearest neighbours in the index").wait_for(timeout=120_000)  # type: ignore[attr-defined]
    _wait_for_app(page)
    time.sleep(1.0)
    body = page.inner_text("body")  # type: ignore[attr-defined]
    assert "No map yet" not in body and RAW_ERROR not in body
    assert page.locator(".js-plotly-plot .annotation").count() >= 1  # type: ignore[attr-defined]
    pictures = page.locator(".js-plotly-plot svg image")  # type: ignore[attr-defined]
    assert pictures.count() >= 7  # the crowded cells' and the selection's neighbours' pictures
    _shot(page, "map-selected")


def test_duplicates_at_half_warns(server: str, browser_page: object) -> None:
    page = browser_page
    page.goto(f"{server}/duplicates")  # type: ignore[attr-defined]
    _wait_for_app(page)
    page.get_by_text("Clusters").first.wait_for(timeout=120_000)  # type: ignore[attr-defined]
    slider = page.get_by_role("slider").first  # type: ignore[attr-defined]
    slider.focus()
    slider.press("Home")  # the slider's lowest value: 0.50
    page.get_by_text("This would remove").wait_for(timeout=180_000)  # type: ignore[attr-defined]
    page.get_by_text("lowest between any two").first.wait_for(timeout=60_000)  # type: ignore[attr-defined]
    _wait_for_app(page)
    body = page.inner_text("body")  # type: ignore[attr-defined]
    assert "lowest between any two" in body and RAW_ERROR not in body
    _shot(page, "duplicates-0.5")


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
