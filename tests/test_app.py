"""app.py: navigation, the sidebar index picker and card, the licence line; every page
opens under the navigation without an exception."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lib.defaults import DEFAULT_INDEX
from lib.index import is_index

PAGES = {
    "pages/search.py": "Search",
    "pages/distributions.py": "Distributions",
    "pages/generate.py": "Generate",
    "pages/case.py": "Case",
    "pages/map.py": "Map",
    "pages/duplicates.py": "Duplicates",
    "pages/benchmark.py": "Benchmark",
    "pages/indexes.py": "Indexes",
}


@pytest.fixture
def app() -> AppTest:
    if not is_index(DEFAULT_INDEX):
        pytest.skip("default index not built: run make setup")
    return AppTest.from_file("../app.py", default_timeout=120).run()


def test_sidebar_shows_the_default_index_card_and_attribution(app: AppTest) -> None:
    assert not app.exception
    picker = app.sidebar.selectbox(key="index_path")
    assert picker.value == str(DEFAULT_INDEX)
    card = " ".join(m.value for m in app.sidebar.markdown)
    assert "embedder `sscd`" in card and "images" in card
    assert "CC BY-SA 4.0" in " ".join(c.value for c in app.sidebar.caption)
    assert "Search" in app.header[0].value  # the default page


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_opens_under_the_navigation(app: AppTest, page: str) -> None:
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert PAGES[page] in app.header[0].value


def test_streamlit_is_set_up_as_a_product_not_a_development_server() -> None:
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).parents[1] / ".streamlit/config.toml").read_text())
    client = config["client"]
    assert client["showErrorDetails"] == "none"  # no tracebacks for users
    assert client["showErrorLinks"] == "false"  # no "Ask ChatGPT" under an error
    assert client["toolbarMode"] == "minimal"  # no developer menu
    # a fresh server's first run would list pages/*.py (such as "common") in the sidebar
    assert client["showSidebarNavigation"] is False


def test_the_file_watcher_leaves_data_alone() -> None:
    """Watching data/ (indexes, renders, uploads) overflowed inotify on a 1M-image index
    and filled the server log; the option as Streamlit itself parses it from the repo."""
    import os
    from pathlib import Path

    from streamlit import config, file_util

    repo = Path(__file__).parents[1]
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        config.get_config_options(force_reparse=True)
        ignored = config.get_option("server.folderWatchBlacklist")
    finally:
        os.chdir(cwd)
    data_file = str(repo / "data" / "indexes" / "x" / "manifest.json")
    assert any(file_util.file_is_in_folder_glob(data_file, str(repo / d)) for d in ignored)
    assert not any(
        file_util.file_is_in_folder_glob(str(repo / "pages" / "search.py"), str(repo / d))
        for d in ignored
    )


def test_the_app_turns_its_own_navigation_on() -> None:
    import streamlit as st

    if not is_index(DEFAULT_INDEX):
        pytest.skip("default index not built: run make setup")
    st.set_option("client.showSidebarNavigation", False)  # as .streamlit/config.toml sets it
    AppTest.from_file("../app.py", default_timeout=120).run()
    assert st.get_option("client.showSidebarNavigation") is True


def guarded_app() -> None:
    import streamlit as st

    from pages.common import run_guarded

    def broken() -> None:
        st.header("A page")
        raise KeyError("a planted fault")

    run_guarded(st.navigation([st.Page(broken, title="Broken")]))


def test_an_unexpected_error_in_a_page_is_explained_not_shown_raw() -> None:
    at = AppTest.from_function(guarded_app, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.header[0].value == "A page"  # what the page drew before failing stays
    message = at.error[0].value
    assert "Something went wrong on this page" in message and "a planted fault" in message
    assert "try again" in message


def test_app_runs_its_pages_guarded() -> None:
    from pathlib import Path

    source = (Path(__file__).parents[1] / "app.py").read_text()
    assert "run_guarded(st.navigation(PAGES))" in source


def test_an_index_too_small_to_calibrate_says_so(tmp_path: object) -> None:
    from pathlib import Path

    from lib.index import build_index
    from tests.synthetic import write_scenes

    root = Path(str(tmp_path))
    write_scenes(root / "train", range(8))
    small = build_index(root / "train", root / "idx", embedder="pixels").index.path
    config = root / "replica.toml"
    config.write_text(f'index_root = "{root / "none"}"\nindex_dirs = ["{small}"]\n')
    import os

    os.environ["REPLICA_CONFIG"] = str(config)
    try:
        at = AppTest.from_file("../app.py", default_timeout=120).run()
    finally:
        del os.environ["REPLICA_CONFIG"]
    assert not at.exception
    warning = " ".join(w.value for w in at.sidebar.warning)
    assert "too small to calibrate" in warning and "default thresholds" in warning


@pytest.mark.parametrize("page", list(PAGES))
def test_no_page_prints_a_stray_string(page: str) -> None:
    """Streamlit's "magic" writes every bare string of a page script on the page: in a page,
    constants are explained by comments, not by docstrings."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parents[1] / page).read_text())
    strays = [
        node.lineno
        for node in tree.body[1:]  # the module docstring is not drawn
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    ]
    assert not strays, f"{page}: bare strings at lines {strays}"


