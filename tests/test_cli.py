"""The command line as users and acceptance checks call it: output shapes and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.cli import main
from tests.cli_runner import run_cli
from tests.synthetic import scene, write_scenes


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_scenes(root / "train", range(25))
    assert (
        main(
            [
                "-q",
                "index",
                "build",
                str(root / "train"),
                "--out",
                str(root / "idx"),
                "--embedder",
                "sscd-distilled",
            ]
        )
        == 0
    )
    return root / "idx"


def test_build_prints_a_one_line_summary(tmp_path: Path) -> None:
    write_scenes(tmp_path / "imgs", range(3))
    (tmp_path / "imgs" / "bad.png").write_bytes(b"nope")
    done = run_cli(
        "index",
        "build",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "idx"),
        "--embedder",
        "pixels",
    )
    assert done.returncode == 0, done.stderr
    assert "indexed 3 image(s), skipped 1" in done.stdout
    assert "bad.png" in done.stderr


def test_search_json_shape(index_dir: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q"
    queries.mkdir()
    scene(4).crop((10, 10, 150, 110)).save(queries / "copy_of_4.png")
    scene(999).save(queries / "unrelated.png")
    (queries / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    done = run_cli("search", str(index_dir), str(queries), "--top-k", "3", "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    by_name = {Path(r["query"]).name: r for r in results}
    assert set(by_name) == {"copy_of_4.png", "unrelated.png", "broken.jpg"}
    assert all(Path(r["query"]).is_absolute() for r in results)
    assert "error" in by_name["broken.jpg"] and by_name["broken.jpg"]["error"]
    hit = by_name["copy_of_4.png"]
    assert hit["verdict"] in {"copy", "similar", "none"}
    assert len(hit["matches"]) == 3
    first = hit["matches"][0]
    assert set(first) >= {"rank", "path", "score", "calibrated", "caption", "id"}
    assert first["rank"] == 1 and Path(first["path"]).name == "img_0004.png"
    assert Path(first["path"]).is_absolute()
    assert hit["score"] == pytest.approx(first["calibrated"])
    assert [m["rank"] for m in hit["matches"]] == [1, 2, 3]
    assert hit["matches"][0]["score"] >= hit["matches"][1]["score"]


def test_exit_codes(index_dir: Path, tmp_path: Path) -> None:
    assert run_cli("search", str(index_dir), str(tmp_path / "missing.png")).returncode == 1
    assert run_cli("search", str(tmp_path), str(tmp_path)).returncode == 2  # not an index
    assert run_cli("index", "build", str(tmp_path / "nope"), "--out", "x").returncode == 2
    assert run_cli("search").returncode == 2  # argparse usage error
    assert (
        run_cli(
            "index", "build", str(tmp_path), "--out", str(tmp_path / "i"), "--embedder", "clip"
        ).returncode
        == 2
    )
    assert run_cli("search", str(index_dir), str(tmp_path), "--top-k", "0").returncode == 2


def test_info_scan_and_duplicates(index_dir: Path, tmp_path: Path) -> None:
    info = json.loads(run_cli("index", "info", str(index_dir), "--json").stdout)
    assert info["count"] == 25 and info["embedder"]["name"] == "sscd-distilled"
    write_scenes(tmp_path / "gen", range(2))
    scan = run_cli(
        "scan", str(index_dir), str(tmp_path / "gen"), "--out", str(tmp_path / "r"), "--json"
    )
    assert scan.returncode == 0, scan.stderr
    data = json.loads(scan.stdout)
    assert data["generated"]["n"] == 2
    assert data["generated"]["rate_above_threshold"] == 1.0  # exact training images
    assert (tmp_path / "r" / "histogram.png").is_file()
    dup = run_cli(
        "duplicates",
        str(index_dir),
        "--threshold",
        "0.95",
        "--out",
        str(tmp_path / "d.csv"),
        "--json",
    )
    assert dup.returncode == 0, dup.stderr
    assert json.loads(dup.stdout)["n_images"] == 25
    assert (tmp_path / "d.csv").is_file() and (tmp_path / "d.json").is_file()


def test_a_progress_bar_resumed_part_way_counts_its_eta_from_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import re
    import time

    from lib.progress import tqdm_progress

    with tqdm_progress("training", unit="step") as progress:
        progress(3000, 10000, "resumed")
        time.sleep(0.05)
        progress(3001, 10000, "loss 0.1")
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    minutes, seconds = re.search(r"3001/10000 \[[\d:]+<(\d+):(\d+)", last).groups()
    # 6,999 steps left at one step per 50 ms or more: at least 5 minutes, not the few
    # seconds a bar that counted the 3,000 resumed steps as done in this run would show
    assert int(minutes) * 60 + int(seconds) >= 300, last


def test_a_progress_bar_starts_over_for_a_new_phase(capsys: pytest.CaptureFixture[str]) -> None:
    import time

    from lib.progress import tqdm_progress

    with tqdm_progress("embedding") as progress:
        progress(0, 100)
        time.sleep(1.2)
        progress(100, 100, "embedded")
        progress(10, 2000, "calibrating verdicts")
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    # the calibration's clock starts at its own beginning: not 1 s into it, which would
    # also make its rate and ETA those of the embedding (once: a negative rate)
    assert "10/2000 [00:00<" in last, last
