"""`index import`: precomputed embeddings (clip-retrieval's layout, a plain .npy with a
.parquet) become an index that searches like a built one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from lib.embedders import create_embedder
from lib.images import load_image
from lib.index import NoImagesError, build_index, open_index, writer_lock
from lib.index.importer import EmbeddingsError, find_shards, import_embeddings
from lib.search import search_files
from tests.cli_runner import run_cli
from tests.synthetic import write_scenes

N_PRESENT, N_ABSENT = 24, 6
SHARD_NUMBERS = (9, 10)
"""Shard numbers whose text order (10 before 9) differs from their numeric order."""


def embed(paths: list[Path]) -> np.ndarray:
    """(len(paths), 3072) float32 unit vectors of embedder ``pixels``."""
    model = create_embedder("pixels")
    return model.embed_images([load_image(str(p)).image for p in paths])


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Real images embedded with ``pixels``: 24 whose files stay where the metadata says,
    and 6 whose files the metadata places in a folder that does not exist (the images
    themselves are kept elsewhere, to query with)."""
    root = tmp_path_factory.mktemp("import")
    present = write_scenes(root / "images", range(N_PRESENT))
    elsewhere = write_scenes(root / "elsewhere", range(100, 100 + N_ABSENT))
    paths = [str(p) for p in present] + [str(root / "gone" / p.name) for p in elsewhere]
    return {
        "root": root,
        "files": present + elsewhere,
        "paths": paths,
        "vectors": embed(present + elsewhere),
        "captions": [f"caption {i}" for i in range(len(paths))],
        "urls": [f"https://example.org/img/{i}.png" for i in range(len(paths))],
    }


def write_clip_retrieval(
    folder: Path, vectors: np.ndarray, meta: pd.DataFrame, split: int | None = None
) -> Path:
    """clip-retrieval's layout: img_emb/img_emb_K.npy and metadata/metadata_K.parquet."""
    split = len(vectors) // 2 if split is None else split
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    parts = [(0, split), (split, len(vectors))]
    for number, (a, b) in zip(SHARD_NUMBERS, parts, strict=True):
        np.save(folder / "img_emb" / f"img_emb_{number}.npy", vectors[a:b])
        meta.iloc[a:b].to_parquet(folder / "metadata" / f"metadata_{number}.parquet")
    return folder


def clip_metadata(planted: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(
        {"image_path": planted["paths"], "caption": planted["captions"], "url": planted["urls"]}
    )


@pytest.fixture(scope="module")
def clip_dir(planted: dict[str, object]) -> Path:
    root = planted["root"]
    assert isinstance(root, Path)
    vectors = planted["vectors"]
    assert isinstance(vectors, np.ndarray)
    return write_clip_retrieval(root / "clip", vectors, clip_metadata(planted))


@pytest.fixture(scope="module")
def clip_index(clip_dir: Path, planted: dict[str, object]) -> Path:
    root = planted["root"]
    assert isinstance(root, Path)
    report = import_embeddings(clip_dir, root / "clip_index", embedder="pixels")
    assert report.added == N_PRESENT + N_ABSENT and report.shards == 2
    assert report.skipped == [] and report.normalised == 0
    return report.index.path


def test_clip_retrieval_shards_import_in_numeric_order_and_search(
    clip_index: Path, planted: dict[str, object]
) -> None:
    index = open_index(clip_index)
    assert index.count == N_PRESENT + N_ABSENT
    # the manifest names the embedder exactly as a build does: queries embed the same way
    pixels = create_embedder("pixels")
    assert index.manifest.embedder == pixels.config.to_dict()
    index.check_embedder(pixels)
    assert index.create_embedder().name == "pixels"
    # shard 9 before shard 10, and row i of each metadata shard with row i of its vectors
    assert index.metadata["path"].tolist() == planted["paths"]
    assert index.metadata["caption"].tolist() == planted["captions"]
    assert index.metadata["id"].tolist() == list(range(index.count))
    vectors = planted["vectors"]
    assert isinstance(vectors, np.ndarray)
    np.testing.assert_allclose(index.vectors(), vectors, atol=1e-6)
    assert index.calibration.null_sample > 0, "calibrated like a build"
    files = planted["files"]
    assert isinstance(files, list)
    present, absent = files[3], files[N_PRESENT + 2]
    results = search_files(index, [present, absent], top_k=3)
    assert results[0].matches[0].id == 3 and results[0].matches[0].caption == "caption 3"
    top = results[1].matches[0]
    assert top.id == N_PRESENT + 2, "a row whose image file is absent still searches"
    assert top.caption == f"caption {N_PRESENT + 2}"
    assert not Path(top.path).exists()


def test_url_is_stored_and_stands_in_for_an_absent_picture(clip_index: Path) -> None:
    index = open_index(clip_index)
    row = N_PRESENT + 1
    url = f"https://example.org/img/{row}.png"
    assert index.url(row) == url
    assert index.stand_in(row, f"caption {row}") == f"[caption {row}]({url})"
    assert index.stand_in(row) == f"[https\\://example\\.org/img/{row}\\.png]({url})"


def test_plain_npy_and_parquet_pair(tmp_path: Path, planted: dict[str, object]) -> None:
    vectors = planted["vectors"]
    assert isinstance(vectors, np.ndarray)
    folder = tmp_path / "plain"
    folder.mkdir()
    np.save(folder / "vectors.npy", vectors[:N_PRESENT])
    paths = planted["paths"]
    assert isinstance(paths, list)
    pd.DataFrame({"path": paths[:N_PRESENT]}).to_parquet(folder / "vectors.parquet")
    report = import_embeddings(folder, tmp_path / "idx", embedder="pixels")
    index = open_index(report.index.path)
    assert index.count == N_PRESENT
    assert index.metadata["path"].tolist() == paths[:N_PRESENT]
    assert "url" not in index.metadata.columns, "the url column only where there are urls"
    assert index.url(0) is None
    assert index.stand_in(0) == "(image file not available)"
    assert index.stand_in(0, "a cat") == "a cat"
    # the .npy file itself, with the only .parquet in its folder under another name
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "emb.npy", vectors[:N_PRESENT])
    pd.DataFrame({"image_path": paths[:N_PRESENT], "caption": ["x"] * N_PRESENT}).to_parquet(
        other / "meta.parquet"
    )
    again = import_embeddings(other / "emb.npy", tmp_path / "idx2", embedder="pixels")
    assert again.index.count == N_PRESENT
    assert again.index.metadata["caption"].tolist() == ["x"] * N_PRESENT


