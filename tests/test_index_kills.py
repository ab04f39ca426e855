"""Writes are all-or-nothing as a user sees them: each index writer is killed at every
rename it makes (the commit points), and after each kill the index opens with the rows
of one committed state and verdict thresholds that describe those rows; the next writer
sweeps what the killed one left and stores a fresh calibration."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lib.calibration import is_stale
from lib.index import add_to_index, build_index, open_index
from tests.synthetic import write_scenes

REPO = Path(__file__).resolve().parent.parent

# Runs one writer in a child process whose os.replace / os.rename exits the process (as
# SIGKILL would: no cleanup, no finally) just before the Nth rename; N=0 never kills.
# Prints the number of renames it made when it was not killed.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    kill_at = int(sys.argv[1])
    calls = [0]
    def counting(real):
        def rename(*args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at:
                os._exit(137)
            return real(*args, **kwargs)
        return rename
    os.replace = counting(os.replace)
    os.rename = counting(os.rename)
    from lib.index import (
        add_to_index, build_index, calibrate_index, compact_index, upgrade_index,
    )
    writer, index, extra = sys.argv[2], sys.argv[3], sys.argv[4:]
    if writer == "build":  # over the existing index, resuming a killed one
        build_index(extra[0], index, embedder="pixels", segment_files=8, resume=True)
    elif writer == "add":
        add_to_index(index, extra[0], segment_files=8)
    elif writer == "compact":
        compact_index(index)
    elif writer == "calibrate":
        calibrate_index(index)
    elif writer == "upgrade":
        upgrade_index(index)
    print(json.dumps({"renames": calls[0]}))
    """
)


