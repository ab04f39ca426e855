"""File names that are not valid UTF-8: indexed, stored losslessly, shown readably."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.duplicates import find_duplicates
from lib.images import display_path
from lib.index import add_to_index, build_index, open_index
from lib.search import search_files
from tests.index_files import stored_metadata
from tests.synthetic import scene, write_scenes

REPO = Path(__file__).resolve().parent.parent
ODD = b"caf\xe9.png"  # Latin-1 e-acute: not valid UTF-8


def _write_odd(folder: Path, seed: int, name: bytes = ODD) -> str:
    """Save scene(seed) under a raw byte name; returns its path as Python sees it."""
    raw = os.path.join(os.fsencode(folder), name)
    with open(raw, "wb") as f:
        scene(seed).save(f, format="PNG")
    return os.fsdecode(raw)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    write_scenes(images, range(6))
    _write_odd(images, 50)
    return images


def test_display_path_shows_bad_bytes_readably() -> None:
    assert display_path(os.fsdecode(b"/x/caf\xe9.png")) == "/x/caf\\xe9.png"
    assert display_path(b"/x/caf\xe9.png") == "/x/caf\\xe9.png"
    assert display_path("/x/café.png") == "/x/café.png"


def test_build_indexes_the_odd_file_and_keeps_its_bytes(folder: Path, tmp_path: Path) -> None:
    report = build_index(folder, tmp_path / "idx", embedder="pixels")
    assert report.added == 7 and report.skipped == []
    index = open_index(tmp_path / "idx")
    row = int(index.metadata.index[index.metadata["path"].str.endswith("caf\\xe9.png")][0])
    assert index.metadata["path"][row] == f"{folder}/caf\\xe9.png"
    assert os.fsencode(index.file_path(row)) == os.path.join(os.fsencode(folder), ODD)
    assert Path(index.file_path(row)).read_bytes()[:4] == b"\x89PNG"
    stored = stored_metadata(index.path)
    assert stored["path_bytes"][row] == os.path.join(os.fsencode(folder), ODD)
    assert stored["path_bytes"].isna().sum() == 6
    assert list(index.metadata.columns) == [
        "id",
        "path",
        "sha256",
        "width",
        "height",
        "caption",
        "source",
    ]
    # adding more (another odd name among them) keeps every row's bytes
    more = tmp_path / "more"
    write_scenes(more, range(60, 62))
    second = _write_odd(more, 70, b"na\xefve.png")
    add_to_index(tmp_path / "idx", more)
    index = open_index(tmp_path / "idx")
    assert index.count == 10
    assert os.fsencode(index.file_path(row)) == os.path.join(os.fsencode(folder), ODD)
    assert second in index.file_paths()
    assert index.metadata["path"].map(lambda p: p.encode("utf-8") is not None).all()
    # the odd file is found by searching with it
    (result,) = search_files(index, [second], top_k=1)
    assert result.error is None and result.matches[0].path == f"{more}/na\\xefve.png"
    assert result.matches[0].score > 0.999
    duplicates = find_duplicates(index, threshold=0.5)
    duplicates.write_csv(tmp_path / "dups.csv")
    duplicates.write_json(tmp_path / "dups.json")


def test_an_odd_images_folder_name_does_not_stop_a_build(tmp_path: Path) -> None:
    odd_dir = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"r\xe9pertoire"))
    write_scenes(Path(odd_dir), range(3))
    report = build_index(odd_dir, tmp_path / "idx", embedder="pixels")
    assert report.added == 3
    index = open_index(tmp_path / "idx")
    assert index.manifest.sources == [f"{tmp_path}/r\\xe9pertoire"]
    assert set(index.metadata["source"]) == {f"{tmp_path}/r\\xe9pertoire"}
    assert all(Path(p).is_file() for p in index.file_paths())


def test_an_odd_name_that_cannot_be_read_is_skipped_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    write_scenes(folder, range(3))
    with open(os.path.join(os.fsencode(folder), b"bro\xffken.png"), "wb") as f:
        f.write(b"not a png")
    report = build_index(folder, tmp_path / "idx", embedder="pixels")
    assert report.added == 3
    assert [(s.path, "not an image" in s.reason) for s in report.skipped] == [
        (f"{folder}/bro\\xffken.png", True)
    ]
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["skipped"][0]["path"] == f"{folder}/bro\\xffken.png"


def test_cli_build_info_and_search_by_the_odd_path(folder: Path, tmp_path: Path) -> None:
    idx = str(tmp_path / "idx")
    odd = os.path.join(os.fsencode(folder), ODD)

    def run(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "lib", "-q", *args],
            cwd=REPO,
            capture_output=True,
            timeout=300,
            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},  # as in a UTF-8 locale
        )

    built = run("index", "build", str(folder), "--out", idx, "--embedder", "pixels")
    assert built.returncode == 0, built.stderr.decode()
    assert b"indexed 7 image(s), skipped 0" in built.stdout
    info = run("index", "info", idx, "--json")
    assert info.returncode == 0, info.stderr.decode()
    assert json.loads(info.stdout.decode("utf-8"))["count"] == 7
    found = run("search", idx, odd, "--json", "--top-k", "2")
    assert found.returncode == 0, found.stderr.decode()
    (result,) = json.loads(found.stdout.decode("utf-8"))  # strict UTF-8: valid JSON
    assert result["query"] == f"{folder}/caf\\xe9.png"
    assert result["matches"][0]["path"] == f"{folder}/caf\\xe9.png"
    assert result["matches"][0]["score"] > 0.999
    assert result["verdict"] == "copy"
    text = run("search", idx, odd)
    assert text.returncode == 0, text.stderr.decode()
    assert "verdict: COPY" in text.stdout.decode("utf-8")
    dups = run("duplicates", idx, "--threshold", "0.3", "--json", "--out", str(tmp_path / "d.csv"))
    assert dups.returncode == 0, dups.stderr.decode()
    json.loads(dups.stdout.decode("utf-8"))


def test_an_index_written_before_path_bytes_still_opens(folder: Path, tmp_path: Path) -> None:
    write_scenes(tmp_path / "plain", range(10, 14))
    build_index(tmp_path / "plain", tmp_path / "idx", embedder="pixels")
    stored = stored_metadata(tmp_path / "idx")
    assert "path_bytes" not in stored.columns  # as every index written before it existed
    index = open_index(tmp_path / "idx")
    assert index.raw_paths == {} and index.file_paths() == index.metadata["path"].tolist()
    add_to_index(tmp_path / "idx", folder)
    index = open_index(tmp_path / "idx")
    assert index.count == 11 and len(index.raw_paths) == 1


def test_scan_of_generated_images_with_an_odd_name_writes_its_report(
    folder: Path, tmp_path: Path
) -> None:
    from lib.replication import scan

    index = build_index(folder, tmp_path / "idx", embedder="pixels").index
    generated = tmp_path / "generated"
    write_scenes(generated, range(2))
    _write_odd(generated, 3)
    report = scan(index, generated, out_dir=tmp_path / "report")
    assert report.generated.n == 3
    text = (tmp_path / "report" / "results.csv").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in text, "the odd generated name is written readably"
    json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))


def test_a_copy_of_an_odd_named_file_is_skipped_with_a_readable_reason(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_scenes(images, range(2))
    _write_odd(images, 50, b"a\xe9.png")
    _write_odd(images, 50, b"b\xe9.png")  # the same bytes: skipped as a duplicate of a\xe9
    report = build_index(images, tmp_path / "idx", embedder="pixels")
    assert report.added == 3
    [skipped] = report.skipped
    assert skipped.path.endswith("b\\xe9.png")
    assert "a\\xe9.png" in skipped.reason and "same sha256" in skipped.reason
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["skipped"][0]["reason"] == skipped.reason
