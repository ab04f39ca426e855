"""Duplicates page (AppTest): planted near-duplicate groups appear as clusters with the kept
image marked, counts and exports match, the threshold and the paging work; the check against
another index finds planted test images in a training index, with a CSV, and refuses an
index made by another embedder."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from lib.duplicates import (
    DEFAULT_DUPLICATE_THRESHOLD,
    PIXELS_COSINE,
    PixelCheck,
    find_duplicates,
)
from lib.index import build_index, open_index
from tests.synthetic import scene, write_scenes

PAGE = "../pages/duplicates.py"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 distinct scenes; scene 3 with a crop and a larger resize (kept), scene 7 with a
    brightened copy: 2 clusters, 5 images, 3 removable at cosine 0.9."""
    root = tmp_path_factory.mktemp("dup_page")
    folder = root / "train"
    write_scenes(folder, range(30))
    scene(3).crop((4, 3, 156, 117)).resize((160, 120)).save(folder / "dupA_crop.png")
    scene(3).resize((320, 240)).save(folder / "dupA_big.png")
    Image.eval(scene(7), lambda v: min(255, v + 12)).save(folder / "dupB_bright.png")
    return build_index(folder, root / "idx", embedder="sscd-distilled").index.path


def page(index_path: Path, *, pixels: bool = False) -> AppTest:
    """The page on ``index_path``, by default with the cosine alone (the pixel check,
    on by default for small indexes, has tests of its own)."""
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(index_path)
    at.session_state["dup_pixels"] = pixels
    at.session_state["dup_against_pixels"] = pixels
    return at.run()


