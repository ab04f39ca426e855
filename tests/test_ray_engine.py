"""The Ray engine (lib/index/ray_engine.py) on a local Ray: same records and vectors as the
local engine, slices consecutive and complete, bad files skipped, odd names kept."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lib.embedders import create_embedder
from lib.embedding import EmbeddedFiles, embed_files
from lib.index.ray_engine import RayEngineError, embed_files_ray
from tests.synthetic import scene, write_scenes

ray = pytest.importorskip("ray", reason="ray[data] is in requirements.txt")

ODD_NAME = b"caf\xe9.png"  # not valid UTF-8

# Ray Data's own DataContext warns about its deprecated fields whenever it is copied
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """28 files in name order: 22 scenes (two other shapes among them, one with a caption),
    a corrupt PNG, a text file named .jpg, a non-UTF-8 name (a byte copy of scene 3,
    kept: no de-duplication here) and three more scenes."""
    folder = tmp_path_factory.mktemp("ray_images")
    paths = write_scenes(folder, range(20))
    for seed, size in ((40, (120, 160)), (41, (300, 100))):
        scene(seed, size).save(folder / f"img_{seed:04d}.png")
    (folder / "img_0040.txt").write_text("a tall scene\n")
    (folder / "img_0005_corrupt.png").write_bytes(paths[0].read_bytes()[:200])
    (folder / "img_0006_notes.jpg").write_text("not an image")
    odd = Path(os.fsdecode(os.fsencode(folder) + b"/" + ODD_NAME))
    odd.write_bytes(paths[3].read_bytes())
    write_scenes(folder, range(50, 53), prefix="zz")
    files = sorted(p for p in folder.iterdir() if p.suffix != ".txt")
    assert len(files) == 28
    return files


@pytest.fixture(scope="module")
def local(images: list[Path]) -> EmbeddedFiles:
    """The local engine's answer, the reference."""
    return embed_files(images, create_embedder("sscd"), dedupe=False)


def concat(results: list[EmbeddedFiles]) -> EmbeddedFiles:
    return EmbeddedFiles(
        vectors=np.concatenate([r.vectors for r in results]),
        records=[rec for r in results for rec in r.records],
        skipped=[s for r in results for s in r.skipped],
    )


# These first tests run before the module's shared Ray exists: the engine starts its own.


def test_empty_input_yields_nothing_and_starts_no_ray() -> None:
    assert list(embed_files_ray([], "sscd")) == []
    assert not ray.is_initialized()


def test_unreachable_address_fails_at_once_with_what_to_do(images: list[Path]) -> None:
    with pytest.raises(RayEngineError, match="ray start --head"):
        list(embed_files_ray(images[:2], "sscd", address="127.0.0.1:1"))
    assert not ray.is_initialized()


def test_missing_ray_says_what_to_install(
    images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayEngineError, match=r"pip install 'ray\[data\]"):
        list(embed_files_ray(images[:2], "sscd"))


def test_own_ray_is_shut_down_when_the_generator_is_closed(
    images: list[Path], local: EmbeddedFiles
) -> None:
    stream = embed_files_ray(images, "sscd", batch_size=4, workers=2)
    first = next(stream)
    assert ray.is_initialized()
    n = len(first.records) + len(first.skipped)
    assert 0 < n < len(images)
    assert first.records == [r for r in local.records if r.path in {x.path for x in first.records}]
    stream.close()
    assert not ray.is_initialized()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_running_cluster_by_address(
    images: list[Path], local: EmbeddedFiles, tmp_path: Path
) -> None:
    """`ray start --head` on loopback, started from another folder (so its workers can
    import lib only if the engine ships it), reached by HOST:PORT; left running after."""
    port = free_port()
    env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    ray_cli = Path(sys.executable).parent / "ray"
    command = [str(ray_cli), "start", "--head", "--block", f"--port={port}"]
    command += ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false"]
    command += ["--disable-usage-stats"]
    log = (tmp_path / "head.log").open("wb")
    head = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"Ray runtime started" not in (tmp_path / "head.log").read_bytes():
            assert head.poll() is None and time.monotonic() < deadline, "ray start failed"
            time.sleep(0.5)
        picked = [0, 1, 5, 6, 22, 27]  # two scenes, the corrupt file, the text, the odd name
        results = list(
            embed_files_ray(
                [images[i] for i in picked], "sscd", address=f"127.0.0.1:{port}", workers=2
            )
        )
        assert not ray.is_initialized()  # disconnected
        assert head.poll() is None  # the cluster itself still runs
    finally:
        head.terminate()
        head.wait(timeout=60)
        log.close()
    merged = concat(results)
    expected = embed_files([images[i] for i in picked], create_embedder("sscd"), dedupe=False)
    assert merged.records == expected.records and merged.skipped == expected.skipped
    assert np.sum(merged.vectors * expected.vectors, axis=1).min() >= 0.9999