def test_wrong_dimension_is_refused_and_nothing_written(tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "v.npy", rng.normal(size=(5, 512)).astype(np.float32))
    pd.DataFrame({"image_path": [f"{i}.png" for i in range(5)]}).to_parquet(folder / "v.parquet")
    out = tmp_path / "sub" / "idx"
    with pytest.raises(EmbeddingsError, match=r"dimension 512.*'pixels'.*dimension 3072"):
        import_embeddings(folder, out, embedder="pixels")
    assert not (tmp_path / "sub").exists(), "nothing written, not even the parent folder"


def test_row_count_mismatch_names_the_shard(tmp_path: Path, planted: dict[str, object]) -> None:
    vectors = planted["vectors"]
    assert isinstance(vectors, np.ndarray)
    folder = write_clip_retrieval(tmp_path / "clip", vectors, clip_metadata(planted))
    short = folder / "metadata" / "metadata_10.parquet"
    pd.read_parquet(short).iloc[:-1].to_parquet(short)
    with pytest.raises(EmbeddingsError, match=r"img_emb_10\.npy has 15 vectors.*14 rows"):
        find_shards(folder)
    with pytest.raises(EmbeddingsError, match=r"img_emb_10\.npy"):
        import_embeddings(folder, tmp_path / "idx", embedder="pixels")
    assert not (tmp_path / "idx").exists()


