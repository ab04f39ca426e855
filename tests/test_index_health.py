"""Missing files are counted, never invisible: an index whose image files are gone (an
import whose files stayed elsewhere, a moved folder) says how many, exactly or estimated."""

from __future__ import annotations

from pathlib import Path

from lib.index import build_index
from lib.index.health import MissingFiles, missing_files
from tests.synthetic import write_scenes


def test_missing_files_are_counted_exactly_or_estimated(tmp_path: Path) -> None:
    paths = write_scenes(tmp_path / "train", range(12))
    index = build_index(tmp_path / "train", tmp_path / "idx", embedder="pixels").index
    assert missing_files(index).words() == ""
    for path in paths[:9]:
        path.unlink()
    exact = missing_files(index)
    assert (exact.missing, exact.checked, exact.total) == (9, 12, 12) and not exact.estimated
    assert exact.words() == "9 of 12 files not found on this server"
    sampled = missing_files(index, sample=6)
    assert sampled.estimated and sampled.checked == 6
    assert "about" in sampled.words() and "estimated from 6" in sampled.words()
    assert MissingFiles(999_940, 20_000, 1_000_000).missing == 999_940
