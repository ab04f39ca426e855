"""On-disk index: build, reopen, add without duplicates, refuse mismatches, atomic writes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.embedders import create_embedder
from lib.index import (
    EmbedderMismatch,
    IndexNotFound,
    IndexWriteError,
    NoImagesError,
    add_to_index,
    build_index,
    delete_index,
    list_indexes,
    open_index,
)
from lib.search import search_files
from tests.synthetic import write_scenes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """8 distinct scenes, a corrupt PNG, a text file named .jpg, and a byte-identical copy."""
    folder = tmp_path / "images"
    paths = write_scenes(folder, range(8))
    (folder / "corrupt.png").write_bytes(paths[0].read_bytes()[:200])
    (folder / "notes.jpg").write_text("not an image")
    shutil.copy(paths[1], folder / "sub_copy_of_1.png")
    (folder / "readme.md").write_text("listed: not an image")
    return folder


def test_build_writes_segments_and_manifest(images: Path, tmp_path: Path) -> None:
    report = build_index(images, tmp_path / "idx", embedder="pixels")
    assert report.added == 8
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"corrupt.png", "notes.jpg", "readme.md", "sub_copy_of_1.png"}
    assert "truncated" in reasons["corrupt.png"] or "corrupt" in reasons["corrupt.png"]
    assert "not an image" in reasons["notes.jpg"]
    assert reasons["readme.md"] == "not an image (unrecognised format)"
    assert "same sha256" in reasons["sub_copy_of_1.png"]

    index = open_index(tmp_path / "idx")
    assert sorted(p.name for p in index.path.iterdir()) == ["manifest.json", "segments"]
    manifest = json.loads((index.path / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["build"] is None and manifest["ann"] is None
    [segment] = manifest["segments"]
    assert segment["rows"] == 8
    folder = index.path / "segments" / segment["name"]
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.parquet", "vectors.npy"]
    assert np.load(folder / "vectors.npy").shape == (8, 3072)
    assert not list(tmp_path.glob(".idx.*")), "the staging folder is gone"
    meta = pd.read_parquet(folder / "metadata.parquet")
    assert list(meta.columns) == ["id", "path", "sha256", "width", "height", "caption", "source"]
    assert meta["id"].tolist() == list(range(8))
    assert (meta["width"] == 160).all() and (meta["height"] == 120).all()
    assert manifest["embedder"]["name"] == "pixels"
    assert manifest["dim"] == 3072 and manifest["count"] == 8
    assert manifest["metric"] == "inner_product"
    assert len(manifest["skipped"]) == 4
    assert "faiss-cpu" in manifest["versions"]
    vectors = index.vectors()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_captions_come_from_sidecar_text(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    paths = write_scenes(folder, range(3))
    paths[0].with_suffix(".txt").write_text("A red bird.\nfr.utf8=Un oiseau\n")
    index = build_index(folder, tmp_path / "idx", embedder="pixels").index
    assert index.metadata["caption"].tolist() == ["A red bird.", "", ""]


def test_add_skips_files_already_indexed(images: Path, tmp_path: Path) -> None:
    build_index(images, tmp_path / "idx", embedder="pixels")
    more = tmp_path / "more"
    write_scenes(more, range(8, 12))
    shutil.copy(images / "img_0003.png", more / "again.png")
    report = add_to_index(tmp_path / "idx", more)
    assert report.added == 4
    assert [Path(s.path).name for s in report.skipped] == ["again.png"]
    index = open_index(tmp_path / "idx")
    assert index.count == 12
    assert index.metadata["id"].tolist() == list(range(12))
    assert index.metadata["sha256"].is_unique
    # the new images are found by search, the old ones still are
    hits = search_files(index, [more / "img_0010.png", images / "img_0002.png"], top_k=1)
    assert [Path(h.matches[0].path).name for h in hits] == ["img_0010.png", "img_0002.png"]
    with pytest.raises(NoImagesError, match="already in the index"):
        add_to_index(tmp_path / "idx", more)
    assert open_index(tmp_path / "idx").count == 12


def test_search_with_another_embedder_is_refused(images: Path, tmp_path: Path) -> None:
    index = build_index(images, tmp_path / "idx", embedder="pixels").index
    with pytest.raises(EmbedderMismatch, match="built with embedder 'pixels'"):
        search_files(index, [images / "img_0001.png"], embedder=create_embedder("sscd-distilled"))


def test_empty_and_unreadable_folders_write_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoImagesError, match="no image files found"):
        build_index(empty, tmp_path / "idx", embedder="pixels")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    (bad / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(NoImagesError, match="could be read") as info:
        build_index(bad, tmp_path / "idx", embedder="pixels")
    assert len(info.value.skipped) == 2
    assert not (tmp_path / "idx").exists()
    with pytest.raises(FileNotFoundError):
        build_index(tmp_path / "missing", tmp_path / "idx", embedder="pixels")


def test_full_disk_during_write_keeps_the_old_index(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_index(images, tmp_path / "idx", embedder="pixels")
    before = (tmp_path / "idx" / "manifest.json").read_bytes()

    def disk_full(self: pd.DataFrame, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    more = tmp_path / "more"
    write_scenes(more, range(20, 23))
    with pytest.raises(IndexWriteError, match="No space left"):
        add_to_index(tmp_path / "idx", more)
    monkeypatch.undo()
    assert (tmp_path / "idx" / "manifest.json").read_bytes() == before
    assert open_index(tmp_path / "idx").count == 8
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert len(list((tmp_path / "idx" / "segments").iterdir())) == 1, "no half-written segment"


def test_killed_build_leaves_the_previous_index_intact(tmp_path: Path) -> None:
    small = tmp_path / "small"
    write_scenes(small, range(3))
    build_index(small, tmp_path / "idx", embedder="sscd-distilled")
    big = tmp_path / "big"
    write_scenes(big, range(100, 400))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lib",
            "index",
            "build",
            str(big),
            "--out",
            str(tmp_path / "idx"),
            "--embedder",
            "sscd-distilled",
            "--batch-size",
            "8",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 120
    progressed = b""
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    while time.time() < deadline and b"/300" not in progressed:
        progressed += proc.stderr.read() or b""
        time.sleep(0.2)
    assert b"/300" in progressed, "the build never reported progress"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    index = open_index(tmp_path / "idx")
    assert index.count == 3
    assert sorted(Path(p).name for p in index.metadata["path"]) == [
        "img_0000.png",
        "img_0001.png",
        "img_0002.png",
    ]


def test_open_refuses_non_index_folders(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound, match="not a Replica index"):
        open_index(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(IndexNotFound, match="damaged"):
        open_index(tmp_path)


def test_list_and_delete(images: Path, tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    build_index(images, root / "b", embedder="pixels")
    build_index(images, root / "a", embedder="pixels")
    (root / "not-an-index").mkdir()
    assert [p.name for p in list_indexes(root)] == ["a", "b"]
    delete_index(root / "a")
    assert [p.name for p in list_indexes(root)] == ["b"]
    with pytest.raises(IndexNotFound):
        delete_index(root / "not-an-index")
