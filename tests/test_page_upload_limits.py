"""Upload limits in the app (AppTest): the Indexes page refuses a zip over the per-zip limit
and a zip over what the session may still store, saying which setting applies; the
Distributions page writes loose uploads into the private temporary folder, sweeps sets
older than ``upload_temp_hours`` there, and charges the session's allowance too."""

from __future__ import annotations

import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.index import build_index
from tests.synthetic import scene, write_scenes


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    scene(seed).save(buffer, format="PNG")
    return buffer.getvalue()


def png_zip(seeds: range) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for seed in seeds:
            archive.writestr(f"img_{seed}.png", png(seed))
    return buffer.getvalue()


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **limits: int) -> Path:
    """Point the app at ``tmp_path`` with ``limits`` (app-config keys) and a private $TMPDIR."""
    uploads = tmp_path / "uploads"
    lines = [
        f'index_root = "{tmp_path / "indexes"}"',
        f'image_roots = ["{tmp_path / "images"}"]',
        f'upload_root = "{uploads}"',
        *(f"{key} = {value}" for key, value in limits.items()),
    ]
    config = tmp_path / "replica.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return uploads


def zip_build(at: AppTest, name: str, data: bytes) -> AppTest:
    at.text_input(key="build_name").input(name)
    at.radio(key="build_source").set_value("an uploaded zip").run()
    at.selectbox(key="build_embedder").select("pixels")
    at.file_uploader(key="zip_upload").upload(f"{name}.zip", data, "application/zip")
    return at.button(key="build_button").click().run()


def errors(at: AppTest) -> str:
    return " ".join(str(e.value) for e in at.error)


def test_indexes_page_keeps_the_zip_and_session_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lib.uploads import on_disk

    four = 4 * on_disk(len(png(0))) + 2_000  # every file is charged at least a disk block
    uploads = configure(tmp_path, monkeypatch, upload_zip_bytes=four, upload_session_bytes=four)
    at = AppTest.from_file("../pages/indexes.py", default_timeout=120)
    at.session_state["index_path"] = None
    at.run()

    zip_build(at, "too-big", png_zip(range(6)))
    assert "upload_zip_bytes" in errors(at)
    assert not uploads.exists() or not list(uploads.iterdir())

    zip_build(at, "first", png_zip(range(4)))
    assert not at.exception and not at.error, errors(at)
    assert len(list(uploads.iterdir())) == 1

    zip_build(at, "second", png_zip(range(10, 12)))  # fits one zip, not this session's rest
    assert "upload_session_bytes" in errors(at) and "ask the administrator" in errors(at)
    assert len(list(uploads.iterdir())) == 1


@pytest.fixture
def pixels_index(tmp_path: Path) -> Path:
    write_scenes(tmp_path / "images", range(6))
    return build_index(tmp_path / "images", tmp_path / "idx", embedder="pixels").index.path


def test_distributions_page_uploads_go_to_a_private_swept_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels_index: Path
) -> None:
    configure(tmp_path, monkeypatch, upload_session_bytes=3 * len(png(3)))
    private = tmp_path / "tmp" / f"replica-uploads-{os.getuid()}"
    private.mkdir(mode=0o700)
    stale = private / ("set-" + "0" * 16)
    stale.mkdir()
    os.utime(stale, (time.time() - 25 * 3600,) * 2)  # older than upload_temp_hours (24)
    at = AppTest.from_file("../pages/distributions.py", default_timeout=120)
    at.session_state["index_path"] = str(pixels_index)
    at.run()
    at.radio(key="dist_source").set_value("uploaded images").run()
    uploader = at.file_uploader(key="dist_uploads")
    uploader.upload("mine.png", png(3), "image/png")
    at.run()
    assert not at.exception and not at.error, errors(at)
    assert not stale.exists()
    [kept] = private.iterdir()
    assert kept.name.startswith("set-") and [p.name for p in kept.iterdir()] == ["0000_mine.png"]
    assert not list((tmp_path / "tmp").glob("replica-upload-*"))

    uploader = at.file_uploader(key="dist_uploads")
    for seed in (4, 5, 6):  # three more: over what the session may still store
        uploader.upload(f"more{seed}.png", png(seed), "image/png")
    at.run()
    assert "These images cannot be uploaded" in errors(at)
    assert "upload_session_bytes" in errors(at)
