"""Nothing from outside runs: an index folder may come from someone else, so nothing in it
is unpickled. A "marker pickle" (one that creates a file when unpickled) is planted where
earlier versions kept the map's fitted UMAP (INDEX/projection/reducer.joblib) and inside a
map array; every path that reads a map (library, CLI, Map page with an upload) must leave
the marker unwritten. A source rule keeps unpickling calls out of lib/, pages/, ui/ and
app.py."""

from __future__ import annotations

import ast
import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lib.index import ReplicaIndex, build_index, open_index
from lib.projection import (
    ProjectionError,
    load_projection,
    place_images,
    place_vectors,
    project,
    projection_dir,
)
from tests.synthetic import write_families, write_scenes

REPO = Path(__file__).resolve().parent.parent
PAGE = "../pages/map.py"
N = 3 * 8 + 1


class Marker:
    """Unpickling this object creates the file ``path`` (what a planted pickle could do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def plant_reducer(index_path: Path, marker: Path) -> Path:
    """A marker pickle as INDEX/projection/reducer.joblib, written as earlier versions did."""
    import joblib

    planted = projection_dir(index_path) / "reducer.joblib"
    joblib.dump(Marker(marker), planted)
    return planted


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 families of 8 near-duplicates and a lone image, indexed, with the map stored."""
    root = tmp_path_factory.mktemp("no_code")
    write_families(root / "train", range(3), variants=8)
    write_scenes(root / "train", [99], prefix="lone")
    path = build_index(root / "train", root / "idx", embedder="sscd-distilled").index.path
    project(open_index(path))
    return path


@pytest.fixture
def planted(mapped: Path, tmp_path: Path) -> tuple[ReplicaIndex, Path]:
    """A private copy of the mapped index with a marker pickle as its reducer.joblib, and
    where the marker would appear."""
    index_path = shutil.copytree(mapped, tmp_path / "idx")
    marker = tmp_path / "unpickled.marker"
    plant_reducer(index_path, marker)
    return open_index(index_path), marker


def test_the_planted_pickle_does_run_when_unpickled(tmp_path: Path) -> None:
    """The plant is real: loading it the way earlier versions did writes its marker."""
    import joblib

    (tmp_path / "projection").mkdir()
    marker = tmp_path / "ran.marker"
    joblib.load(plant_reducer(tmp_path, marker))
    assert marker.exists()


def test_the_library_reads_and_places_without_unpickling(
    planted: tuple[ReplicaIndex, Path],
) -> None:
    index, marker = planted
    stored = load_projection(index)
    assert stored is not None and stored.n_points == N
    assert project(index).coords.tolist() == stored.coords.tolist()  # reused, not refitted
    row = 5
    vector = index.get_vectors(np.array([row]))
    np.testing.assert_array_equal(place_vectors(stored, vector, index), stored.coords[[row]])
    np.testing.assert_array_equal(place_vectors(index.path, vector), stored.coords[[row]])
    data = Path(index.metadata["path"][row]).read_bytes()
    placed = place_images(index.path, [("copy.png", data)], index)
    assert placed.names == ["copy.png"]
    span = float(np.ptp(stored.coords, axis=0).max())
    assert np.linalg.norm(placed.coords[0] - stored.coords[row]) < 1e-5 * span
    assert not marker.exists()
    # rewriting the map drops the old file; still nothing ran
    project(index, force=True)
    assert not (projection_dir(index) / "reducer.joblib").exists()
    assert not marker.exists()


