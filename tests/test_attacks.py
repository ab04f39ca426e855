"""What a hostile colleague tried after the first round of fixes (a review that attacked
them), each now refused quickly, without blocking, reading outside, or eating memory."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from lib.index import IndexNotFound, build_index, open_index
from lib.index.catalog import read_card
from tests.cli_runner import run_cli
from tests.synthetic import write_scenes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attacks")
    write_scenes(root / "train", range(6))
    return build_index(root / "train", root / "idx", embedder="pixels").index.path


def _copy(built: Path, dest: Path) -> Path:
    shutil.copytree(built, dest)
    return dest


def _segment(index: Path) -> Path:
    return next((index / "segments").iterdir())


def test_a_sparse_giant_manifest_is_refused_unread(built: Path, tmp_path: Path) -> None:
    index = _copy(built, tmp_path / "root" / "big")
    with (index / "manifest.json").open("r+b") as fh:
        fh.truncate(1 << 31)  # 2 GB, sparse: a few KB on disk
    start = time.monotonic()
    with pytest.raises(IndexNotFound, match="larger than"):
        open_index(index)
    assert time.monotonic() - start < 5


def test_a_fifo_in_a_segment_never_blocks_a_reader(built: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _copy(built, root / "healthy")
    fifo = _copy(built, root / "fifo")
    vectors = _segment(fifo) / "vectors.npy"
    vectors.unlink()
    os.mkfifo(vectors)
    result = subprocess.run(
        [sys.executable, "-m", "lib", "index", "list", str(root)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "healthy" in result.stdout and "not a regular file" in result.stdout + result.stderr
    manifest = fifo / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    assert "damaged" in read_card(fifo).error


def test_a_parquet_bomb_is_refused_from_its_footer(built: Path, tmp_path: Path) -> None:
    index = _copy(built, tmp_path / "bomb")
    meta = _segment(index) / "metadata.parquet"
    frame = pd.read_parquet(meta)
    big = pd.concat([frame] * 20_000, ignore_index=True)  # 120,000 rows for 6 in the manifest
    big.to_parquet(meta, index=False)
    with pytest.raises(IndexNotFound, match="refusing to decode"):
        open_index(index)


def test_a_nan_threshold_and_a_linked_segments_folder_are_refused(
    built: Path, tmp_path: Path
) -> None:
    nan = _copy(built, tmp_path / "nan")
    text = (nan / "manifest.json").read_text(encoding="utf-8")
    data = json.loads(text)
    data["calibration"]["copy_threshold"] = float("nan")
    (nan / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(IndexNotFound, match="copy_threshold"):
        open_index(nan)
    linked = _copy(built, tmp_path / "linked")
    elsewhere = tmp_path / "elsewhere"
    shutil.move(linked / "segments", elsewhere)
    (linked / "segments").symlink_to(elsewhere)
    with pytest.raises(IndexNotFound, match="leads outside"):
        open_index(linked)


def test_a_report_record_of_a_million_empty_objects_is_refused_before_parsing(
    tmp_path: Path,
) -> None:
    from lib.evidence.document import DocumentError, read_document

    path = tmp_path / "bomb.json"
    body = ",".join(["{}"] * 2_500_000)
    path.write_text('{"kind":"replica-evidence","version":1,"findings":[' + body + "]}")
    with pytest.raises(DocumentError, match="JSON values"):
        read_document(path)


def test_verify_never_reads_a_query_file_outside_the_allowed_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lib.evidence.verify import _query_bytes
    from tests.evidence_helpers import small_index

    index, query = small_index(tmp_path / "made")
    result = run_cli("report", str(index), str(query), "--out", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    secret = tmp_path / "private" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("secret-token-123\n")
    record = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    record["findings"][0]["query"]["path"] = str(secret)
    (tmp_path / "r.json").write_text(json.dumps(record), encoding="utf-8")
    config = tmp_path / "replica.toml"
    config.write_text(f'image_roots = ["{tmp_path / "made"}"]\n')
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    from lib.evidence.document import read_document

    finding = read_document(tmp_path / "r.json").findings[0]
    data, where = _query_bytes(finding, None)
    assert data != secret.read_bytes() and "secret.txt" not in where


def test_icon_containers_are_listed_not_decoded(tmp_path: Path) -> None:
    from lib.images import ImageLoadError, load_image

    path = tmp_path / "big.ico"
    Image.new("RGB", (64, 64), "red").save(path, format="ICO")
    with pytest.raises(ImageLoadError):  # Pillow would decode it inside Image.open
        load_image(path)


def test_empty_zip_entries_are_charged_a_disk_block_each(tmp_path: Path) -> None:
    from lib.uploads import FILE_CHARGE, UploadLedger, UploadLimitExceeded, extract_zip

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(2_000):
            archive.writestr(f"img{i:05d}.png", b"")
    ledger = UploadLedger(limit_bytes=1_000 * FILE_CHARGE)
    with pytest.raises(UploadLimitExceeded):
        extract_zip(io.BytesIO(buffer.getvalue()), "many.zip", root=tmp_path, ledger=ledger)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_a_received_index_cannot_choose_the_folders_it_may_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest that records someone's picture folder as its source (and a row pointing
    into it) gets nothing from there: recorded sources count only when this machine
    indexed them."""
    import base64

    from tests.test_allowed_paths import point_row_at

    made = tmp_path / "made"
    write_scenes(made / "train", range(24))
    index = build_index(made / "train", made / "idx", embedder="pixels").index.path
    victim = tmp_path / "alice" / "Pictures"
    victim.mkdir(parents=True)
    Image.new("RGB", (160, 120), (255, 0, 255)).save(victim / "private.png")
    received = tmp_path / "received"
    shutil.copytree(index, received)
    data = json.loads((received / "manifest.json").read_text(encoding="utf-8"))
    data["sources"] = [*data["sources"], str(victim)]
    (received / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    point_row_at(received, "img_0005.png", victim / "private.png")
    config = tmp_path / "replica.toml"
    config.write_text(f'image_roots = ["{made}"]\n')
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    query = tmp_path / "q.png"
    shutil.copy(made / "train" / "img_0005.png", query)
    result = run_cli("report", str(received), str(query), "--out", str(tmp_path / "r.html"))
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    secret = base64.b64encode((victim / "private.png").read_bytes()).decode()
    assert secret[:200] not in html and "outside the folders" in html
