"""Reading outside the allowed folders: an index whose ``metadata.parquet`` was edited to name
pictures elsewhere on the machine (directly, or through a symlink inside its source folder)
never gets them opened, shown, aligned or embedded in a report; its honest rows still are."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import lib.evidence.identity as identity
import lib.images as images
from lib.allowed_paths import (
    OUTSIDE_REASON,
    app_roots,
    index_roots,
    recorded_roots,
    resolve_inside,
    restrict,
)
from lib.index import build_index, open_index
from tests.cli_runner import run_cli
from tests.synthetic import scene, write_scenes

MAGENTA = (255, 0, 255)
CYAN = (0, 255, 255)


@dataclass(frozen=True)
class Planted:
    """An index of scenes 0-7 built from ``train``, then edited: row 3 names ``secret``
    (a magenta picture outside every allowed folder), row 4 names ``train/link.png``, a
    symlink to ``secret_link`` (cyan, outside too). ``queries[n]`` is scene n itself."""

    root: Path
    index: Path
    train: Path
    secret: Path
    secret_link: Path
    queries: dict[int, Path]


def point_row_at(index_dir: Path, name: str, target: Path) -> None:
    """Rewrite the segment metadata so that the row of file ``name`` names ``target``, as
    a hostile editor of an index folder would (vectors untouched)."""
    for parquet in sorted((index_dir / "segments").glob("seg-*/metadata.parquet")):
        frame = pd.read_parquet(parquet)
        hit = frame["path"].map(lambda p: Path(p).name == name)
        if hit.any():
            frame.loc[hit, "path"] = str(target)
            frame.to_parquet(parquet, index=False)
            return
    raise AssertionError(f"no row for {name}")


def solid(colour: tuple[int, int, int], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (160, 120), colour).save(path)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    root = tmp_path_factory.mktemp("allowed")
    train = root / "train"
    write_scenes(train, range(8))
    index = build_index(train, root / "idx", embedder="pixels").index.path
    secret = solid(MAGENTA, root / "outside" / "secret.png")
    secret_link = solid(CYAN, root / "outside" / "linked.png")
    (train / "link.png").symlink_to(secret_link)
    point_row_at(index, "img_0003.png", secret)
    point_row_at(index, "img_0004.png", train / "link.png")
    queries = {}
    for n in (3, 4, 5):
        queries[n] = root / "queries" / f"query_{n}.png"
        queries[n].parent.mkdir(parents=True, exist_ok=True)
        scene(n).save(queries[n])
    return Planted(root, index, train, secret, secret_link, queries)


@pytest.fixture
def config(planted: Planted, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app's settings: only the training folder and an upload folder may be read."""
    path = planted.root / "replica.toml"
    path.write_text(
        f'image_roots = ["{planted.train}"]\nupload_root = "{planted.root / "uploads"}"\n'
    )
    monkeypatch.setenv("REPLICA_CONFIG", str(path))
    return path


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file an image load or a file hash opens, resolved (a spy on the readers)."""
    seen: list[str] = []
    read_bytes = images.read_bytes

    def spy_read(path: str | os.PathLike[str]) -> bytes:
        seen.append(os.path.realpath(path))
        return read_bytes(path)

    def spy_open(path: str | os.PathLike[str], *args: object, **kwargs: object) -> object:
        seen.append(os.path.realpath(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(images, "read_bytes", spy_read)
    monkeypatch.setattr(identity, "open", spy_open, raising=False)
    return seen


def outside_files(planted: Planted) -> set[str]:
    return {os.path.realpath(planted.secret), os.path.realpath(planted.secret_link)}


def share_of(colour: tuple[int, int, int], picture: Image.Image) -> float:
    """Share (0..1) of the picture's pixels that have exactly ``colour``."""
    arr = np.asarray(picture.convert("RGB"))
    return float(np.all(arr == np.array(colour), axis=-1).mean())


def embedded_pictures(html: str) -> dict[str, list[Image.Image]]:
    """The report's data-URI pictures by their alt text."""
    out: dict[str, list[Image.Image]] = {}
    for b64, alt in re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)">', html):
        out.setdefault(alt, []).append(Image.open(io.BytesIO(base64.b64decode(b64))))
    return out


# --- the rule ----------------------------------------------------------------------------