def test_a_pickled_map_array_is_refused_unread(planted: tuple[ReplicaIndex, Path]) -> None:
    """An array file holding a pickle (an object array) is a ProjectionError, not a call."""
    index, marker = planted
    with (projection_dir(index) / "fit_ids.npy").open("wb") as f:
        np.save(f, np.array([Marker(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ProjectionError, match=r"fit_ids\.npy cannot be read.*compute it again"):
        load_projection(index)
    with pytest.raises(ProjectionError):
        place_vectors(index.path, index.get_vectors(np.array([0])))
    assert project(index).n_points == N  # computed again instead
    assert not marker.exists()


def test_the_cli_reads_the_map_without_unpickling(
    planted: tuple[ReplicaIndex, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python -m lib data prepare`` opens the default index's stored map."""
    import lib.defaults
    from lib.cli import main
    from lib.datasets import OpenMojiSplit

    index, marker = planted
    split = OpenMojiSplit(index.path.parent, index.path.parent, index.count, 0)
    monkeypatch.setattr(lib.defaults, "prepare_openmoji", lambda *a, **k: split)
    monkeypatch.setattr(lib.defaults, "DEFAULT_INDEX", index.path)
    mtime = (projection_dir(index) / "coords.npy").stat().st_mtime_ns
    assert main(["-q", "data", "prepare"]) == 0
    assert "default data ready" in capsys.readouterr().out
    assert (projection_dir(index) / "coords.npy").stat().st_mtime_ns == mtime  # map reused
    assert not marker.exists()


def test_the_map_page_places_an_upload_without_unpickling(
    planted: tuple[ReplicaIndex, Path],
) -> None:
    index, marker = planted
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["index_path"] = str(index.path)
    at.run()
    assert not at.exception, at.exception
    row = 5
    data = Path(index.metadata["path"][row]).read_bytes()
    at.file_uploader(key="map_uploads").upload("copy.png", data, "image/png").run()
    assert not at.exception, at.exception
    assert not at.error
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    (stars,) = [t for t in spec["data"] if t["name"] == "your images"]
    star = np.array([plotly_values(stars["x"])[0], plotly_values(stars["y"])[0]])
    stored = load_projection(index)
    assert stored is not None
    span = float(np.ptp(stored.coords, axis=0).max())
    assert np.linalg.norm(star - stored.coords[stored.position(row)]) < 1e-4 * span
    assert not marker.exists()


def plotly_values(array: object) -> np.ndarray:
    """A Plotly JSON array: a list, or a base64 typed array."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


# ------------------------------------------------------------------ the source rule
SCANNED = ["lib", "pages", "ui", "app.py"]
UNPICKLERS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
    "cPickle.load", "cPickle.loads", "joblib.load", "cloudpickle.load", "cloudpickle.loads",
    "marshal.load", "marshal.loads", "shelve.open", "dill.load", "dill.loads",
    "pd.read_pickle", "pandas.read_pickle", "read_pickle",
}  # fmt: skip
BANNED_MODULES = {"dill", "shelve", "cloudpickle", "marshal"}
BANNED_NAMES = {"pickle": {"load", "loads", "Unpickler"}, "joblib": {"load"}}


def _dotted(node: ast.expr) -> str:
    """``a.b.c`` for a name or attribute chain, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def unpickling_sites(source: str) -> list[tuple[int, str]]:
    """(line, what) for each call or import in ``source`` that could unpickle data."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}") for a in node.names if a.name in BANNED_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            bad = BANNED_NAMES.get(top, set())
            if top in BANNED_MODULES or any(a.name in bad for a in node.names):
                found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in UNPICKLERS or last == "read_pickle":
                found.append((node.lineno, f"{name}(...)"))
            elif name in ("np.load", "numpy.load") and any(
                k.arg == "allow_pickle" and not _keyword_is(node, "allow_pickle", False)
                for k in node.keywords
            ):
                found.append((node.lineno, f"{name}(..., allow_pickle=...)"))
            elif name.endswith("torch.load") and not _keyword_is(node, "weights_only", True):
                found.append((node.lineno, "torch.load(...) without weights_only=True"))
    return found


def test_the_source_rule_catches_each_way_of_unpickling() -> None:
    bad = """
import pickle, dill
import shelve
from joblib import load
pickle.loads(b"")
joblib.load(path)
np.load(path, allow_pickle=True)
numpy.load(path, allow_pickle=flag)
torch.load(path)
torch.load(path, weights_only=False)
cloudpickle.load(f)
marshal.loads(b"")
pd.read_pickle(path)
"""
    lines = sorted({line for line, _ in unpickling_sites(bad)})
    assert lines == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    good = """
np.load(path)
np.load(path, mmap_mode="r", allow_pickle=False)
torch.load(path, map_location="cpu", weights_only=True)
import json
json.loads(text)
"""
    assert unpickling_sites(good) == []


def test_no_source_file_unpickles() -> None:
    """lib/, pages/, ui/ and app.py call nothing that unpickles (torch.load only with
    weights_only=True, np.load never with allow_pickle)."""
    files = [
        path
        for name in SCANNED
        if (REPO / name).exists()
        for path in ([REPO / name] if name.endswith(".py") else sorted((REPO / name).rglob("*.py")))
    ]
    assert any(p.name == "projection.py" for p in files)
    offences = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in files
        for line, what in unpickling_sites(path.read_text(encoding="utf-8"))
    ]
    assert not offences, "code that could unpickle data:\n" + "\n".join(offences)