@pytest.fixture(scope="module")
def tiny_indexes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """Indexes of 1 and 2 images (and one built from a folder where only 1 of 3 is readable)."""
    from lib.index import build_index
    from tests.synthetic import write_scenes

    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for n in (1, 2):
        write_scenes(root / f"train{n}", range(n))
        if n == 1:
            (root / "train1" / "broken.png").write_bytes(b"not an image")
            (root / "train1" / "empty.png").write_bytes(b"")
        out[n] = str(
            build_index(root / f"train{n}", root / f"idx{n}", embedder="pixels").index.path
        )
    return out


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_survives_an_index_of_one_or_two_images(
    tiny_indexes: dict[int, str], page: str, n: int
) -> None:
    at = AppTest.from_file(f"../{page}", default_timeout=120)
    at.session_state["index_path"] = tiny_indexes[n]
    at.run()
    assert not at.exception, at.exception
    assert PAGES[page] in at.header[0].value


@pytest.mark.parametrize("page", ["pages/benchmark.py", "pages/distributions.py"])
def test_a_first_visit_to_a_page_address_runs_it_inside_the_app(page: str) -> None:
    """A fresh server runs a page opened by its address (/benchmark) on its own, in
    Streamlit's pages/ folder mode; the page reruns under app.py: sidebar card, navigation."""
    if not is_index(DEFAULT_INDEX):
        pytest.skip("default index not built: run make setup")
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.switch_page(page).run()  # AppTest starts every run in folder mode, as a fresh server
    assert not at.exception, at.exception
    assert PAGES[page] in at.header[0].value
    card = " ".join(m.value for m in at.sidebar.markdown)
    assert "images · embedder" in card


def test_each_session_keeps_its_index_and_a_new_build_never_moves_a_visitor(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new visitor opens the configured default (not the first index by name), the
    address names the index (?index=NAME, no server path) so a link opens the same view,
    and an index another user builds meanwhile changes neither a running session nor
    where a new one starts."""
    import shutil
    from pathlib import Path

    from lib.index import build_index
    from tests.synthetic import write_scenes

    root = Path(str(tmp_path))
    write_scenes(root / "train", range(6))
    indexes = root / "indexes"
    first = build_index(root / "train", indexes / "zzz-default", embedder="pixels").index.path
    shutil.copytree(first, indexes / "bbb-other")
    config = root / "replica.toml"
    config.write_text(f'index_root = "{indexes}"\ndefault_index = "zzz-default"\n')
    monkeypatch.setenv("REPLICA_CONFIG", str(config))

    visitor = AppTest.from_file("../app.py", default_timeout=120).run()
    assert not visitor.exception
    assert Path(visitor.sidebar.selectbox[0].value).name == "zzz-default"
    assert (
        visitor.query_params["index"] == ["zzz-default"]
        or visitor.query_params["index"] == "zzz-default"
    )

    shutil.copytree(first, indexes / "aaa-built-by-someone")  # first by name
    visitor.run()
    assert Path(visitor.sidebar.selectbox[0].value).name == "zzz-default"
    newcomer = AppTest.from_file("../app.py", default_timeout=120).run()
    assert Path(newcomer.sidebar.selectbox[0].value).name == "zzz-default"

    linked = AppTest.from_file("../app.py", default_timeout=120)
    linked.query_params["index"] = "bbb-other"
    linked.run()
    assert Path(linked.sidebar.selectbox[0].value).name == "bbb-other"
    unknown = AppTest.from_file("../app.py", default_timeout=120)
    unknown.query_params["index"] = "../../etc"
    unknown.run()
    assert not unknown.exception
    assert Path(unknown.sidebar.selectbox[0].value).name == "zzz-default"


def phased_progress() -> None:
    from pages.common import streamlit_progress

    callback, _ = streamlit_progress("Embedding images")
    for done in (1, 400, 802):
        callback(done, 802)
    for done in (1, 25):
        callback(done, 801, "calibrating verdicts")


def test_a_new_phase_never_reads_as_a_restart() -> None:
    """The Indexes page's bar sat full at 802/802, then read '25/801 · calibrating
    verdicts' as if the build had started over: finished phases stay named as done."""
    at = AppTest.from_function(phased_progress, default_timeout=60).run()
    assert not at.exception
    text = at.get("progress")[0].proto.text
    assert text == "Embedding images 802/802 done · calibrating verdicts: 25/801", text