def test_only_paths_inside_a_root_resolve_symlinks_and_dot_dots_included(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    inside_file = solid(MAGENTA, root / "a" / "in.png")
    outside_file = solid(CYAN, outside / "out.png")
    (root / "leak.png").symlink_to(outside_file)
    (root / "alias.png").symlink_to(inside_file)
    (tmp_path / "root-link").symlink_to(root, target_is_directory=True)
    roots = [root]
    assert resolve_inside(inside_file, roots) == inside_file.resolve()
    assert resolve_inside(root / "alias.png", roots) == inside_file.resolve()
    assert resolve_inside(tmp_path / "root-link" / "a" / "in.png", roots) is not None
    assert resolve_inside(root / "a" / "in.png", [tmp_path / "root-link"]) is not None
    assert resolve_inside(outside_file, roots) is None
    assert resolve_inside(root / "leak.png", roots) is None, "a symlink leaving the root"
    assert resolve_inside(root / ".." / "outside" / "out.png", roots) is None
    assert resolve_inside(root, roots) is None, "a root is not a file inside it"
    assert resolve_inside("bad\0name.png", roots) is None


def test_recorded_sources_never_widen_to_a_root_home_system_or_foreign_folder(
    planted: Planted, config: Path
) -> None:
    index = open_index(planted.index)
    index.manifest.sources = [
        "/",
        str(Path.home()),
        str(Path.home().parent),
        "/etc",
        "openmoji",
        str(planted.secret),
        str(planted.root / "outside"),
    ]
    roots = recorded_roots(index)
    assert Path("/") not in roots and Path.home().resolve() not in roots
    assert Path("/etc").resolve() not in roots and planted.secret.resolve() not in roots
    outside = (planted.root / "outside").resolve()
    assert outside not in roots, "a folder this machine never indexed is the manifest's word"
    assert planted.index.resolve() in roots and planted.train.resolve() in roots
    # a folder this machine indexed images from (a build or an add) counts in the CLI
    from lib.allowed_paths import remember_source

    remember_source(outside)
    assert outside in recorded_roots(index), "an ordinary folder indexed here counts"
    # the app's rule: only its configured folders, whatever the manifest records
    restrict(index, app_roots)
    assert (planted.root / "outside").resolve() not in index_roots(index)
    assert planted.train.resolve() in index_roots(index)


# --- (a) search and the Search page ------------------------------------------------------


def test_search_never_opens_a_picture_outside_and_aligns_the_others(
    planted: Planted, config: Path, opened: list[str]
) -> None:
    from lib.search import search_files

    index = open_index(planted.index)
    results = search_files(index, [planted.queries[n] for n in (3, 4, 5)], top_k=3)
    assert not outside_files(planted) & set(opened), "an outside picture was opened"
    by_query = {Path(r.query).name: r for r in results}
    hostile = by_query["query_3.png"].top
    assert hostile is not None and hostile.path == str(planted.secret)
    assert hostile.alignment is None, "no pixel alignment with a file that was not read"
    assert by_query["query_3.png"].verdict in ("copy", "similar", "none")
    honest = by_query["query_5.png"].top
    assert honest is not None and Path(honest.path).name == "img_0005.png"
    assert honest.alignment is not None and honest.alignment > 0.99


def search_page(planted: Planted, query: int, top_k: int = 5) -> AppTest:
    at = AppTest.from_file("../pages/search.py", default_timeout=120)
    at.session_state["index_path"] = str(planted.index)
    at.run()
    at.slider(key="search_k").set_value(top_k).run()
    data = planted.queries[query].read_bytes()
    at.file_uploader(key="search_uploads").upload(f"query_{query}.png", data, "image/png")
    return at.run()


def page_texts(at: AppTest, kinds: tuple[str, ...] = ("markdown", "caption", "info")) -> list[str]:
    """The text of every element of these kinds on the page."""
    return [str(e.value) for kind in (*kinds, "warning", "error") for e in at.get(kind)]


def test_search_page_shows_a_placeholder_instead_of_a_picture_outside(
    planted: Planted, config: Path, opened: list[str]
) -> None:
    at = search_page(planted, 3)
    assert not at.exception, at.exception
    assert not outside_files(planted) & set(opened), "the page opened an outside picture"
    texts = page_texts(at)
    assert f"({OUTSIDE_REASON})" in texts, "the match's place says why it is empty"
    assert any("cannot be compared" in t for t in page_texts(at, ("info",))), "the pair view"
    assert not any(str(planted.root) in t for t in texts), "no server path on the page"
    assert len(at.image) >= 2, "the query and the honest matches are still shown"


def test_a_symlink_inside_the_source_folder_that_leads_outside_is_refused(
    planted: Planted, config: Path, opened: list[str]
) -> None:
    from lib.st_cache import cached_thumbnail

    link = planted.train / "link.png"
    assert resolve_inside(link, index_roots(open_index(planted.index))) is None
    assert cached_thumbnail(str(link), 40) is None
    at = search_page(planted, 4)
    assert not at.exception, at.exception
    assert f"({OUTSIDE_REASON})" in page_texts(at)
    assert not outside_files(planted) & set(opened), "the symlink's target was opened"


def test_a_legitimate_match_is_still_shown_beside_refused_ones(
    planted: Planted, config: Path, opened: list[str]
) -> None:
    at = search_page(planted, 5, top_k=8)  # every row: the honest ones and the edited ones
    assert not at.exception, at.exception
    assert not outside_files(planted) & set(opened)
    assert os.path.realpath(planted.train / "img_0005.png") in opened
    side_by_side = [i for i in at.image if any("training #" in c for c in i.captions)]
    assert side_by_side, "the pair view shows the honest top match"
    assert page_texts(at).count(f"({OUTSIDE_REASON})") == 2, "only the two edited rows"
    assert not any("cannot be compared" in t for t in page_texts(at, ("info",)))


def test_a_demo_batch_leaves_out_the_rows_outside(
    planted: Planted, config: Path, tmp_path: Path, opened: list[str]
) -> None:
    from lib.demo import make_demo_batch

    out = make_demo_batch(open_index(planted.index), tmp_path / "demo", None, n_copies=8)
    assert not outside_files(planted) & set(opened)
    made = sorted(p.name for p in out.glob("copy_*.png"))
    assert len(made) == 6 and not any(p.endswith(("_of_3.png", "_of_4.png")) for p in made)


# --- (b) reports -------------------------------------------------------------------------


def make_report(planted: Planted, query: int, out: Path) -> tuple[str, str]:
    """``python -m lib report`` of every row's match with ``queries[query]``: stdout, HTML."""
    query_file = str(planted.queries[query])
    done = run_cli("report", str(planted.index), query_file, "--top-k", "8", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return done.stdout, out.read_text(encoding="utf-8")


def assert_no_outside_picture(html: str) -> None:
    for alt, found in embedded_pictures(html).items():
        for picture in found:
            for colour in (MAGENTA, CYAN):
                assert share_of(colour, picture) < 0.01, f"an outside picture is in '{alt}'"


def test_report_leaves_out_a_picture_outside_and_says_why(
    planted: Planted, config: Path, tmp_path: Path
) -> None:
    stdout, html = make_report(planted, 3, tmp_path / "report.html")
    assert embedded_pictures(html)["training image"], "the match's place holds a picture"
    assert_no_outside_picture(html)
    assert base64.b64encode(planted.secret.read_bytes()).decode()[:64] not in html
    assert f"not included in this report: {OUTSIDE_REASON}" in html
    assert OUTSIDE_REASON in stdout


def test_report_of_a_legitimate_match_embeds_it_but_not_the_next_outside_ones(
    planted: Planted, config: Path, tmp_path: Path
) -> None:
    _, html = make_report(planted, 5, tmp_path / "report.html")
    (match,) = embedded_pictures(html)["training image"]
    assert match.size == (427, 320), "the training image at the pair's height, not a grey box"
    assert "not included in this report" not in html, "the honest match is in it"
    assert_no_outside_picture(html)  # the edited rows among the next matches are not


def test_verify_does_not_read_a_training_file_that_now_lies_outside(
    planted: Planted, config: Path, tmp_path: Path, opened: list[str]
) -> None:
    from lib.evidence import Document, make_finding, verify_document, write_document

    copy = tmp_path / "idx"
    shutil.copytree(planted.index, copy)
    finding = make_finding(open_index(copy), "query_5.png", planted.queries[5].read_bytes())
    assert finding.match.file_available
    report = write_document(Document("r", findings=[finding]), tmp_path / "r.json")
    point_row_at(copy, "img_0005.png", planted.secret)
    opened.clear()
    checks = verify_document(report, index_path=copy).findings[0].checks
    (training,) = [c for c in checks if c.name == "training file"]
    assert not training.ok and OUTSIDE_REASON in training.detail
    assert not outside_files(planted) & set(opened)


def test_calibrating_never_reads_the_rows_outside(
    planted: Planted, opened: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`index calibrate` (and the refit of an add) aligns the null sample's pixels with
    their shortlists: the edited rows are never opened for it either."""
    from lib.index import calibrate_index

    train = tmp_path / "train"
    write_scenes(train, range(30))
    copy = build_index(train, tmp_path / "idx", embedder="pixels").index.path
    point_row_at(copy, "img_0003.png", planted.secret)
    (train / "link.png").symlink_to(planted.secret_link)
    point_row_at(copy, "img_0004.png", train / "link.png")
    config = tmp_path / "replica.toml"
    config.write_text(f'image_roots = ["{train}"]\n')
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    opened.clear()
    index = calibrate_index(copy)
    assert index.calibration.fitted_rows == 30 and index.calibration.uses_alignment
    outside = {str(planted.secret.resolve()), str(planted.secret_link.resolve())}
    assert opened and not outside & set(opened), "an outside file was read"
    assert str((train / "img_0005.png").resolve()) in opened  # honest rows were
