"""Index format 2: segments, commits, resumable builds, compaction, upgrade, approximate
search with exact scores."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

import lib.index.builder as builder
from lib.index import (
    add_to_index,
    build_index,
    compact_index,
    open_index,
    upgrade_index,
)
from lib.index.ann import MemoryBudgetError, SegmentSearch, parse_memory, plan_ann
from lib.index.importer import import_embeddings
from lib.index.segments import SegmentInfo, SegmentVectors
from lib.index.store import _load
from tests.cli_runner import run_cli
from tests.index_files import stored_metadata
from tests.synthetic import write_scenes

REPO = Path(__file__).resolve().parent.parent


def _segment_files(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of every segment."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (root / "segments").rglob("*")
        if p.is_file()
    }


def test_add_writes_new_segments_and_never_rewrites_old_ones(tmp_path: Path) -> None:
    write_scenes(tmp_path / "a", range(6))
    write_scenes(tmp_path / "b", range(20, 25))
    build_index(tmp_path / "a", tmp_path / "idx", embedder="pixels")
    before = _segment_files(tmp_path / "idx")
    report = add_to_index(tmp_path / "idx", tmp_path / "b", segment_files=2)
    assert report.added == 5
    after = _segment_files(tmp_path / "idx")
    assert {k: after[k] for k in before} == before, "existing segments untouched"
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["segments"]] == [6, 2, 2, 1]
    index = open_index(tmp_path / "idx")
    assert index.count == 11 and index.metadata["id"].tolist() == list(range(11))
    # every row searchable, each image its own best match
    sims, ids = index.search_vectors(index.vectors(), 1)
    assert ids[:, 0].tolist() == list(range(11))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


def _build_cmd(images: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lib", "index", "build", str(images), "--out", str(out),
        "--embedder", "sscd-distilled", "--batch-size", "8", "--segment-size", "16", *extra,
    ]  # fmt: skip


def test_a_killed_build_resumes_and_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    write_scenes(images, range(100, 260))
    staging = tmp_path / ".killed.building"
    proc = subprocess.Popen(
        _build_cmd(images, tmp_path / "killed"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 180
    done = 0
    while time.time() < deadline and done < 48:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            done = json.loads((staging / "manifest.json").read_text())["build"]["done"]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 48 <= done < 160, f"kill came at {done} of 160 files"
    assert not (tmp_path / "killed").exists(), "a killed build publishes nothing"

    resumed = subprocess.run(
        _build_cmd(images, tmp_path / "killed", "--resume"),
        cwd=REPO,
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert f"resuming: {done}".encode() in resumed.stderr.replace(b",", b"")
    straight = build_index(images, tmp_path / "straight", embedder="sscd-distilled",
                           segment_files=16)  # fmt: skip

    a, b = open_index(tmp_path / "killed"), straight.index
    assert a.count == b.count == 160
    pd.testing.assert_frame_equal(a.metadata, b.metadata)
    cos = np.einsum("ij,ij->i", a.vectors(), b.vectors())
    assert cos.min() >= 0.9999
    assert a.manifest.calibration["null_scores"] == b.manifest.calibration["null_scores"]
    assert [s["rows"] for s in a.manifest.segments] == [s["rows"] for s in b.manifest.segments]
    assert not staging.exists()


def test_resume_refuses_an_interrupted_build_of_other_files(tmp_path: Path) -> None:
    write_scenes(tmp_path / "a", range(8))
    write_scenes(tmp_path / "b", range(30, 38))
    calls = 0
    real = builder.embed_files

    def dies_after_one(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    builder.embed_files = dies_after_one  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            build_index(tmp_path / "a", tmp_path / "idx", embedder="pixels", segment_files=3)
    finally:
        builder.embed_files = real
    with pytest.raises(ValueError, match="another set of image files"):
        build_index(tmp_path / "b", tmp_path / "idx", embedder="pixels", resume=True)
    report = build_index(tmp_path / "a", tmp_path / "idx", embedder="pixels", resume=True,
                         segment_files=3)  # fmt: skip
    assert report.index.count == 8


def test_compact_merges_segments_and_open_readers_keep_their_snapshot(tmp_path: Path) -> None:
    write_scenes(tmp_path / "a", range(5))
    build_index(tmp_path / "a", tmp_path / "idx", embedder="pixels")
    for n in range(3):
        write_scenes(tmp_path / f"more{n}", range(40 + 3 * n, 43 + 3 * n))
        add_to_index(tmp_path / "idx", tmp_path / f"more{n}")
    reader = open_index(tmp_path / "idx")
    assert len(reader.manifest.segments) == 4
    old_names = {s["name"] for s in reader.manifest.segments}
    query = reader.get_vectors(np.array([0, 7, 13]))
    expected = reader.search_vectors(query, 3)

    compacted = compact_index(tmp_path / "idx")
    assert len(compacted.manifest.segments) == 1
    assert not old_names & {p.name for p in (tmp_path / "idx" / "segments").iterdir()}
    # the reader opened before the compaction still answers from its snapshot
    np.testing.assert_array_equal(reader.search_vectors(query, 3)[1], expected[1])
    np.testing.assert_allclose(reader.get_vectors(np.arange(14)), compacted.vectors())
    pd.testing.assert_frame_equal(reader.metadata, compacted.metadata)
    np.testing.assert_array_equal(compacted.search_vectors(query, 3)[1], expected[1])


def _format1(tmp_path: Path) -> Path:
    """A format-1 index as Replica wrote it before segments: one FAISS file."""
    built = build_index(write_scenes_dir(tmp_path), tmp_path / "new", embedder="pixels").index
    old = tmp_path / "old"
    old.mkdir()
    flat = faiss.IndexFlatIP(built.manifest.dim)
    flat.add(built.vectors())
    faiss.write_index(flat, str(old / "index.faiss"))
    stored_metadata(built.path).to_parquet(old / "metadata.parquet", index=False)
    manifest = json.loads((built.path / "manifest.json").read_text())
    for key in ("segments", "ann", "generation", "build"):
        manifest.pop(key)
    manifest["format"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    return old


def write_scenes_dir(tmp_path: Path) -> Path:
    write_scenes(tmp_path / "imgs", range(9))
    return tmp_path / "imgs"


def test_a_format_1_index_opens_and_upgrades(tmp_path: Path) -> None:
    old = _format1(tmp_path)
    before = open_index(old)
    assert before.manifest.format == 1 and before.count == 9
    result = run_cli("index", "upgrade", str(old))
    assert result.returncode == 0, result.stderr
    assert "from format 1 to 2" in result.stdout
    after = open_index(old)
    assert after.manifest.format == 2 and len(after.manifest.segments) == 1
    assert not (old / "index.faiss").exists()
    np.testing.assert_array_equal(after.vectors(), before.vectors())
    pd.testing.assert_frame_equal(after.metadata, before.metadata)
    assert after.manifest.calibration == before.manifest.calibration
    again = run_cli("index", "upgrade", str(old))
    assert "already in format 2" in again.stdout
    assert upgrade_index(old).manifest.generation == after.manifest.generation


def test_add_to_a_format_1_index_upgrades_it_first(tmp_path: Path) -> None:
    old = _format1(tmp_path)
    write_scenes(tmp_path / "more", range(50, 52))
    report = add_to_index(old, tmp_path / "more")
    assert report.added == 2 and report.index.count == 11
    assert report.index.manifest.format == 2


def _planted_vectors(n: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors (a mixture in a low-rank subspace) with near-duplicates."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((32, dim))
    centres = rng.standard_normal((40, 32)) * 2
    x = centres[rng.integers(0, 40, n)] + rng.standard_normal((n, 32))
    v = x @ basis + 0.5 * rng.standard_normal((n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def test_approximate_search_reports_exact_scores_and_high_recall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builder, "EXACT_LIMIT", 1000)
    vectors = _planted_vectors(4000)
    folder = tmp_path / "emb"
    folder.mkdir()
    np.save(folder / "vectors.npy", vectors.astype(np.float16))
    pd.DataFrame({"image_path": [f"img_{i}.jpg" for i in range(4000)]}).to_parquet(
        folder / "vectors.parquet"
    )
    index = import_embeddings(folder, tmp_path / "idx", embedder="sscd", memory="100MB").index
    assert index.manifest.ann is not None and index.manifest.ann["rows"] == 4000
    assert isinstance(index.faiss, SegmentSearch)
    assert index.manifest.segments[0]["dtype"] == "float16"
    stored = index.vectors()
    queries = _planted_vectors(60, seed=1)
    sims, ids = index.search_vectors(queries, 10)
    # every score is the exact cosine of the stored vector
    exact_of_returned = np.einsum("qd,qkd->qk", queries, stored[ids])
    np.testing.assert_allclose(sims, exact_of_returned, atol=1e-5)
    truth = np.argsort(-(queries @ stored.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
    assert recall >= 0.95
    assert index.calibration.is_fitted
    # a writer's lazily opened snapshot keeps its approximate index even if a compaction
    # removes the file before the first search
    lazy = _load(index.path, lazy=True)
    (index.path / str(index.manifest.ann["file"])).unlink()
    np.testing.assert_array_equal(lazy.search_vectors(queries[:5], 10)[1], ids[:5])


def test_memory_budget_is_read_and_enforced() -> None:
    assert parse_memory("4GB") == 4_000_000_000
    assert parse_memory("512 MiB") == 512 * 1024**2
    assert parse_memory("1.5g") == 1_500_000_000
    with pytest.raises(MemoryBudgetError, match="not a memory size"):
        parse_memory("lots")
    big = plan_ann(10_000_000, 512, "8GB")
    assert big.factory.startswith("IVF") and "HNSW32" in big.factory
    assert big.estimated_bytes <= 8_000_000_000
    assert plan_ann(1_000_000, 512, "4GB").factory.endswith("SQ8")
    assert plan_ann(10_000_000, 512, "1GB").factory.endswith(("PQ64", "PQ32"))
    with pytest.raises(MemoryBudgetError, match="need at least"):
        plan_ann(10_000_000, 512, "100MB")


def test_adds_past_the_segment_limit_are_merged_without_moving_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builder, "MAX_SEGMENTS", 3)
    write_scenes(tmp_path / "a", range(3))
    build_index(tmp_path / "a", tmp_path / "idx", embedder="pixels")
    write_scenes(tmp_path / "b", range(60, 66))
    before = open_index(tmp_path / "idx")
    report = add_to_index(tmp_path / "idx", tmp_path / "b", segment_files=1)
    index = report.index
    assert len(index.manifest.segments) <= 3 and index.count == 9
    np.testing.assert_array_equal(index.get_vectors(np.arange(3)), before.vectors())
    assert index.metadata["id"].tolist() == list(range(9))
    paths = index.metadata["path"].tolist()
    assert [Path(p).name for p in paths[3:]] == sorted(Path(p).name for p in paths[3:])


def test_cli_compact_and_info_say_what_the_index_is(tmp_path: Path) -> None:
    write_scenes(tmp_path / "a", range(4))
    write_scenes(tmp_path / "b", range(70, 72))
    build_index(tmp_path / "a", tmp_path / "idx", embedder="pixels")
    add_to_index(tmp_path / "idx", tmp_path / "b")
    info = run_cli("index", "info", str(tmp_path / "idx"))
    assert "format     2, 2 segment(s); search exact" in info.stdout
    compact = run_cli("index", "compact", str(tmp_path / "idx"))
    assert compact.returncode == 0, compact.stderr
    assert "6 images in 1 segment(s); search is exact" in compact.stdout
    as_json = json.loads(run_cli("index", "info", str(tmp_path / "idx"), "--json").stdout)
    assert as_json["format"] == 2 and as_json["segments"] == 1
    bad = run_cli("index", "build", str(tmp_path / "a"), "--out", str(tmp_path / "x"),
                  "--embedder", "pixels", "--memory", "lots")  # fmt: skip
    assert bad.returncode == 2 and "not a memory size" in bad.stderr


def test_merging_rewrites_only_runs_of_small_segments() -> None:
    small, big = builder.SMALL_SEGMENT - 1, builder.SMALL_SEGMENT
    infos = [SegmentInfo(f"s{i}", rows) for i, rows in enumerate([big, small, small, big, small])]
    assert builder._merge_groups(infos) == [[0], [1, 2], [3], [4]]
    many = [SegmentInfo(f"s{i}", builder.SMALL_SEGMENT // 2) for i in range(10)]
    assert [len(g) for g in builder._merge_groups(many)] == [8, 2], "groups stop at MERGE_ROWS"


def test_segment_vectors_gather_and_blocks_from_a_row() -> None:
    sizes = [3, 5, 2]
    parts = [
        np.arange(s * 4, dtype=np.float16).reshape(s, 4) + 100 * i for i, s in enumerate(sizes)
    ]
    table = SegmentVectors(parts, 4)
    whole = np.concatenate(parts).astype(np.float32)
    assert len(table) == 10 and table.shape == (10, 4)
    ids = np.array([[9, 0], [3, 3], [7, 2]])
    np.testing.assert_array_equal(table[ids], whole[ids])
    for start in (0, 2, 3, 4, 8, 9, 10):
        blocks = list(table.blocks(rows=2, start=start))
        assert [b[0] for b in blocks[:1]] == ([start] if start < 10 else [])
        got = np.concatenate([b for _, b in blocks]) if blocks else np.zeros((0, 4))
        np.testing.assert_array_equal(got, whole[start:])


def test_a_build_killed_while_finishing_resumes_without_embedding_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_scenes(tmp_path / "a", range(7))
    real_finish = builder._finish

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "_finish", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(tmp_path / "a", tmp_path / "idx", embedder="pixels", segment_files=3)
    staged = json.loads((tmp_path / ".idx.building" / "manifest.json").read_text())
    assert staged["build"]["done"] == 7 and staged["build"]["phase"] == "finishing"
    monkeypatch.setattr(builder, "_finish", real_finish)
    embedded: list[int] = []
    real_embed = builder.embed_files
    monkeypatch.setattr(
        builder,
        "embed_files",
        lambda files, *a, **k: embedded.append(len(files)) or real_embed(files, *a, **k),
    )
    report = build_index(tmp_path / "a", tmp_path / "idx", embedder="pixels", resume=True)
    assert embedded == [] and report.index.count == 7
    assert report.index.calibration.version > 0 and not (tmp_path / ".idx.building").exists()
