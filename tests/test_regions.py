"""Region re-ranking: crop grids, a planted object-level copy, determinism, drawing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.index import ReplicaIndex, build_index
from lib.regions import (
    Regions,
    compare_regions,
    embed_regions,
    region_boxes,
    region_heatmap,
    region_score,
)
from lib.search import QueryResult, rank_vectors, rerank_results, search_images
from tests.synthetic import scene, write_scenes

SOURCE, BACKGROUND = 3, 100
CROP = (40, 30, 120, 90)  # the part of scene(SOURCE) that is pasted
PASTE_AT = (70, 50)  # not on the crop grid, so the match must be approximate
PASTE_BOX = (70, 50, 150, 110)
SHORTLIST = 8


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def _query() -> Image.Image:
    image = scene(BACKGROUND)
    image.paste(scene(SOURCE).crop(CROP), PASTE_AT)
    return image


@dataclass
class Planted:
    index: ReplicaIndex
    global_result: QueryResult
    region_result: QueryResult


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    root = tmp_path_factory.mktemp("regions")
    write_scenes(root / "train", range(30))
    index = build_index(root / "train", root / "idx", embedder="sscd-distilled").index
    model = index.create_embedder()
    query = [("query", _query())]
    plain = search_images(index, query, embedder=model, top_k=SHORTLIST)[0]
    regions = search_images(
        index, query, embedder=model, top_k=SHORTLIST, regions=True, shortlist=SHORTLIST
    )[0]
    return Planted(index, plain, regions)


def _rank(result: QueryResult, seed: int) -> int | None:
    names = [Path(m.path).name for m in result.matches]
    name = f"img_{seed:04d}.png"
    return names.index(name) + 1 if name in names else None


def test_boxes_cover_the_image_with_the_expected_count() -> None:
    boxes = region_boxes(160, 120)  # scales 1 and 1/2, half overlap: 1 + 3 x 3
    assert len(boxes) == 10
    assert boxes[0] == (0, 0, 160, 120)
    for scales in [(1.0, 0.5), (1.0, 0.5, 0.33), (0.4,)]:
        covered = np.zeros((120, 160), bool)
        for left, top, right, bottom in region_boxes(160, 120, scales):
            assert 0 <= left < right <= 160 and 0 <= top < bottom <= 120
            covered[top:bottom, left:right] = True
        assert covered.all()
    third = region_boxes(160, 120, (0.33,))
    assert {(r - left, b - t) for left, t, r, b in third} == {(53, 40)}
    assert len(third) == 6 * 5  # stride 26.5 px across 107 px, 20 px across 80 px
    assert region_boxes(10, 10, (1.0, 1.0)) == [(0, 0, 10, 10)]  # duplicates dropped
    with pytest.raises(ValueError, match="scales"):
        region_boxes(10, 10, (1.5,))
    with pytest.raises(ValueError, match="overlap"):
        region_boxes(10, 10, overlap=1.0)


def test_region_reranking_finds_a_pasted_object(planted: Planted) -> None:
    global_rank = _rank(planted.global_result, SOURCE)
    # planted: the whole-image embedding ranks the source low (measured: 6th of 30;
    # region 0.82 against global 0.72)
    assert global_rank is not None and global_rank > 1
    assert _rank(planted.region_result, SOURCE) == 1
    top = planted.region_result.matches[0]
    before = planted.global_result.matches[global_rank - 1]
    assert top.global_score == pytest.approx(before.score)
    assert top.region_score is not None and top.region_score > before.score + 0.05
    # regions order the shortlist; the verdict keeps resting on the whole-image score
    assert top.combined is not None and top.combined > before.calibrated
    assert top.calibrated == pytest.approx(before.calibrated)
    combined = [m.combined for m in planted.region_result.matches]
    assert combined == sorted(combined, reverse=True), "ranks follow the score shown"
    assert planted.global_result.verdict != "copy"
    # the best crop pair points at the pasted object in the query and its origin
    assert top.query_box is not None and _iou(top.query_box, PASTE_BOX) > 0.3
    assert top.match_box is not None and _iou(top.match_box, CROP) > 0.3
    assert [m.rank for m in planted.region_result.matches] == list(range(1, SHORTLIST + 1))


def test_json_keeps_its_shape_without_regions(planted: Planted) -> None:
    plain = planted.global_result.to_dict()["matches"][0]
    assert not {"region_score", "query_box", "match_box", "global_score"} & set(plain)
    regions = planted.region_result.to_dict()["matches"][0]
    assert isinstance(regions["query_box"], list) and len(regions["query_box"]) == 4


def test_rerank_is_deterministic_and_order_independent(planted: Planted) -> None:
    index = planted.index
    model = index.create_embedder()
    images = [_query(), scene(SOURCE), scene(200)]
    labels = ["pasted", "exact", "unrelated"]
    vectors = model.embed_images(images)
    ranked = rank_vectors(index, vectors, labels, top_k=5)
    forward = rerank_results(index, model, ranked, images, top_k=3, shortlist=5)
    backward = rerank_results(index, model, ranked[::-1], images[::-1], top_k=3, shortlist=5)
    again = rerank_results(index, model, ranked, images, top_k=3, shortlist=5)
    by_label = {r.query: r.to_dict() for r in backward}
    for result, repeat in zip(forward, again, strict=True):
        assert result.to_dict() == by_label[result.query]
        assert result.to_dict() == repeat.to_dict()
    exact = forward[1]
    assert _rank(exact, SOURCE) == 1 and exact.verdict == "copy"


def test_region_score_and_heatmap() -> None:
    from lib.embedders import create_embedder

    model = create_embedder("pixels")
    image = scene(3)
    regions = embed_regions(model, image)
    same = region_score(regions, regions)
    assert same.score == pytest.approx(1.0, abs=1e-5)
    assert same.similarity.shape == (len(regions.boxes), len(regions.boxes))
    shifted = Regions(regions.boxes[::-1], regions.vectors[::-1])
    pair = region_score(regions, shifted)
    assert pair.score == pytest.approx(1.0, abs=1e-5)
    assert len(pair.top_pairs(3)) == 3
    drawn_q, drawn_m = region_heatmap(image, scene(3), pair)
    assert drawn_q.size == image.size and drawn_m.size == image.size
    assert drawn_q.mode == drawn_m.mode == "RGB"
    assert np.asarray(drawn_q).astype(int).sum() != np.asarray(image).astype(int).sum()
    assert image.tobytes() == scene(3).tobytes()  # inputs untouched


def test_the_regions_view_tints_only_the_matching_part_of_the_query(planted: Planted) -> None:
    query = _query()
    pair = compare_regions(planted.index.create_embedder(), query, scene(SOURCE))
    tinted, _ = region_heatmap(query, scene(SOURCE), pair, pairs=0)
    changed = np.any(np.asarray(tinted) != np.asarray(query), axis=-1)
    assert 0.05 < changed.mean() < 0.6, "the paste is tinted, not the whole query"
    x0, y0, x1, y1 = PASTE_BOX
    assert changed[y0:y1, x0:x1].mean() > changed.mean(), "the tint sits on the paste"


def test_compare_regions_points_at_the_paste(planted: Planted) -> None:
    pasted = compare_regions(planted.index.create_embedder(), _query(), scene(SOURCE))
    assert _iou(pasted.query_box, PASTE_BOX) > 0.3 and _iou(pasted.match_box, CROP) > 0.3
    assert pasted.score > 0.8


def test_blank_background_never_makes_the_best_crop_pair() -> None:
    """Two unrelated pictures on wide white margins: their white corners match perfectly,
    and the pair view highlighted them as the best regions (cosine 0.80 with SSCD)."""
    from PIL import Image, ImageDraw

    from lib.embedders import create_embedder
    from lib.regions import compare_regions

    def drawing(colour: str, shape: str) -> Image.Image:
        image = Image.new("RGB", (400, 400), "white")
        draw = ImageDraw.Draw(image)
        box = (230, 230, 390, 390)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
        return image

    match = compare_regions(
        create_embedder("sscd-distilled"), drawing("red", "circle"), drawing("blue", "square")
    )
    for box, image in ((match.query_box, drawing("red", "circle")),
                       (match.match_box, drawing("blue", "square"))):  # fmt: skip
        crop = image.crop(box).convert("L")
        assert min(crop.getextrema()) < 250, f"the best pair includes a blank crop {box}"