def _run(kill_at: int, writer: str, index: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(kill_at), writer, str(index), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _leftovers(index: Path) -> list[str]:
    """Files a killed writer may leave that no committed state names."""
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    named = {s["name"] for s in manifest.get("segments", [])}
    found = [p.name for p in index.glob(".manifest.json.tmp-*")]
    found += [p.name for p in index.parent.glob(f".{index.name}.upgrading-*")]
    found += [p.name for p in index.parent.glob(f".{index.name}.old-*")]
    found += [p.name for p in index.parent.glob(f".{index.name}.building")]
    if (index / "segments").is_dir():
        found += [p.name for p in (index / "segments").iterdir() if p.name not in named]
    ann_file = Path(str(manifest["ann"]["file"])).name if manifest.get("ann") else None
    if (index / "ann").is_dir():
        found += [p.name for p in (index / "ann").iterdir() if p.name != ann_file]
    return found


def _copy(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def _kill_at_every_rename(
    tmp_path: Path, writer: str, original: Path, extra: list[str], counts: set[int]
) -> None:
    """Kill ``writer`` at each of its renames on a fresh copy of ``original``; after each
    kill check what a reader sees, then run the writer again (the next writer) and check
    that it leaves a clean, freshly calibrated index."""
    from lib.allowed_paths import remember_source

    for folder in extra:  # remembered once here, so every run makes the same renames
        remember_source(folder)
    clean = _run(0, writer, _copy(original, tmp_path / "dry"), *extra)
    assert clean.returncode == 0, clean.stderr
    renames = json.loads(clean.stdout.strip().splitlines()[-1])["renames"]
    assert renames >= 1, f"{writer} made no rename"
    for kill_at in range(1, renames + 1):
        copy = _copy(original, tmp_path / f"kill-{kill_at}")
        killed = _run(kill_at, writer, copy, *extra)
        assert killed.returncode == 137, f"rename {kill_at}: {killed.stderr}"
        reader = open_index(copy)  # a reader after the kill
        assert reader.count in counts, f"rename {kill_at}: {reader.count} rows"
        fresh = reader._fit_calibration()  # what the rows it holds now measure
        assert reader.calibration.null_scores == fresh.null_scores, (
            f"{writer} killed at rename {kill_at}/{renames}: the verdicts would use a "
            f"null measured on other rows than the {reader.count} it holds"
        )
        again = _run(0, writer, copy, *extra)  # the next writer
        assert again.returncode == 0 or "nothing" in again.stderr.lower(), again.stderr
        assert _leftovers(copy) == [], f"{writer} killed at rename {kill_at}: leftovers"
        stored = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
        assert not is_stale(stored["calibration"], stored["count"]), (
            f"{writer} killed at rename {kill_at}: the next writer left a stale calibration"
        )


@pytest.fixture
def small_index(tmp_path: Path) -> Path:
    write_scenes(tmp_path / "a", range(24))
    return build_index(tmp_path / "a", tmp_path / "base", embedder="pixels").index.path


def test_an_add_killed_at_any_rename_never_leaves_thresholds_of_fewer_rows(
    tmp_path: Path, small_index: Path
) -> None:
    write_scenes(tmp_path / "more", range(100, 120))
    _kill_at_every_rename(tmp_path, "add", small_index, [str(tmp_path / "more")], {24, 32, 40, 44})


def test_compact_and_calibrate_killed_at_any_rename_keep_the_index(
    tmp_path: Path, small_index: Path
) -> None:
    write_scenes(tmp_path / "more", range(100, 106))
    for start in (100, 102, 104):  # three small segments for compact to merge
        add_to_index(small_index, [tmp_path / "more" / f"img_{start + i:04d}.png" for i in (0, 1)])
    _kill_at_every_rename(tmp_path / "c", "compact", small_index, [], {30})
    _kill_at_every_rename(tmp_path / "k", "calibrate", small_index, [], {30})


def test_an_upgrade_killed_at_any_rename_leaves_no_copy_beside_the_index(tmp_path: Path) -> None:
    from tests.test_index_segments import _format1

    old = _format1(tmp_path)
    _kill_at_every_rename(tmp_path, "upgrade", old, [], {9})


def test_a_stale_calibration_is_reported_refitted_on_open_and_stored_by_the_next_add(
    tmp_path: Path, small_index: Path
) -> None:
    """The case from the review: rows committed, the refit never ran."""
    from tests.cli_runner import run_cli

    manifest_path = small_index / "manifest.json"
    write_scenes(tmp_path / "more", range(200, 236))
    add_to_index(small_index, tmp_path / "more")
    fresh = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert fresh["count"] == 60 and fresh["calibration"]["fitted_rows"] == 60
    # what a kill between the last segment's commit and the refit leaves: old thresholds
    stale = dict(fresh)
    stale["calibration"] = dict(fresh["calibration"], fitted_rows=24, copy_threshold=0.01)
    manifest_path.write_text(json.dumps(stale), encoding="utf-8")

    info = run_cli("index", "info", str(small_index))
    assert info.returncode == 0, info.stderr
    assert "stale" in info.stdout and "24" in info.stdout
    info_json = json.loads(run_cli("index", "info", str(small_index), "--json").stdout)
    assert info_json["calibration_stale"] is True and info_json["recalibrated_on_open"] is True

    reader = open_index(small_index)
    assert reader.recalibrated and reader.calibration.fitted_rows == 60
    assert reader.calibration.copy_threshold != 0.01

    again = run_cli("index", "add", str(small_index), str(tmp_path / "more"))
    assert again.returncode != 0  # nothing new to add ...
    stored = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert stored["calibration"]["fitted_rows"] == 60  # ... but the refit was stored
    assert stored["calibration"]["copy_threshold"] != 0.01
    assert not open_index(small_index).recalibrated


def test_a_build_killed_at_any_rename_leaves_the_old_index_or_the_new_one(
    tmp_path: Path, small_index: Path
) -> None:
    """A rebuild over an index, killed at each rename (segments, staging manifests, the
    two renames of the swap): a reader finds the old index or the new one, never none,
    and the same build resumed leaves no staging folder or old copy behind."""
    write_scenes(tmp_path / "new", range(300, 320))
    _kill_at_every_rename(tmp_path, "build", small_index, [str(tmp_path / "new")], {24, 20})
