"""Local features with geometric verification: a picture pasted into another scene, or
mirrored, is found with the box it occupies; unrelated pictures are not."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lib.verdict.local_features import local_features, verify_pair, verify_shortlist


def scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A seeded picture with many corners (small polygons of many colours on a noisy
    ground): the kind of detail local features need, as in a photograph or a drawing."""
    rng = np.random.default_rng(seed)
    w, h = size
    ground = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(ground).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(70):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        points = [(x + int(dx), y + int(dy)) for dx, dy in rng.integers(-14, 15, (4, 2))]
        draw.polygon(points, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def _pasted(
    source: Image.Image, into: Image.Image, scale: float, at: tuple[int, int]
) -> Image.Image:
    out = into.copy()
    small = source.resize((round(source.width * scale), round(source.height * scale)))
    out.paste(small, at)
    return out


def test_a_pasted_picture_is_verified_with_the_part_it_occupies() -> None:
    source, scene_b = scene(3, (320, 240)), scene(10, (320, 240))
    query = _pasted(source, scene_b, 0.5, (150, 100))  # right half, lower part
    q = local_features(query, with_mirror=True)
    match = verify_pair(q, local_features(source))
    others = [verify_pair(q, local_features(scene(s, (320, 240)))).inliers for s in (4, 5, 6, 7)]
    assert match.inliers >= 3 * max(max(others), 4), (match.inliers, others)
    assert match.query_box is not None and match.match_box is not None
    left, top, right, bottom = match.query_box
    assert left >= 150 / 320 - 0.05 and top >= 100 / 240 - 0.05  # inside the pasted part
    assert right <= (150 + 160) / 320 + 0.05 and bottom <= (100 + 120) / 240 + 0.05
    m_left, m_top, m_right, m_bottom = match.match_box
    assert m_right - m_left > 0.4 and m_bottom - m_top > 0.4  # much of the training picture
    assert not match.mirrored


def test_a_mirrored_copy_is_verified_through_the_mirrored_query() -> None:
    source = scene(5, (320, 240))
    query = source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    plain = verify_pair(local_features(query), local_features(source))
    both = verify_pair(local_features(query, with_mirror=True), local_features(source))
    assert both.mirrored and both.inliers > 2 * max(plain.inliers, 4)


def test_unreadable_or_refused_training_pictures_count_as_no_match() -> None:
    source = scene(6, (200, 150))
    loaded: list[str] = []

    def load(path: str) -> Image.Image | None:
        loaded.append(path)
        return source if path == "ok" else None

    cache: dict = {}
    results = verify_shortlist(source, ["ok", "refused", "ok"], load, cache)
    assert results[0].inliers > 20 and results[1].inliers == 0
    assert results[2] == results[0] and loaded == ["ok", "refused"]  # cached
    blank = local_features(Image.new("RGB", (64, 64), "white"))
    assert len(blank) == 0 and verify_pair(blank, local_features(source)).inliers == 0