@pytest.fixture(scope="module")
def shared_ray() -> Iterator[None]:
    """One local Ray for the rest of the module; the engine uses it and leaves it running."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def streamed(shared_ray: None, images: list[Path]) -> list[EmbeddedFiles]:
    calls: list[tuple[int, int]] = []
    results = list(
        embed_files_ray(
            images,
            "sscd",
            batch_size=4,
            workers=2,
            progress=lambda done, total, message="": calls.append((done, total)),
        )
    )
    assert ray.is_initialized()  # not started by the engine, so not stopped by it
    assert calls[-1] == (len(images), len(images))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    return results


def test_records_and_skipped_files_equal_the_local_engine(
    streamed: list[EmbeddedFiles], local: EmbeddedFiles
) -> None:
    merged = concat(streamed)
    assert merged.records == local.records
    assert merged.skipped == local.skipped
    assert len(merged.records) + len(merged.skipped) == 28
    assert next(r for r in merged.records if r.path.endswith("img_0040.png")).caption == (
        "a tall scene"
    )


def test_each_vector_matches_the_local_engine(
    streamed: list[EmbeddedFiles], local: EmbeddedFiles
) -> None:
    vectors = concat(streamed).vectors
    assert vectors.dtype == np.float32 and vectors.shape == local.vectors.shape == (26, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cosines = np.sum(vectors * local.vectors, axis=1)
    assert cosines.min() >= 0.9999


def test_slices_are_consecutive_and_complete(
    streamed: list[EmbeddedFiles], images: list[Path], local: EmbeddedFiles
) -> None:
    # each file's name as the output gives it: resolved for a record, as passed if skipped
    names = {str(p): str(p.resolve()) for p in images}
    for s in local.skipped:
        names[s.path] = s.path
    assert len(streamed) > 1  # results stream back in several slices
    start = 0
    for result in streamed:
        n = len(result.records) + len(result.skipped)
        assert result.vectors.shape == (len(result.records), 512)
        expected = sorted(names[str(p)] for p in images[start : start + n])
        got = sorted([r.path for r in result.records] + [s.path for s in result.skipped])
        assert got == expected
        start += n
    assert start == len(images)


def test_bad_files_are_skipped_with_their_reason(streamed: list[EmbeddedFiles]) -> None:
    reasons = {Path(s.path).name: s.reason for s in concat(streamed).skipped}
    assert set(reasons) == {"img_0005_corrupt.png", "img_0006_notes.jpg"}
    assert "truncated" in reasons["img_0005_corrupt.png"]
    assert "not an image" in reasons["img_0006_notes.jpg"]


def test_a_non_utf8_name_is_kept_losslessly(streamed: list[EmbeddedFiles]) -> None:
    merged = concat(streamed)
    (odd,) = [i for i, r in enumerate(merged.records) if os.fsencode(r.path).endswith(ODD_NAME)]
    (copy,) = [i for i, r in enumerate(merged.records) if r.path.endswith("img_0003.png")]
    assert Path(merged.records[odd].path).is_file()
    assert merged.records[odd].sha256 == merged.records[copy].sha256  # not de-duplicated
    assert float(merged.vectors[odd] @ merged.vectors[copy]) >= 0.9999


def test_a_ray_build_equals_a_local_build(
    shared_ray: None, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_index(engine="ray") and the local build of the same folder: the same rows,
    paths, sha256 and skipped files, each vector at cosine >= 0.9999."""
    from lib.index import build_index

    # without the non-UTF-8 name: the builder's manifest cannot store the skip reason
    # ("duplicate of caf\udce9.png") of its byte copy yet (a local build fails alike)
    folder = tmp_path / "images"
    folder.mkdir()
    for path in images:
        if not os.fsencode(path).endswith(ODD_NAME):
            shutil.copy(path, folder / path.name)
    shutil.copy(images[0].parent / "img_0040.txt", folder)
    local_build = build_index(folder, tmp_path / "local", embedder="sscd")
    import lib.index.ray_engine as engine

    calls: list[int] = []
    real = engine.embed_files_ray

    def spy(paths: list[Path], *args: object, **kwargs: object) -> Iterator[EmbeddedFiles]:
        calls.append(len(paths))
        return real(paths, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "embed_files_ray", spy)
    ray_build = build_index(
        folder, tmp_path / "ray", embedder="sscd", engine="ray", workers=2, segment_files=8
    )
    assert calls == [27] and ray.is_initialized()
    assert ray_build.added == local_build.added == 25
    assert ray_build.skipped == local_build.skipped
    a, b = local_build.index, ray_build.index
    columns = ["id", "path", "sha256", "width", "height", "caption"]
    assert a.metadata[columns].equals(b.metadata[columns])
    assert a.file_paths() == b.file_paths()
    cosines = np.sum(a.vectors() * b.vectors(), axis=1)
    assert len(cosines) == 25 and cosines.min() >= 0.9999
