"""Map page (AppTest): the map is computed once and stored, drawn with caption groups or
nearest-neighbour colours; picking a point shows its neighbours; uploads land as stars
next to the image they copy; a stored map that cannot be used is explained and offered to
compute again."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lib.index import build_index, open_index
from lib.projection import project, projection_dir
from tests.synthetic import scene, write_families, write_scenes

PAGE = "../pages/map.py"
WORDS = ("red", "green", "blue")


def build_captioned(root: Path) -> Path:
    """4 families of 16 near-duplicates captioned '<colour> scene <seed> v<j>' (red: 0 and 3,
    green: 1, blue: 2) and one lone image without a caption (its group: the folder name)."""
    write_families(root / "train", range(4), words=WORDS)
    write_scenes(root / "train", [99], prefix="lone")
    return build_index(root / "train", root / "idx", embedder="sscd-distilled").index.path


def family(hovertext: str) -> int:
    return int(hovertext.split("<br>")[1].split("_")[1].split(".")[0])


@pytest.fixture(scope="module")
def mapped_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A captioned index whose map is already stored."""
    path = build_captioned(tmp_path_factory.mktemp("map_page"))
    project(open_index(path))
    return path


def page(index_path: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["index_path"] = str(index_path)
    return at.run()


def figure(at: AppTest) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def values(array: Any) -> np.ndarray:
    """Plotly JSON arrays are lists or base64 typed arrays."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


def row_of(at: AppTest, name: str) -> int:
    for trace in figure(at)["data"]:
        for row, text in zip(values(trace["customdata"]), trace["hovertext"], strict=True):
            if f"<br>{name}<br>" in text:
                return int(row)
    raise AssertionError(f"{name} not on the map")


def point(at: AppTest, row: int) -> np.ndarray:
    for trace in figure(at)["data"]:
        rows = values(trace["customdata"])
        if row in rows:
            i = int(np.flatnonzero(rows == row)[0])
            return np.array([values(trace["x"])[i], values(trace["y"])[i]])
    raise AssertionError(f"row {row} not on the map")


def test_compute_button_stores_the_map_and_draws_every_image(tmp_path: Path) -> None:
    index_path = build_captioned(tmp_path)
    at = page(index_path)
    assert not at.exception
    assert "No map yet" in at.info[0].value and "65 images" in at.info[0].value
    assert not at.get("plotly_chart")
    at.button(key="map_compute").click().run()
    assert not at.exception, at.exception
    # the offer to compute is gone with the map on screen, not left above it
    assert not any("No map yet" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "map_compute"]
    assert (projection_dir(index_path) / "coords.npy").is_file()
    assert not (projection_dir(index_path) / "reducer.joblib").exists(), "no pickle is stored"
    traces = figure(at)["data"]
    assert sum(len(values(t["x"])) for t in traces) == 65
    assert [t["name"] for t in traces] == ["red (32)", "blue (16)", "green (16)", "train (1)"]
    assert all(t["type"] == "scattergl" for t in traces)
    assert not at.warning, "65 images are not subsampled"
    # the next visit loads the stored map: no button
    again = page(index_path)
    assert not [b for b in again.button if b.key == "map_compute"]
    assert len(figure(again)["data"]) == 4


def test_colour_by_nearest_neighbour_similarity(mapped_index: Path) -> None:
    at = page(mapped_index)
    at.radio(key="map_colour").set_value("nearest-neighbour similarity").run()
    assert not at.exception
    (trace,) = figure(at)["data"]
    colours = values(trace["marker"]["color"])
    assert len(colours) == 65 and "colorbar" in trace["marker"]
    # the legend sits above the plot, clear of the colour bar and its title on the right
    legend = figure(at)["layout"]["legend"]
    assert legend["orientation"] == "h" and legend["yanchor"] == "bottom" and legend["y"] >= 1
    lone = trace["hovertext"][int(colours.argmin())]
    assert "lone_0099.png" in lone
    assert np.sort(colours)[1] > 0.9, "every other image has a near-duplicate"


def test_picking_a_point_by_id_shows_it_and_its_neighbours(mapped_index: Path) -> None:
    at = page(mapped_index)
    assert "Click a point" in at.info[0].value
    row = row_of(at, "fam_0002_v00.png")
    at.number_input(key="map_point").set_value(row).run()
    assert not at.exception
    assert any(m.value == f"**#{row} blue scene 2 v00**" for m in at.markdown)
    captions = [c for image in at.image for c in image.captions]
    assert captions[0] == "fam_0002_v00.png"
    neighbours = captions[1:]
    assert len(neighbours) == 6 and not any(c.startswith(f"#{row} ") for c in neighbours)
    assert all("blue scene 2 v" in c for c in neighbours)
    scores = [float(c.rsplit("· ", 1)[1]) for c in neighbours]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0.9
    assert any(t["name"] == "selected" for t in figure(at)["data"])
    # the view zooms to the selected point and labels it
    spot = point(at, row)
    layout = figure(at)["layout"]
    (x0, x1), (y0, y1) = layout["xaxis"]["range"], layout["yaxis"]["range"]
    assert x0 < spot[0] < x1 and y0 < spot[1] < y1
    everything = np.concatenate([np.c_[values(t["x"]), values(t["y"])] for t in figure(at)["data"]])
    assert x1 - x0 < 0.5 * np.ptp(everything[:, 0])
    assert any(a["text"] == f"<b>#{row} blue scene 2 v00</b>" for a in layout["annotations"])
    # its neighbours are drawn as pictures where they sit, besides the crowded cells' ones
    assert len(layout["images"]) >= 1 + 6


def test_uploaded_image_lands_next_to_the_image_it_copies(mapped_index: Path) -> None:
    at = page(mapped_index)
    buffer = io.BytesIO()
    scene(1).resize((200, 150)).crop((5, 4, 195, 146)).save(buffer, format="PNG")
    at.file_uploader(key="map_uploads").upload("my_generation.png", buffer.getvalue(), "image/png")
    at.run()
    assert not at.exception, at.exception
    traces = figure(at)["data"]
    stars = [t for t in traces if t["name"] == "your images"]
    assert len(stars) == 1 and stars[0]["marker"]["symbol"] == "star"
    assert stars[0]["text"] == ["my_generation.png"]
    star = np.array([values(stars[0]["x"])[0], values(stars[0]["y"])[0]])
    training = [t for t in traces if t["type"] == "scattergl"]
    xy = np.concatenate([np.c_[values(t["x"]), values(t["y"])] for t in training])
    fam = np.array([family(h) for t in training for h in t["hovertext"]])
    distances = np.linalg.norm(xy - star, axis=1)
    nearest = fam[np.argsort(distances)[:6]]
    assert nearest[0] == 1 and (nearest == 1).sum() >= 5
    assert distances.min() < 0.1 * np.ptp(xy, axis=0).max()
    # the upload is selected at once, zoomed to and labelled, with its nearest training images
    assert at.session_state["map_selected"] == -1
    layout = figure(at)["layout"]
    assert any("your image: my_generation.png" in a["text"] for a in layout["annotations"])
    assert layout["xaxis"]["range"][0] < star[0] < layout["xaxis"]["range"][1]
    assert any(m.value == "**Your image: my_generation.png**" for m in at.markdown)
    captions = [c for image in at.image for c in image.captions]
    assert captions[0] == "my_generation.png"
    assert all("green scene 1 v" in c for c in captions[1:]) and len(captions) == 7


def test_unreadable_upload_is_skipped_with_a_reason(mapped_index: Path) -> None:
    at = page(mapped_index)
    at.file_uploader(key="map_uploads").upload("broken.png", b"not an image", "image/png")
    at.run()
    assert not at.exception
    assert any("broken.png" in w.value for w in at.warning)
    assert not any(t["name"] == "your images" for t in figure(at)["data"])


def test_a_large_map_draws_a_capped_sample_over_the_density_of_all(
    mapped_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "replica.toml"
    config.write_text(f'map_points = 20\nimage_roots = ["{mapped_index.parent}"]\n')
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    at = page(mapped_index)
    assert not at.exception
    assert any("Drawing 20 of the 65 images" in i.value for i in at.info)
    traces = figure(at)["data"]
    points = [t for t in traces if t["type"] == "scattergl"]
    assert sum(len(values(t["x"])) for t in points) == 20
    (heat,) = [t for t in traces if t["type"] == "heatmap"]
    z = heat["z"]
    z = (
        np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(
            [int(d) for d in str(z["shape"]).split(",")]
        )
        if isinstance(z, dict)
        else np.array(z, dtype=float)
    )
    assert round(float(np.nansum(np.expm1(z)))) == 65  # every image is in the shading
    # a picked image that is not drawn is added, with its neighbours, and shown
    drawn = {int(r) for t in points for r in values(t["customdata"])}
    hidden = next(r for r in range(65) if r not in drawn)
    at.number_input(key="map_point").set_value(hidden).run()
    assert not at.exception
    points = [t for t in figure(at)["data"] if t["type"] == "scattergl"]
    rows = {int(r) for t in points for r in values(t["customdata"])}
    assert hidden in rows and 21 <= len(rows) <= 27
    assert any(t["name"] == "selected" for t in figure(at)["data"])
    assert len([c for image in at.image for c in image.captions]) == 7


def test_pictures_on_the_map(mapped_index: Path) -> None:
    at = page(mapped_index)
    images = figure(at)["layout"]["images"]
    # one picture per crowded cell (4 families and a lone image: at least 5 cells)
    assert 5 <= len(images) <= 60
    assert all(i["source"].startswith("data:image/") for i in images)
    assert all(i["xref"] == "x" and i["yref"] == "y" for i in images)
    at.toggle(key="map_pictures").set_value(False).run()
    assert not at.exception
    assert not figure(at)["layout"].get("images")


@pytest.mark.parametrize(
    "damage",
    [
        {"umap": {"min_dist": 0.1}},  # no n_neighbors
        {"n_points": "65"},
        {"umap": [15]},
    ],
)
def test_an_unusable_stored_map_is_explained_and_computed_again(
    mapped_index: Path, tmp_path: Path, damage: dict[str, Any]
) -> None:
    index_path = Path(shutil.copytree(mapped_index, tmp_path / "idx"))
    info_path = projection_dir(index_path) / "projection.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), **damage}))
    at = page(index_path)
    assert not at.exception and not at.error, "a friendly message, not the error box"
    (warning,) = at.warning
    assert "cannot be used" in warning.value and "projection.json" in warning.value
    assert "No usable map yet" in at.info[0].value
    (button,) = [b for b in at.button if b.key == "map_compute"]
    assert button.label == "Compute the map again"
    button.click().run()
    assert not at.exception and not at.warning
    assert sum(len(values(t["x"])) for t in figure(at)["data"]) == 65
    assert page(index_path).get("plotly_chart"), "the new map is stored and loads"


def test_a_list_as_projection_json_is_explained(mapped_index: Path, tmp_path: Path) -> None:
    index_path = Path(shutil.copytree(mapped_index, tmp_path / "idx"))
    (projection_dir(index_path) / "projection.json").write_text("[]")
    at = page(index_path)
    assert not at.exception and not at.error
    assert "must hold an object, not list" in at.warning[0].value


def test_finding_an_image_by_name_or_caption_selects_it(mapped_index: Path) -> None:
    at = page(mapped_index)
    at.text_input(key="map_find").input("blue scene 2 v03").run()
    assert not at.exception
    found = at.selectbox(key="map_found")
    assert len(found.options) == 1 and "blue scene 2 v03" in found.options[0]
    found.select_index(0).run()
    assert not at.exception
    assert any(m.value.endswith("blue scene 2 v03**") for m in at.markdown)
    at.text_input(key="map_find").input("no such picture").run()
    assert any("No file name or caption contains" in c.value for c in at.caption)
