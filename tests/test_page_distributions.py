"""Distributions page (AppTest): a demo batch is scanned and the paper's figures shown; sets of
0, 1 and 2 images and unreadable-only sets never crash; a report is cleared when its inputs
change; a first visit sees the bundled study; Generate's button measures at once."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.index import build_index
from tests.synthetic import scene, write_scenes

PAGE = "../pages/distributions.py"


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist_page")
    write_scenes(root / "train", range(40))
    return build_index(root / "train", root / "idx", embedder="sscd-distilled").index.path


@pytest.fixture
def config(tmp_path: Path, small_index: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Image roots: this test's folder and the folder the index was built from (the app
    reads training images only inside its configured folders)."""
    config = tmp_path / "replica.toml"
    config.write_text(
        f'image_roots = ["{tmp_path}", "{small_index.parent}"]\n'
        f'upload_root = "{tmp_path / "uploads"}"\n'
    )
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    return config


def page(index: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(index)
    at.run()
    at.text_input(key="dist_reference").set_value("").run()
    return at


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    scene(seed).crop((6, 4, 150, 112)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.radio(key="dist_source").set_value("uploaded images").run()
    uploader = at.file_uploader(key="dist_uploads")
    for name, data in files:
        uploader.upload(name, data, "image/png")
    return at.run()


def badges(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "-badge[" in m.value]


def test_demo_batch_shows_rates_histogram_and_gallery(small_index: Path, config: Path) -> None:
    at = page(small_index)
    at.radio(key="dist_source").set_value("a demo batch").run()
    at.button(key="dist_demo").click().run()
    assert any(c.value.startswith("Demo batch: 20 images (demo-batch-") for c in at.caption)
    at.button(key="dist_run").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    # the demo batch holds 20 edited training images and no unseen ones (no held-out folder)
    assert metrics["Generations scanned"] == "20"
    assert float(metrics["Replication rate (copies)"].rstrip("%")) >= 50.0
    assert at.get("plotly_chart")
    table = at.dataframe[0].value
    assert list(table["set"]) == ["generated vs training", "training vs training"]
    # no held-out folder: the chart's second set is training vs training, in grey, and the
    # text says so (it called it "real images never used for training" in blue)
    reading = " ".join(m.value for m in at.markdown if "How to read this" in m.value)
    assert "grey" in reading and "never used for training" not in reading
    import json

    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    colours = {t["name"].split(" (")[0]: t["marker"]["color"] for t in traces}
    assert colours == {"generated vs training": "#d62728", "training vs training": "#7f7f7f"}
    baseline = float(table["copies"].iloc[1].rstrip("%"))
    assert baseline <= 10.0, f"training images against their siblings: {baseline}% copies"
    gallery = badges(at)
    # one verdict vocabulary (VERDICT_BADGES), with the threshold that applies
    assert gallery and gallery[0].startswith(":red-badge[:material/warning: COPY]")
    assert "copy at ≥ " in gallery[0]
    assert any("the top match is its source" in g for g in gallery)
    assert any("How to read this" in m.value for m in at.markdown)
    assert any("Each index measures its own threshold" in c.value for c in at.caption)


def test_one_readable_and_one_unreadable_upload(small_index: Path, config: Path) -> None:
    at = upload(page(small_index), [("mine.png", png(3)), ("broken.png", b"not an image")])
    at.button(key="dist_run").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Generations scanned"] == "1"
    scanned = next(m for m in at.metric if m.label == "Generations scanned")
    assert not scanned.proto.delta  # an unreadable count is not a green "up" arrow
    assert any("broken.png" in w.value for w in at.warning)
    assert not [s for s in at.slider if s.key == "dist_gallery_n"]  # nothing to choose
    assert len(badges(at)) == 1
    pairs = [c for image in at.image for c in image.captions if c.startswith("mine.png · ")]
    assert len(pairs) == 1  # query and match drawn as one picture, at one height
    strip = next(i for i in at.image if i.captions and i.captions[0].startswith("mine.png"))
    assert strip.proto.imgs[0].url  # drawn
    assert not any("/" in c for image in at.image for c in image.captions)
    # another source: the report of the uploads is gone, not shown for the new inputs
    at.radio(key="dist_source").set_value("a demo batch").run()
    assert not at.exception, at.exception
    assert "Generations scanned" not in {m.label for m in at.metric} and not badges(at)
    assert "dist_report" not in at.session_state


def test_two_uploads_and_a_rerun_keeps_the_report(small_index: Path, config: Path) -> None:
    at = upload(page(small_index), [("a.png", png(3)), ("b.png", png(5))])
    at.button(key="dist_run").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Generations scanned"] == "2"
    at.slider(key="dist_gallery_n").set_value(1).run()
    assert not at.exception
    assert len(badges(at)) == 1  # the same report, one shown


def test_unreadable_only_and_empty_sets_explain_themselves(
    small_index: Path, config: Path, tmp_path: Path
) -> None:
    at = upload(page(small_index), [("broken.png", b"nope"), ("empty.png", b"")])
    at.button(key="dist_run").click().run()
    assert not at.exception, at.exception
    assert "none of the 2 generated file(s) could be read" in at.error[0].value
    assert "readable images" in at.error[0].value
    empty = tmp_path / "empty"
    empty.mkdir()
    at.radio(key="dist_source").set_value("a folder on the server").run()
    at.text_input(key="dist_folder").set_value(str(empty)).run()
    at.button(key="dist_run").click().run()
    assert not at.exception, at.exception
    assert "no image files found" in at.error[0].value


def test_first_visit_shows_the_bundled_study(small_index: Path, config: Path) -> None:
    at = page(small_index)
    assert not at.exception
    assert at.button(key="dist_run").disabled  # nothing chosen yet: no crash, no report
    assert any(s.value == "An example: the bundled study" for s in at.subheader)
    assert len(at.image) >= 2  # a histogram and a gallery
    labels = {m.label for m in at.metric}
    assert {"Copies among samples", "Copies among held-out"} <= labels


def test_a_batch_sent_from_generate_is_measured_at_once(
    small_index: Path, config: Path, tmp_path: Path
) -> None:
    batch = tmp_path / "uploads" / "generated-test"
    batch.mkdir(parents=True)
    for i in range(3):
        (batch / f"gen_{i:04d}.png").write_bytes(png(i))
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(small_index)
    at.session_state["last_generated_batch"] = str(batch)
    at.session_state["dist_reference"] = ""
    at.session_state["dist_source"] = "a demo batch"  # whatever was picked before
    at.session_state["measure_batch_now"] = True
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="dist_source").value == "the last batch generated in the app"
    assert {m.label: m.value for m in at.metric}["Generations scanned"] == "3"
    assert not any("/" in c.value for c in at.caption if "generated" in c.value)


def test_folder_outside_allowed_roots_is_refused(small_index: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(small_index)
    at.run()
    at.text_input(key="dist_folder").set_value("/etc").run()
    assert not at.exception
    assert "outside the allowed folders" in at.error[0].value


def test_the_default_held_out_folder_is_shown_without_the_server_layout() -> None:
    from lib.app_config import AppConfig
    from lib.defaults import OPENMOJI_DIR

    heldout = OPENMOJI_DIR / "heldout"
    if not heldout.is_dir():
        pytest.skip("OpenMoji not prepared: run make setup")
    # what the page shows (relative to the app's folder) is what it accepts
    assert AppConfig().allowed_image_dir("data/openmoji/heldout") == heldout.resolve()