def test_non_unit_vectors_are_normalised_with_a_warning(
    tmp_path: Path, planted: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    vectors = planted["vectors"]
    assert isinstance(vectors, np.ndarray)
    scaled = vectors.astype(np.float64)  # another precision is read as well
    scaled[[1, 4, 7, 20, 27]] *= 3.0
    seen: list[tuple[int, int, str]] = []
    with caplog.at_level(logging.WARNING, logger="lib.index.importer"):
        report = import_embeddings(
            write_clip_retrieval(tmp_path / "clip", scaled, clip_metadata(planted)),
            tmp_path / "idx",
            embedder="pixels",
            progress=lambda done, total, message="": seen.append((done, total, message)),
        )
    assert report.normalised == 5
    # progress shard by shard, in numeric order
    shards = [(d, t, m) for d, t, m in seen if m.startswith("importing img_emb")]
    assert shards == [
        (15, 30, "importing img_emb/img_emb_9.npy"),
        (30, 30, "importing img_emb/img_emb_10.npy"),
    ]
    assert "5 of 30 vector(s)" in caplog.text and "not unit-norm" in caplog.text
    stored = open_index(report.index.path).vectors()
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(stored, vectors, atol=1e-6)


def test_nan_and_zero_rows_are_skipped_with_their_reason(
    tmp_path: Path, planted: dict[str, object]
) -> None:
    vectors = np.array(planted["vectors"], copy=True)
    vectors[5, 17] = np.nan
    vectors[20] = 0.0
    vectors[22, 3] = np.inf
    report = import_embeddings(
        write_clip_retrieval(tmp_path / "clip", vectors, clip_metadata(planted)),
        tmp_path / "idx",
        embedder="pixels",
    )
    paths = planted["paths"]
    assert isinstance(paths, list)
    reasons = {s.path: s.reason for s in report.skipped}
    assert set(reasons) == {paths[5], paths[20], paths[22]}
    assert reasons[paths[5]].startswith("vector has NaN or infinite values (img_emb/img_emb_9")
    assert reasons[paths[20]].startswith("zero vector (img_emb/img_emb_10.npy row 5)")
    index = open_index(report.index.path)
    assert index.count == len(paths) - 3
    assert [s["path"] for s in index.manifest.skipped] == [paths[5], paths[20], paths[22]]
    kept = [p for i, p in enumerate(paths) if i not in (5, 20, 22)]
    assert index.metadata["path"].tolist() == kept, "the rows after a skipped one stay aligned"
    assert index.url(5) == "https://example.org/img/6.png"
    assert np.isfinite(index.vectors()).all()


def test_all_rows_unusable_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "emb"
    folder.mkdir()
    np.save(folder / "v.npy", np.zeros((3, 3072), np.float32))
    pd.DataFrame({"image_path": ["a", "b", "c"]}).to_parquet(folder / "v.parquet")
    with pytest.raises(NoImagesError) as caught:
        import_embeddings(folder, tmp_path / "idx", embedder="pixels")
    assert [s.reason.split(" (")[0] for s in caught.value.skipped] == ["zero vector"] * 3
    assert not (tmp_path / "idx").exists()


def test_cli_import_then_search_json_carries_caption_and_url(
    tmp_path: Path, clip_dir: Path, planted: dict[str, object]
) -> None:
    out = tmp_path / "idx"
    done = run_cli("index", "import", str(clip_dir), "--out", str(out), "--embedder", "pixels")
    assert done.returncode == 0, done.stderr
    assert "imported 30 vector(s) from 2 shard(s), skipped 0" in done.stdout
    info = json.loads(run_cli("index", "info", str(out), "--json").stdout)
    assert info["embedder"]["name"] == "pixels" and info["count"] == 30
    files = planted["files"]
    assert isinstance(files, list)
    absent = files[N_PRESENT + 4]
    found = run_cli("search", str(out), str(files[2]), str(absent), "--json", "--top-k", "2")
    assert found.returncode == 0, found.stderr
    first, second = json.loads(found.stdout)
    assert first["matches"][0]["id"] == 2
    assert first["matches"][0]["caption"] == "caption 2"
    assert first["matches"][0]["url"] == "https://example.org/img/2.png"
    row = N_PRESENT + 4
    assert second["matches"][0]["id"] == row
    assert second["matches"][0]["caption"] == f"caption {row}"
    assert second["matches"][0]["url"] == f"https://example.org/img/{row}.png"

    # usage errors exit 2 and write nothing
    wrong = run_cli(
        "index", "import", str(clip_dir), "--out", str(tmp_path / "x"), "--embedder", "sscd"
    )
    assert wrong.returncode == 2 and "dimension 3072" in wrong.stderr
    assert not (tmp_path / "x").exists()
    # the writer lock: --no-wait exits 1 while another writer holds it
    with writer_lock(out):
        busy = run_cli(
            "index", "import", str(clip_dir), "--out", str(out), "--embedder", "pixels", "--no-wait"
        )
    assert busy.returncode == 1 and "another writer" in busy.stderr


def test_search_json_has_no_url_for_a_built_index(tmp_path: Path) -> None:
    files = write_scenes(tmp_path / "images", range(3))
    index = build_index(tmp_path / "images", tmp_path / "idx", embedder="pixels").index
    assert index.url(0) is None
    found = run_cli("search", str(index.path), str(files[0]), "--json")
    assert found.returncode == 0, found.stderr
    assert all("url" not in m for m in json.loads(found.stdout)[0]["matches"])


def test_search_page_links_the_url_of_an_absent_image(
    clip_index: Path, planted: dict[str, object]
) -> None:
    files = planted["files"]
    assert isinstance(files, list)
    row = N_PRESENT + 3
    at = AppTest.from_file("../pages/search.py", default_timeout=120)
    at.session_state["index_path"] = str(clip_index)
    at.session_state["search_demo_copies"] = [("query.png", files[row].read_bytes())]
    at.run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert f"[caption {row}](https://example.org/img/{row}.png)" in captions