def test_pixels_are_checked_by_default_and_each_image_says_why(planted: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(planted)
    at.run()
    assert not at.exception
    assert at.toggle(key="dup_pixels").value, "on by default for a small index"
    assert at.slider(key="dup_threshold").value == pytest.approx(PIXELS_COSINE)
    expected = find_duplicates(open_index(planted), PIXELS_COSINE, pixels=PixelCheck())
    removed = sorted(Path(m.path).name for c in expected.clusters for m in c.members if not m.keep)
    assert (
        "dupA_crop.png" in removed and "dupB_bright.png" in removed
    ) or "img_0007.png" in removed
    starts = ("The pixels line up", "Mirror images", "One is a part", "Near-identical")
    reasons = [c.value for c in at.caption if c.value.startswith(starts)]
    assert len(reasons) == len(removed), "every image proposed says why"
    assert {m.label: m.value for m in at.metric}["Removable"] == str(len(removed))
    at.toggle(key="dup_pixels").set_value(False).run()
    assert at.slider(key="dup_threshold").value == pytest.approx(DEFAULT_DUPLICATE_THRESHOLD)
    at.toggle(key="dup_pixels").set_value(True).run()
    at.checkbox(key="dup_mirrors").uncheck().run()
    at.checkbox(key="dup_recoloured").check().run()
    assert not at.exception


def image_captions(at: AppTest) -> list[str]:
    return [c for image in at.image for c in image.captions]


def test_planted_clusters_counts_and_kept_images(planted: Path) -> None:
    at = page(planted)
    assert not at.exception
    assert at.slider(key="dup_threshold").value == pytest.approx(DEFAULT_DUPLICATE_THRESHOLD)
    at.slider(key="dup_threshold").set_value(0.9).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Clusters"] == "2"
    assert metrics["Images in clusters"] == "5"
    assert metrics["Removable"] == "3"
    headings = [m.value for m in at.markdown if m.value.startswith("**Cluster")]
    assert len(headings) == 2 and "3 images" in headings[0] and "2 images" in headings[1]
    # each cluster's lowest similarity between any two members
    lowest = [float(h.rsplit("lowest between any two ", 1)[1]) for h in headings]
    assert all(0.9 - 1e-3 <= x <= 1.0 for x in lowest)
    assert not at.warning  # 3 of 33 images: nothing alarming
    captions = image_captions(at)
    assert len(captions) == 5
    kept = [c for c in captions if c.startswith("KEEP ·")]
    assert len(kept) == 2 and "dupA_big.png" in kept[0]
    # the others show their cosine to the kept image, at or above the threshold
    scores = [float(c.rsplit("· ", 1)[1]) for c in captions if not c.startswith("KEEP")]
    assert len(scores) == 3 and min(scores) >= 0.9
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Files to remove (3) · CSV", "All clusters · CSV", "All clusters · JSON"]
    assert not [b for b in at.button if b.key in ("dup_next", "dup_prev")]


def test_removal_csv_lists_every_image_but_the_kept_ones(planted: Path, tmp_path: Path) -> None:
    report = find_duplicates(open_index(planted), 0.9)
    text = report.removal_csv_text()
    removed = sorted(Path(r["path"]).name for r in csv.DictReader(io.StringIO(text)))
    assert removed == ["dupA_crop.png", "img_0003.png", "img_0007.png"]
    report.write_removal_csv(tmp_path / "remove.csv")
    assert (tmp_path / "remove.csv").read_bytes().decode("utf-8") == text
    rows = list(csv.DictReader(io.StringIO(report.csv_text())))
    assert len(rows) == 5 and sum(int(r["keep"]) for r in rows) == 2


def test_strict_threshold_finds_nothing(planted: Path) -> None:
    at = page(planted)
    at.slider(key="dup_threshold").set_value(1.0).run()
    assert not at.exception
    assert "No near-duplicates at cosine ≥ 1.00" in at.success[0].value
    assert {m.label: m.value for m in at.metric}["Clusters"] == "0"
    assert not at.image and not at.get("download_button")


def headings(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("**Cluster")]


def test_clusters_are_paged_twenty_at_a_time(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    for path in write_scenes(folder, range(34)):
        Image.eval(Image.open(path), lambda v: min(255, v + 12)).save(
            path.with_name(f"{path.stem}_bright.png")
        )
    index_path = build_index(folder, tmp_path / "idx", embedder="sscd-distilled").index.path
    at = page(index_path)
    at.slider(key="dup_threshold").set_value(0.9).run()
    assert {m.label: m.value for m in at.metric}["Clusters"] == "34"
    assert len(headings(at)) == 20 and headings(at)[0].startswith("**Cluster 1**")
    assert any("Clusters 1–20 of 34" in c.value for c in at.caption)
    at.button(key="dup_next").click().run()
    assert not at.exception
    assert len(headings(at)) == 14 and headings(at)[0].startswith("**Cluster 21**")
    assert at.button(key="dup_next").disabled and not at.button(key="dup_prev").disabled
    at.button(key="dup_prev").click().run()
    assert headings(at)[0].startswith("**Cluster 1**")
    at.number_input(key="dup_page").set_value(2).run()
    assert headings(at)[0].startswith("**Cluster 21**")
    # a new threshold starts again from the first page
    at.slider(key="dup_threshold").set_value(0.88).run()
    assert headings(at)[0].startswith("**Cluster 1**") and len(headings(at)) == 20
    # half of the set would go: the curator is warned
    assert "This would remove 34 of 68 images (50%)" in at.warning[0].value
    assert "Raise the threshold" in at.warning[0].value


def test_the_curator_picks_which_image_is_kept(planted: Path) -> None:
    at = page(planted)
    at.slider(key="dup_threshold").set_value(0.9).run()
    keep = at.selectbox(key="dup_keep")
    assert keep.value == "most-linked"
    keep.set_value("first").run()
    assert not at.exception
    kept = [c for c in image_captions(at) if c.startswith("KEEP ·")]
    expected = find_duplicates(open_index(planted), 0.9, keep="first")
    first = [Path(m.path).name for c in expected.clusters for m in c.members if m.keep]
    assert len(kept) == 2 and all(n in c for n, c in zip(first, kept, strict=True))
    labels = [b.label for b in at.get("download_button")]
    assert labels[0] == "Files to remove (3) · CSV"


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index root with 'train' (30 scenes), 'test' (12 other scenes, a brightened copy of
    training scene 3 and a cropped copy of scene 7) and 'pixels' (made by another embedder)."""
    root = tmp_path_factory.mktemp("dup_against")
    write_scenes(root / "train_images", range(30))
    write_scenes(root / "test_images", range(200, 212))
    Image.eval(scene(3), lambda v: min(255, v + 12)).save(root / "test_images" / "leak_3.png")
    scene(7).crop((4, 3, 156, 117)).resize((160, 120)).save(root / "test_images" / "leak_7.png")
    for name, images, embedder in (
        ("train", "train_images", "sscd-distilled"),
        ("test", "test_images", "sscd-distilled"),
        ("pixels", "train_images", "pixels"),
    ):
        build_index(root / images, root / "indexes" / name, embedder=embedder)
    return root


def against_page(
    root: Path, monkeypatch: pytest.MonkeyPatch, other: str, *, pixels: bool = False
) -> AppTest:
    config = root / "replica.toml"
    config.write_text(f'index_root = "{root / "indexes"}"\nimage_roots = ["{root}"]\n')
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    at = page(root / "indexes" / "test", pixels=pixels)
    at.radio(key="dup_mode").set_value("This index's images in another index").run()
    assert not at.exception
    assert sorted(Path(o).name for o in at.selectbox(key="dup_other").options) == [
        "pixels", "train",
    ]  # fmt: skip
    other_path = next(o for o in at.selectbox(key="dup_other").options if o.endswith(other))
    at.selectbox(key="dup_other").set_value(other_path).run()
    return at


def test_test_images_found_in_the_training_index(
    two_indexes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = against_page(two_indexes, monkeypatch, "train")
    at.slider(key="dup_against_threshold").set_value(0.9).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images of test found"] == "2" and metrics["Pairs above threshold"] == "2"
    assert metrics["Share"] == "14.3%"
    (table,) = at.dataframe
    assert sorted(table.value["in train"]) == ["img_0003.png", "img_0007.png"]
    (button,) = at.get("download_button")
    assert "Images found in train (2 pairs) · CSV" in button.label
    captions = [c for image in at.image for c in image.captions]
    assert len(captions) == 2 and any("leak_3.png" in c for c in captions)  # one picture a pair
    # a strict threshold finds nothing, and says so
    at.slider(key="dup_against_threshold").set_value(1.0).run()
    assert "None of the 14 images of test is in train" in at.success[0].value


def test_an_index_of_another_embedder_is_refused(
    two_indexes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = against_page(two_indexes, monkeypatch, "pixels")
    assert not at.exception
    assert "cannot be compared" in at.error[0].value and "'pixels'" in at.error[0].value
    assert not at.get("download_button")


def test_test_images_found_by_their_pixels_say_why(
    two_indexes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = against_page(two_indexes, monkeypatch, "train", pixels=True)
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images of test found"] == "2"
    (table,) = at.dataframe
    assert all("alignment" in why or "cosine" in why for why in table.value["why"])
