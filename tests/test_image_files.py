"""Folder listing (lib.image_files): images are found by content whatever their suffix
(.jpe, .avif, none), every other file is listed with its reason (HEIC without a decoder,
text, SVG, a FIFO, a broken link), symbolic links leaving the folder are never followed,
and only hidden files, system files and sidecars are left out silently. ``index build``
indexes the images and never the file behind a link that leaves the folder."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image, features

from lib.image_files import OUTSIDE_LINK, list_folder
from lib.images import list_image_files, load_image
from lib.index import open_index
from tests.cli_runner import run_cli
from tests.synthetic import scene

FAKE_HEIC = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(200)
SVG = b'<?xml version="1.0"?>\n<!-- drawn by hand -->\n<svg xmlns="http://www.w3.org/2000/svg"/>'


def _image_bytes(seed: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    scene(seed).save(buffer, format=fmt)
    return buffer.getvalue()


def _can_write_avif() -> bool:
    if not features.check("avif"):
        return False
    try:
        Image.new("RGB", (8, 8)).save(io.BytesIO(), format="AVIF")
    except (OSError, KeyError, ValueError):
        return False
    return True


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A training folder holding every kind of entry, and a secret image outside it."""
    folder = tmp_path / "train"
    (folder / "sub").mkdir(parents=True)
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "secret.png").write_bytes(_image_bytes(99, "PNG"))
    files = {
        "a.png": _image_bytes(1, "PNG"),
        "b.jpe": _image_bytes(2, "JPEG"),
        "noext": _image_bytes(3, "PNG"),  # an image without a suffix
        "cat.png": _image_bytes(4, "PNG"),
        "cat.txt": b"a cat\n",  # its caption: a sidecar
        "stamp.png": _image_bytes(5, "PNG"),
        "stamp.dat": b"nomirror\n",  # Tux Paint's sidecars
        "stamp_desc_fr.ogg": b"OggS",
        "broken.png": b"not an image",  # an image suffix: the loader says why
        "photo.heic": FAKE_HEIC,
        "notes.txt": b"not a caption of anything",
        "drawing.svg": SVG,
        "Thumbs.db": b"\0",
        ".DS_Store": b"\0",
        "sub/real.png": _image_bytes(6, "PNG"),
    }
    if _can_write_avif():
        files["c.avif"] = _image_bytes(7, "AVIF")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / ".git").mkdir()
    (folder / ".git" / "x.png").write_bytes(_image_bytes(8, "PNG"))
    (folder / "link_out.png").symlink_to(secret / "secret.png")
    (folder / "link_dir_out").symlink_to(secret)
    (folder / "link_in.png").symlink_to(folder / "sub" / "real.png")
    (folder / "link_dir_in").symlink_to(folder / "sub")
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    return folder


def test_listing_decides_by_content_and_gives_every_reason(mixed: Path, tmp_path: Path) -> None:
    os.mkfifo(mixed / "pipe")  # never opened: listing a FIFO would block
    listing = list_folder(mixed)
    images = [p.relative_to(mixed).as_posix() for p in listing.images]
    expected = ["a.png", "b.jpe", "broken.png", "cat.png", "link_in.png", "noext"]
    expected += ["stamp.png", "sub/real.png"]
    if (mixed / "c.avif").exists():
        expected.append("c.avif")
    assert images == sorted(expected)
    reasons = {Path(s.path).relative_to(mixed).as_posix(): s.reason for s in listing.skipped}
    assert reasons == {
        "dangling.png": "broken symbolic link",
        "drawing.svg": "SVG: vector image, not decoded (export it as PNG to index it)",
        "link_dir_out": OUTSIDE_LINK,
        "link_out.png": OUTSIDE_LINK,
        "notes.txt": "not an image (unrecognised format)",
        "photo.heic": "HEIC/HEIF: no decoder installed (pip install pillow-heif)",
        "pipe": "not a regular file (FIFO)",
    }
    # cat.txt, stamp.dat, stamp_desc_fr.ogg, Thumbs.db, .DS_Store, .git, link_dir_in
    assert listing.ignored == 7


def test_an_avif_is_listed_and_loads(tmp_path: Path) -> None:
    if not _can_write_avif():
        pytest.skip("this Pillow cannot write AVIF (needs Pillow 11.3+ built with libavif)")
    (tmp_path / "photo.avif").write_bytes(_image_bytes(7, "AVIF"))
    assert list_image_files(tmp_path) == [tmp_path / "photo.avif"]
    assert load_image(tmp_path / "photo.avif").image.size == scene(7).size


def test_links_out_of_the_folder_are_never_listed_as_images(mixed: Path) -> None:
    found = list_image_files(mixed)
    assert mixed / "link_out.png" not in found
    assert all(p.resolve().is_relative_to(mixed.resolve()) for p in found)
    assert list_image_files(mixed, recursive=False) == [
        p for p in found if p.parent == mixed and p.name != "real.png"
    ]


def test_a_folder_reached_through_a_link_is_listed(tmp_path: Path, mixed: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(mixed)  # the folder itself may be a link; its targets are judged
    listing = list_folder(alias)
    assert alias / "link_in.png" in listing.images
    assert OUTSIDE_LINK in {s.reason for s in listing.skipped}


def _build(mixed: Path, tmp_path: Path) -> tuple[str, list[str]]:
    out = tmp_path / "idx"
    done = run_cli("index", "build", str(mixed), "--out", str(out), "--embedder", "pixels")
    assert done.returncode == 0, done.stderr
    paths = open_index(out).metadata["path"].tolist()
    return done.stderr, [Path(p).relative_to(mixed).as_posix() for p in paths]


def test_index_build_indexes_every_image_and_never_a_link_out(mixed: Path, tmp_path: Path) -> None:
    stderr, indexed = _build(mixed, tmp_path)
    expected = {"a.png", "b.jpe", "cat.png", "noext", "stamp.png", "sub/real.png"}
    if (mixed / "c.avif").exists():
        expected.add("c.avif")
    assert set(indexed) == expected  # link_in.png is the same file as sub/real.png
    assert "secret" not in stderr and "link_out" not in {Path(p).stem for p in indexed}
    assert "broken.png: not an image" in stderr  # the loader's reason, as before


def test_index_build_lists_every_file_it_left_out(mixed: Path, tmp_path: Path) -> None:
    stderr, _ = _build(mixed, tmp_path)
    assert "photo.heic: HEIC/HEIF: no decoder installed (pip install pillow-heif)" in stderr
    assert "notes.txt: not an image (unrecognised format)" in stderr
    assert "drawing.svg: SVG: vector image" in stderr
    assert f"link_out.png: {OUTSIDE_LINK}" in stderr
    assert "cat.txt" not in stderr and "Thumbs.db" not in stderr
