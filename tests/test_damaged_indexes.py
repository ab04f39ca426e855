"""Damaged or odd index files: each gives one specific error that names the file and what
is wrong (the command line: exit 2, one line, no traceback), never a Python error from
deep inside, and a damaged index hides no healthy one beside it.

Real indexes are built (a small exact one, and one with an approximate index), copied
per test, then damaged."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lib.index.builder as builder
from lib.index import IndexNotFound, build_index, compact_index, open_index
from lib.index.ann import read_ann
from lib.index.catalog import read_card
from lib.index.errors import AnnDamaged, IndexCorrupt, ManifestError
from lib.index.importer import import_embeddings
from lib.index.manifest import IndexManifest, read_manifest
from lib.index.segments import SegmentInfo, read_segment_metadata, read_segment_vectors
from tests.cli_runner import run_cli
from tests.hostile import json_paths
from tests.synthetic import write_scenes


@pytest.fixture(scope="module")
def exact_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A healthy format-2 index of 6 scenes (pixels embedder, exact search)."""
    root = tmp_path_factory.mktemp("exact")
    write_scenes(root / "imgs", range(6))
    return build_index(root / "imgs", root / "idx", embedder="pixels").index.path


@pytest.fixture(scope="module")
def ann_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A healthy index of 2,000 imported vectors with an approximate index over all."""
    root = tmp_path_factory.mktemp("ann")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(root / "vectors.npy", vectors)
    pd.DataFrame({"image_path": [f"img_{i}.jpg" for i in range(2000)]}).to_parquet(
        root / "vectors.parquet"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builder, "EXACT_LIMIT", 1000)
        index = import_embeddings(root, root / "idx", embedder="sscd", memory="100MB").index
    assert index.manifest.ann is not None
    return index.path


def copy_of(index: Path, tmp_path: Path, name: str = "idx") -> Path:
    dest = tmp_path / name
    shutil.copytree(index, dest)
    return dest


def manifest_of(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    return data


def write_manifest(root: Path, data: object) -> None:
    (root / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def no_traceback(done: Any) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# ---------------------------------------------------------------- manifests
def _damage(data: dict[str, Any], how: str) -> object:
    """The manifest ``data`` damaged as ``how`` says."""
    if how in ("null", "[]", "42", '"text"'):
        return json.loads(how)
    data = json.loads(json.dumps(data))
    if how == "segments null":
        data["segments"] = None
    elif how == "segment without name":
        del data["segments"][0]["name"]
    elif how == "embedder list":
        data["embedder"] = ["sscd"]
    elif how == "dim string":
        data["dim"] = "512"
    elif how == "count float":
        data["count"] = 6.5
    elif how == "rows string":
        data["segments"][0]["rows"] = "6"
    elif how == "threshold string":
        data["calibration"]["copy_threshold"] = "high"
    elif how == "skipped not list":
        data["skipped"] = {"path": "x"}
    elif how == "huge count":
        data["count"] = 10**30
    return data


CASES = {
    "null": "must hold a JSON object, not null",
    "[]": "must hold a JSON object, not a list",
    "42": "must hold a JSON object, not an integer",
    '"text"': "must hold a JSON object, not a string",
    "segments null": "segments must be a list, not null",
    "segment without name": "segments[0].name is missing",
    "embedder list": "embedder must be an object, not a list",
    "dim string": "dim must be an integer, not a string",
    "count float": "count must be an integer, not a number",
    "rows string": "segments[0].rows must be an integer, not a string",
    "threshold string": "calibration.copy_threshold must be a number, not a string",
    "skipped not list": "skipped must be a list, not an object",
    "huge count": "count is out of range",
}


@pytest.mark.parametrize("how", list(CASES))
def test_a_damaged_manifest_names_the_file_and_the_field(
    exact_index: Path, tmp_path: Path, how: str
) -> None:
    root = copy_of(exact_index, tmp_path)
    write_manifest(root, _damage(manifest_of(root), how))
    with pytest.raises(ManifestError) as caught:
        read_manifest(root)
    assert str(root / "manifest.json") in str(caught.value)
    assert CASES[how] in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers that caught ValueError still do
    with pytest.raises(IndexNotFound, match="damaged") as opened:
        open_index(root)
    assert CASES[how] in str(opened.value)
    card = read_card(root)
    assert card.error.startswith("damaged: ") and CASES[how] in card.error


@pytest.mark.parametrize(
    "text", [b"", b"{", b'{"dim": 1', b"\xff\xfe{}", b"[" * 100_000, b'{"a": ' * 50_000]
)
def test_a_manifest_that_is_not_json_is_refused(
    exact_index: Path, tmp_path: Path, text: bytes
) -> None:
    root = copy_of(exact_index, tmp_path)
    (root / "manifest.json").write_bytes(text)
    with pytest.raises(ManifestError, match=r"manifest\.json"):
        read_manifest(root)
    with pytest.raises(IndexNotFound):
        open_index(root)
    assert read_card(root).error


def test_the_cli_says_what_is_wrong_with_a_manifest_in_one_line(
    exact_index: Path, tmp_path: Path
) -> None:
    root = copy_of(exact_index, tmp_path)
    write_manifest(root, None)
    done = run_cli("index", "info", str(root))
    assert done.returncode == 2
    no_traceback(done)
    assert "must hold a JSON object, not null" in done.stderr
    data = manifest_of(copy_of(exact_index, tmp_path, "other"))
    data["embedder"] = ["sscd"]
    write_manifest(tmp_path / "other", data)
    done = run_cli("search", str(tmp_path / "other"), str(tmp_path / "other" / "manifest.json"))
    assert done.returncode == 2
    no_traceback(done)
    assert "embedder must be an object, not a list" in done.stderr


# ---------------------------------------------------------------- paths outside the index
@pytest.fixture
def outside_segment(exact_index: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """(an index, a folder beside it holding a valid segment of other rows, its name)."""
    root = copy_of(exact_index, tmp_path)
    name = manifest_of(root)["segments"][0]["name"]
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "segments" / name, elsewhere / name)
    yield root, elsewhere, name


def test_a_segment_named_outside_the_index_is_never_read(
    outside_segment: tuple[Path, Path, str],
) -> None:
    root, _, name = outside_segment
    data = manifest_of(root)
    data["segments"][0]["name"] = f"../../elsewhere/{name}"
    write_manifest(root, data)
    shutil.rmtree(root / "segments" / name)  # only the outside copy could answer
    with pytest.raises(ManifestError, match=r"segments\[0\]\.name '\.\./\.\./elsewhere"):
        read_manifest(root)
    with pytest.raises(IndexNotFound, match="not a segment name"):
        open_index(root)
    with pytest.raises(IndexNotFound, match="not a segment name"):
        compact_index(root)  # copies nothing in
    assert not (root / "segments").exists() or not any((root / "segments").iterdir())
    for bad in ("/tmp/seg-ab", "", "seg-ab/..", "seg-AB", ".", "seg-ab/vectors.npy"):
        data["segments"][0]["name"] = bad
        write_manifest(root, data)
        with pytest.raises(ManifestError, match="not a segment name"):
            read_manifest(root)


def test_a_segment_that_is_a_link_outside_the_index_is_never_read(
    outside_segment: tuple[Path, Path, str],
) -> None:
    root, elsewhere, name = outside_segment
    shutil.rmtree(root / "segments" / name)
    os.symlink(elsewhere / name, root / "segments" / name)
    with pytest.raises(IndexNotFound, match="leads outside"):
        open_index(root)


def test_an_approximate_index_named_outside_the_index_is_refused(
    ann_index: Path, tmp_path: Path
) -> None:
    root = copy_of(ann_index, tmp_path)
    data = manifest_of(root)
    for bad in ("../ann.faiss", "/tmp/ann-ab.faiss", "ann/../../x.faiss", "ann/sub/ann-a.faiss"):
        data["ann"]["file"] = bad
        write_manifest(root, data)
        with pytest.raises(ManifestError, match="not a file directly under ann/"):
            read_manifest(root)
        with pytest.raises(IndexNotFound, match=r"ann\.file"):
            open_index(root)


# ---------------------------------------------------------------- listing
def test_index_list_shows_every_healthy_index_beside_the_damaged_ones(
    exact_index: Path, tmp_path: Path
) -> None:
    root = tmp_path / "indexes"
    good = copy_of(exact_index, root, "good")
    bad = copy_of(exact_index, root, "bad")
    write_manifest(bad, None)
    torn = copy_of(exact_index, root, "torn")
    vectors = next((torn / "segments").glob("*/vectors.npy"))
    vectors.write_bytes(vectors.read_bytes()[:200])
    done = run_cli("index", "list", str(root))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith(f"{good}  pixels  6 images") for line in lines)
    assert any(line.startswith(f"{bad}  DAMAGED: ") and "not null" in line for line in lines)
    assert any(line.startswith(f"{torn}  DAMAGED: ") and "vectors.npy" in line for line in lines)
    assert "2 of 3 index(es) cannot be opened" in done.stderr
    listed = json.loads(run_cli("index", "list", str(root), "--json").stdout)
    assert {Path(r["path"]).name: r["error"] is None for r in listed} == {
        "good": True,
        "bad": False,
        "torn": False,
    }
    shutil.rmtree(good)
    done = run_cli("index", "list", str(root))
    assert done.returncode == 2  # nothing could be listed
    assert done.stdout.count("DAMAGED") == 2


# ---------------------------------------------------------------- segments
def _vectors(root: Path) -> Path:
    return next((root / "segments").glob("*/vectors.npy"))


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


SEGMENT_DAMAGE = {
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
    "header only": lambda good: good[:128],
    "random bytes": lambda good: np.random.default_rng(1).bytes(len(good)),
    "a zip": lambda good: b"PK\x03\x04" + good[4:],
    "a pickle": lambda good: _npy(np.array([{"a": 1}], dtype=object)),
    "float64": lambda good: _npy(np.zeros((6, 3072), np.float64)),
    "int32": lambda good: _npy(np.zeros((6, 3072), np.int32)),
    "other shape": lambda good: _npy(np.zeros((5, 3072), np.float32)),
    "one dimension": lambda good: _npy(np.zeros(6 * 3072, np.float32)),
    "huge header shape": lambda good: good.replace(b"(6, 3072)", b"(9999999999999, 3072)"),
}


@pytest.mark.parametrize("how", list(SEGMENT_DAMAGE))
def test_a_damaged_vector_file_names_its_segment(
    exact_index: Path, tmp_path: Path, how: str
) -> None:
    root = copy_of(exact_index, tmp_path)
    path = _vectors(root)
    path.write_bytes(SEGMENT_DAMAGE[how](path.read_bytes()))
    with pytest.raises(IndexNotFound) as caught:
        open_index(root)
    message = str(caught.value)
    assert path.parent.name in message and "vectors.npy" in message, message
    assert isinstance(caught.value, IndexCorrupt) or "damaged" in message


@pytest.mark.parametrize("how", ["random bytes", "empty", "fewer rows", "no path column"])
def test_a_damaged_metadata_file_names_its_segment(
    exact_index: Path, tmp_path: Path, how: str
) -> None:
    root = copy_of(exact_index, tmp_path)
    path = next((root / "segments").glob("*/metadata.parquet"))
    frame = pd.read_parquet(path)
    if how == "random bytes":
        path.write_bytes(np.random.default_rng(2).bytes(path.stat().st_size))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "fewer rows":
        frame.iloc[:4].to_parquet(path)
    else:
        frame.drop(columns=["path"]).to_parquet(path)
    with pytest.raises(IndexNotFound) as caught:
        open_index(root)
    assert path.parent.name in str(caught.value) and "metadata.parquet" in str(caught.value)


# ---------------------------------------------------------------- the approximate index
def _ann_file(root: Path) -> Path:
    return root / str(manifest_of(root)["ann"]["file"])


def _rewrite_ann(root: Path, change: Any) -> None:
    path = _ann_file(root)
    index = faiss.read_index(str(path))
    change(index)
    faiss.write_index(index, str(path))


def _bad_ids(index: Any) -> None:
    lists = faiss.extract_index_ivf(index).invlists
    first = next(i for i in range(lists.nlist) if lists.list_size(i))
    ids = faiss.rev_swig_ptr(lists.get_ids(first), lists.list_size(first))
    ids[0] = 10**9  # a row far beyond the index: searching used to raise IndexError


def _bad_graph(index: Any) -> None:
    hnsw = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer).hnsw
    neighbors = faiss.vector_to_array(hnsw.neighbors)
    neighbors[0] = 10**6
    faiss.copy_array_to_vector(neighbors, hnsw.neighbors)


def test_an_approximate_index_with_ids_outside_the_index_is_refused_on_open(
    ann_index: Path, tmp_path: Path
) -> None:
    root = copy_of(ann_index, tmp_path)
    _rewrite_ann(root, _bad_ids)
    with pytest.raises(AnnDamaged, match=r"list [0-9]+ holds row ids outside 0\.\.1999"):
        open_index(root)
    with pytest.raises(AnnDamaged, match=r"row ids outside.*index compact"):
        read_ann(root, read_manifest(root))
    done = run_cli("index", "info", str(root))
    assert done.returncode == 2
    no_traceback(done)
    assert "approximate index file" in done.stderr and "damaged" in done.stderr


@pytest.mark.parametrize(
    "how", ["garbage", "truncated", "empty", "a flat index", "other rows", "a broken graph"]
)
def test_read_ann_says_the_approximate_index_file_is_damaged(
    ann_index: Path, tmp_path: Path, how: str
) -> None:
    root = copy_of(ann_index, tmp_path)
    path = _ann_file(root)
    good = path.read_bytes()
    if how == "garbage":
        path.write_bytes(np.random.default_rng(3).bytes(4096))
    elif how == "truncated":
        path.write_bytes(good[: len(good) // 3])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "other rows":
        _rewrite_ann(root, lambda index: index.remove_ids(np.arange(10, dtype=np.int64)))
    elif how == "a broken graph":
        _rewrite_ann(root, _bad_graph)
    else:
        flat = faiss.IndexFlatIP(512)
        flat.add(np.zeros((2000, 512), np.float32))
        faiss.write_index(flat, str(path))
    with pytest.raises(AnnDamaged, match=rf"approximate index file {path} is damaged"):
        read_ann(root, read_manifest(root))


def test_a_garbage_approximate_index_file_is_called_damaged_not_missing(
    ann_index: Path, tmp_path: Path
) -> None:
    root = copy_of(ann_index, tmp_path)
    _ann_file(root).write_bytes(b"not a faiss index" * 100)
    done = run_cli("index", "info", str(root))
    assert done.returncode == 2
    no_traceback(done)
    assert "approximate index file" in done.stderr and "is damaged" in done.stderr
    assert "segment" not in done.stderr


def test_compact_rebuilds_a_damaged_approximate_index(ann_index: Path, tmp_path: Path) -> None:
    root = copy_of(ann_index, tmp_path)
    _rewrite_ann(root, _bad_ids)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builder, "EXACT_LIMIT", 1000)
        compact_index(root)
    index = open_index(root)
    query = index.get_vectors(np.array([7]))
    assert index.search_vectors(query, 1)[1][0, 0] == 7


# ---------------------------------------------------------------- fuzzing
# Property: whatever the bytes, reading gives a result or the one documented error.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples each run: CI stays reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["..", "../x", "/etc", "seg-ab", "ann/ann-ab.faiss", "float64", ""])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
MANIFEST_KEYS = st.sampled_from(
    ["embedder", "dim", "count", "calibration", "skipped", "sources", "format", "segments",
     "ann", "generation", "build", "created", "versions"]
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> object:
    """``valid`` with a few places deleted, retyped or pointed outside with ``..``."""
    data: Any = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in json_paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["delete", "replace", "dotdot"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "dotdot":
            parent[path[-1]] = draw(st.sampled_from(["..", "../../elsewhere/seg-ab", "/", "a/.."]))
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return data


@FUZZ
@given(value=JSON_VALUES | st.dictionaries(MANIFEST_KEYS, JSON_VALUES))
def test_fuzz_the_manifest_reader_takes_any_json(value: object) -> None:
    try:
        manifest = IndexManifest.from_json(json.dumps(value))
    except ManifestError:
        return
    assert isinstance(manifest.segments, list) and isinstance(manifest.dim, int)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_manifests_open_or_say_damaged(
    exact_index: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    valid = manifest_of(exact_index)
    root = copy_of(exact_index, tmp_path_factory.mktemp("fuzz"))
    write_manifest(root, data.draw(mutated(valid)))
    card = read_card(root)  # never raises
    try:
        index = open_index(root)
    except IndexNotFound as exc:
        assert str(exc)
        return
    assert not card.error
    assert index.count == len(index.metadata)


@FUZZ
@given(data=st.data())
def test_fuzz_the_segment_readers_take_any_bytes(
    exact_index: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = copy_of(exact_index, tmp_path_factory.mktemp("fuzz"))
    info = SegmentInfo.from_dict(manifest_of(root)["segments"][0])
    folder = root / "segments" / info.name
    for file in ("vectors.npy", "metadata.parquet"):
        good = (folder / file).read_bytes()
        how = data.draw(st.sampled_from(["random", "flips", "truncate"]))
        if how == "random":
            bad = data.draw(st.binary(max_size=2000))
        elif how == "truncate":
            bad = good[: data.draw(st.integers(0, len(good) - 1))]
        else:
            damaged = bytearray(good)
            for _ in range(data.draw(st.integers(1, 8))):
                at = data.draw(st.integers(0, min(len(good), 4096) - 1))
                damaged[at] = data.draw(st.integers(0, 255))
            bad = bytes(damaged)
        (folder / file).write_bytes(bad)
    try:
        read_segment_vectors(root, info, 3072)
    except IndexCorrupt as exc:
        assert info.name in str(exc)
    try:
        read_segment_metadata(root, info)
    except IndexCorrupt as exc:
        assert info.name in str(exc)
    try:
        open_index(root)
    except IndexNotFound as exc:
        assert str(exc)


@FUZZ
@given(data=st.data())
def test_fuzz_the_approximate_index_reader_takes_any_bytes(
    ann_index: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = tmp_path_factory.getbasetemp() / "ann-fuzz"
    if not root.exists():
        copy_of(ann_index, root.parent, root.name)
    path = _ann_file(root)
    good = _ann_file(ann_index).read_bytes()
    how = data.draw(st.sampled_from(["random", "truncate", "prefix"]))
    if how == "random":
        path.write_bytes(data.draw(st.binary(max_size=4000)))
    elif how == "truncate":
        path.write_bytes(good[: data.draw(st.integers(0, len(good) - 1))])
    else:  # a real header, then noise
        cut = data.draw(st.integers(4, 200))
        path.write_bytes(good[:cut] + data.draw(st.binary(min_size=1, max_size=4000)))
    with pytest.raises(AnnDamaged, match=r"approximate index file .* is damaged"):
        read_ann(root, read_manifest(root))


def test_fuzzed_files_through_the_cli_exit_2_without_a_traceback(
    exact_index: Path, ann_index: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    broken = copy_of(exact_index, tmp_path, "vectors")
    _vectors(broken).write_bytes(rng.bytes(3000))
    odd = copy_of(exact_index, tmp_path, "manifest")
    write_manifest(odd, {"embedder": {"name": 3}, "dim": [], "segments": [{"name": ".."}]})
    approximate = copy_of(ann_index, tmp_path, "ann")
    _rewrite_ann(approximate, _bad_ids)
    for root in (broken, odd, approximate):
        done = run_cli("index", "info", str(root))
        assert done.returncode == 2, done.stderr
        no_traceback(done)
    done = run_cli("search", str(approximate), str(exact_index / "manifest.json"))
    assert done.returncode == 2, done.stderr
    no_traceback(done)


# ---------------------------------------------------------------- the Indexes page
def test_the_indexes_page_lists_healthy_indexes_beside_a_damaged_one(
    exact_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "indexes"
    copy_of(exact_index, root, "good")
    for name, value in (("null", None), ("escapes", "../../x")):
        bad = copy_of(exact_index, root, name)
        data: Any = manifest_of(bad)
        if value is None:
            data = None
        else:
            data["segments"][0]["name"] = value
        write_manifest(bad, data)
    (tmp_path / "images").mkdir()
    config = tmp_path / "replica.toml"
    config.write_text(
        f'index_root = "{root}"\nimage_roots = ["{tmp_path / "images"}"]\n'
        f'upload_root = "{tmp_path / "uploads"}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    at = AppTest.from_file("../pages/indexes.py", default_timeout=120).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "problem" in d.value.columns)
    rows = {r["name"]: r for r in table.to_dict("records")}
    assert set(rows) == {"good", "null", "escapes"}
    assert rows["good"]["images"] == 6 and not rows["good"]["problem"]
    assert "not null" in rows["null"]["problem"]
    assert "not a segment name" in rows["escapes"]["problem"]
    warning = " ".join(str(w.value) for w in at.warning)
    assert "**null**" in warning and "**escapes**" in warning and "good" not in warning
