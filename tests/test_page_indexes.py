"""Indexes page (AppTest): build from an allowed folder or an uploaded zip, refuse folders
outside the roots and bad names, add images, delete only after the name is typed, and a
stopped build leaves neither an index nor an upload behind. The app is pointed at
temporary folders through $REPLICA_CONFIG."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from lib.index import build_index, is_index, open_index
from tests.synthetic import scene, write_scenes

PAGE = "../pages/indexes.py"
EMBEDDER = "pixels"  # fast; the page only passes the name through


class Workspace:
    def __init__(self, root: Path):
        self.images = root / "images"
        self.indexes = root / "indexes"
        self.uploads = root / "uploads"
        self.outside = root / "outside"
        for folder in (self.images, self.indexes, self.uploads, self.outside):
            folder.mkdir(parents=True)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    space = Workspace(tmp_path)
    config = tmp_path / "replica.toml"
    config.write_text(
        f'index_root = "{space.indexes}"\n'
        f'image_roots = ["{space.images}"]\n'
        f'upload_root = "{space.uploads}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    return space


def page(index_path: Path | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(index_path) if index_path else None
    return at.run()


def texts(elements: Any) -> str:
    return " ".join(str(e.value) for e in elements)


def table(at: AppTest, column: str) -> Any:
    """The first dataframe with ``column`` (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def build_from_folder(at: AppTest, name: str, folder: Path) -> AppTest:
    at.text_input(key="build_name").input(name)
    at.text_input(key="build_folder").input(str(folder))
    at.selectbox(key="build_embedder").select(EMBEDDER)
    return at.button(key="build_button").click().run()


def png_zip(seeds: range) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for seed in seeds:
            image = io.BytesIO()
            scene(seed).save(image, format="PNG")
            archive.writestr(f"set/img_{seed}.png", image.getvalue())
        archive.writestr("../escape.png", b"x")
    return buffer.getvalue()


def test_build_from_an_allowed_folder_selects_the_new_index(ws: Workspace) -> None:
    write_scenes(ws.images / "generated", range(6))
    (ws.images / "generated" / "broken.png").write_bytes(b"not a png")
    at = page()
    assert "No index yet" in texts(at.info)
    assert at.selectbox(key="build_embedder").value == "sscd", "SSCD is the default"

    at = build_from_folder(at, "gen-1", ws.images / "generated")

    assert not at.exception
    assert "Built **gen-1** with `pixels`: indexed 6 image(s), skipped 1" in texts(at.success)
    skipped = table(at, "reason")
    # shown relative to the allowed folder, not by the server's own layout
    assert list(skipped["file"]) == ["generated/broken.png"]
    assert list(skipped["path"]) == [str(ws.images / "generated" / "broken.png")]
    assert skipped["reason"][0]
    dest = ws.indexes / "gen-1"
    assert is_index(dest) and open_index(dest).count == 6
    assert at.session_state["pending_index_path"] == str(dest)
    listing = table(at, "in use")
    assert list(listing["name"]) == ["gen-1"] and listing["in use"][0] == "✓"
    assert listing["images"][0] == 6 and listing["skipped"][0] == 1
    assert listing["embedder"][0] == EMBEDDER
    assert hidden(ws.indexes) == []


def test_a_folder_outside_the_roots_is_refused(ws: Workspace) -> None:
    write_scenes(ws.outside, range(3))
    at = build_from_folder(page(), "nope", ws.outside)
    assert not at.exception
    assert "outside the allowed folders" in texts(at.error)
    assert "Pick a folder inside" in texts(at.error)
    assert not (ws.indexes / "nope").exists()
    at.run()
    assert not at.warning, "a refused build is not reported as stopped"


@pytest.mark.parametrize(
    ("name", "message"), [("bad name!", "not a valid index name"), ("taken", "already exists")]
)
def test_bad_or_taken_names_are_refused(ws: Workspace, name: str, message: str) -> None:
    write_scenes(ws.images / "g", range(2))
    (ws.indexes / "taken").mkdir()
    at = build_from_folder(page(), name, ws.images / "g")
    assert message in texts(at.error)
    assert sorted(p.name for p in ws.indexes.iterdir()) == ["taken"]


def test_build_from_an_uploaded_zip(ws: Workspace) -> None:
    at = page()
    at.text_input(key="build_name").input("zipped")
    at.radio(key="build_source").set_value("an uploaded zip").run()
    at.selectbox(key="build_embedder").select(EMBEDDER)
    at.file_uploader(key="zip_upload").upload("My Set.zip", png_zip(range(4)), "application/zip")
    at.button(key="build_button").click().run()

    assert not at.exception
    assert "indexed 4 image(s)" in texts(at.success)
    assert "1 file(s) in the zip were left out" in texts(at.success)
    skipped = table(at, "reason")
    assert list(skipped["file"]) == ["../escape.png"]
    (folder,) = list(ws.uploads.iterdir())
    assert folder.name.startswith("my-set-")
    index = open_index(ws.indexes / "zipped")
    assert all(p.startswith(str(folder)) for p in index.metadata["path"])


def test_a_stopped_build_leaves_no_index_and_no_upload(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel makes Streamlit raise inside the progress callback; simulate that raise."""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    import pages.common

    real = pages.common.streamlit_progress

    def stopping_progress(label: str) -> Any:
        callback, bar = real(label)
        if not label.startswith("Embedding"):
            return callback, bar

        def stop(done: int, total: int, message: str = "") -> None:
            callback(done, total, message)
            if done >= 2:
                raise StopException()

        return stop, bar

    monkeypatch.setattr(pages.common, "streamlit_progress", stopping_progress)
    at = page()
    at.text_input(key="build_name").input("stopped")
    at.radio(key="build_source").set_value("an uploaded zip").run()
    at.selectbox(key="build_embedder").select(EMBEDDER)
    at.file_uploader(key="zip_upload").upload("set.zip", png_zip(range(5)), "application/zip")
    at.button(key="build_button").click().run()

    assert not at.exception
    assert list(ws.indexes.iterdir()) == [], "no index and no temporary folder"
    assert list(ws.uploads.iterdir()) == [], "the extracted upload is removed"
    at.run()
    assert "build was stopped before it finished" in texts(at.warning)


def test_add_images_to_the_selected_index(ws: Workspace) -> None:
    write_scenes(ws.images / "first", range(4))
    write_scenes(ws.images / "more", range(2, 7))  # 2 and 3 are already indexed
    dest = build_index(ws.images / "first", ws.indexes / "base", embedder=EMBEDDER).index.path
    at = page(dest)
    at.text_input(key="add_folder").input(str(ws.images / "more"))
    at.button(key="add_button").click().run()

    assert not at.exception
    assert "Added to **base**: indexed 3 image(s), skipped 2" in texts(at.success)
    reasons = list(table(at, "reason")["reason"])
    assert reasons == ["already in the index (same sha256)"] * 2
    assert open_index(dest).count == 7
    assert hidden(ws.indexes) == []


def test_delete_needs_the_exact_name(ws: Workspace) -> None:
    write_scenes(ws.images / "g", range(2))
    keep = build_index(ws.images / "g", ws.indexes / "keep", embedder=EMBEDDER).index.path
    doomed = build_index(ws.images / "g", ws.indexes / "doomed", embedder=EMBEDDER).index.path
    at = page(doomed)
    assert at.selectbox(key="delete_target").value == str(doomed), "the selected index"

    at.text_input(key="delete_confirm").input("doome")
    at.button(key="delete_button").click().run()
    assert "Not deleted" in texts(at.error)
    assert is_index(doomed)

    at.text_input(key="delete_confirm").input("doomed")
    at.button(key="delete_button").click().run()
    assert not at.exception
    assert "Deleted index **doomed**" in texts(at.success)
    assert not doomed.exists() and is_index(keep)
    assert at.text_input(key="delete_confirm").value == ""
    assert list(table(at, "in use")["name"]) == ["keep"]
    assert hidden(ws.indexes) == []


def sidebar_then_page(page_file: str) -> None:
    """The app's layout in one script: the sidebar picker (key index_path) is drawn
    before the page runs, as app.py does (AppTest cannot drive app.py's st.navigation
    past the first run while a pages/ folder sits beside it)."""
    import runpy

    import streamlit as st

    from lib.app_config import available_indexes, load_config
    from pages.common import apply_pending_index

    apply_pending_index()
    options = [str(p) for p in available_indexes(load_config())]
    if st.session_state.get("index_path") not in options:
        st.session_state["index_path"] = options[0] if options else None
    st.sidebar.selectbox("Index", options, key="index_path")
    runpy.run_path(page_file)


def test_the_new_index_is_selected_although_the_sidebar_picker_is_drawn(ws: Workspace) -> None:
    write_scenes(ws.images / "g", range(3))
    build_index(ws.images / "g", ws.indexes / "aaa", embedder=EMBEDDER)
    page_file = str(Path(__file__).resolve().parent.parent / "pages" / "indexes.py")
    at = AppTest.from_function(sidebar_then_page, args=(page_file,), default_timeout=120).run()
    assert at.sidebar.selectbox(key="index_path").value == str(ws.indexes / "aaa")

    at = build_from_folder(at, "zzz", ws.images / "g")

    assert not at.exception
    assert "Built **zzz**" in texts(at.success)
    assert at.sidebar.selectbox(key="index_path").value == str(ws.indexes / "zzz")


def test_the_page_prints_no_stray_text(ws: Workspace) -> None:
    """Bare strings at module level would be printed by Streamlit's magic."""
    at = page()
    assert [m.value for m in at.markdown] == []


def test_an_index_name_may_hold_spaces_as_a_case_name_does(ws: Workspace) -> None:
    from lib.index.catalog import new_index_path

    assert new_index_path("My photos 2026", ws.indexes).name == "My photos 2026"
    for bad in ("../up", "a/b", ".hidden", "x" * 65, "tab\there"):
        with pytest.raises(ValueError, match="not a valid index name"):
            new_index_path(bad, ws.indexes)
    write_scenes(ws.images / "s", range(2))
    at = build_from_folder(page(), "My photos", ws.images / "s")
    assert not at.exception and not at.error
    assert (ws.indexes / "My photos" / "manifest.json").is_file()


def test_a_zip_build_names_the_zip_not_its_extraction_folder(ws: Workspace) -> None:
    """Skipped files showed hash-like extraction folders and the sources column an upload
    folder: a zip's files are shown inside the zip, and the zip is the source."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("set/notes.png", b"not a png")
        for seed in range(3):
            image = io.BytesIO()
            scene(seed).save(image, format="PNG")
            archive.writestr(f"set/img{seed}.png", image.getvalue())
    at = page()
    at.text_input(key="build_name").input("zipped")
    at.radio(key="build_source").set_value("an uploaded zip").run()
    at.selectbox(key="build_embedder").select(EMBEDDER)
    at.file_uploader(key="zip_upload").upload("My Set.zip", buffer.getvalue(), "application/zip")
    at.button(key="build_button").click().run()
    assert not at.exception and not at.error
    assert list(table(at, "reason")["file"]) == ["set/notes.png"]
    listing = table(at, "in use")
    assert list(listing["sources"]) == ["My Set.zip"]
    shown = next(d for d in at.dataframe if "in use" in d.value.columns).proto.column_order
    assert "name" in shown and "path" not in shown  # no server path on the page
