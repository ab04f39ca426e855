"""One writer at a time: concurrent `index add` runs both land; --no-wait refuses."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lib.index import (
    IndexLocked,
    add_to_index,
    build_index,
    lock_path,
    open_index,
    writer_lock,
)
from tests.synthetic import write_scenes

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lib", "-q", *args]


@contextmanager
def _held(index: Path) -> Iterator[None]:
    """Hold the index's lock file the way another process would (plain flock)."""
    fd = os.open(lock_path(index), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        yield
    finally:
        os.close(fd)


@pytest.fixture
def index(tmp_path: Path) -> Path:
    write_scenes(tmp_path / "base", range(5))
    build_index(tmp_path / "base", tmp_path / "idx", embedder="pixels")
    return tmp_path / "idx"


def test_two_concurrent_adds_both_land(index: Path, tmp_path: Path) -> None:
    write_scenes(tmp_path / "a", range(100, 120), prefix="a")
    write_scenes(tmp_path / "b", range(200, 220), prefix="b")
    procs = [
        subprocess.Popen(
            _cli("index", "add", str(index), str(tmp_path / name)),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in ("a", "b")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    final = open_index(index)
    assert final.count == 5 + 20 + 20
    names = {Path(p).name for p in final.metadata["path"]}
    assert {f"a_{i:04d}.png" for i in range(100, 120)} <= names
    assert {f"b_{i:04d}.png" for i in range(200, 220)} <= names
    assert final.metadata["id"].is_unique
    assert not lock_path(index).exists(), "the lock file is removed by the last writer"


def test_no_wait_exits_1_while_another_writer_holds_the_lock(index: Path, tmp_path: Path) -> None:
    write_scenes(tmp_path / "more", range(300, 303))
    with _held(index):
        for args in (
            ("index", "add", str(index), str(tmp_path / "more"), "--no-wait"),
            ("index", "calibrate", str(index), "--no-wait"),
            ("index", "build", str(tmp_path / "more"), "--out", str(index), "--no-wait"),
        ):
            done = subprocess.run(
                _cli(*args), cwd=REPO, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 1, done.stderr
            assert "another writer (process 4242) is changing the index" in done.stderr
    assert open_index(index).count == 5


def test_a_writer_waits_for_the_lock_and_says_so(index: Path, tmp_path: Path) -> None:
    write_scenes(tmp_path / "more", range(300, 303))
    with _held(index):
        proc = subprocess.Popen(
            _cli("index", "add", str(index), str(tmp_path / "more")),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(4)
        assert proc.poll() is None, "the add must wait while the lock is held"
        assert open_index(index).count == 5
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"waiting for another writer of {index}" in err
    assert open_index(index).count == 8


def test_library_waits_reports_and_refuses(index: Path, tmp_path: Path) -> None:
    write_scenes(tmp_path / "more", range(300, 303))
    with writer_lock(index):
        with pytest.raises(IndexLocked, match="another writer"):
            add_to_index(index, tmp_path / "more", wait=False)
        messages: list[str] = []
        results: list[int] = []
        worker = threading.Thread(
            target=lambda: results.append(
                add_to_index(index, tmp_path / "more", on_wait=messages.append).added
            )
        )
        worker.start()
        time.sleep(1)
        assert worker.is_alive() and results == []
    worker.join(timeout=120)
    assert results == [3]
    assert messages == [f"waiting for another writer of {index} (process {os.getpid()})…"]
    assert open_index(index).count == 8


def test_a_stale_lock_file_from_a_killed_writer_does_not_block(index: Path) -> None:
    lock_path(index).write_text("999999\n")  # left behind by a killed process: not locked
    with writer_lock(index, wait=False):
        pass
    assert not lock_path(index).exists()
