"""A PNG sheet of the most-copied generations, each beside its top training match."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from lib.images import ImageLoadError, load_image
from lib.search import QueryResult

CELL = 96
"""Pixels per image in the sheet (small generations are scaled up with nearest neighbour)."""
LABEL = 28
"""Pixels of text under each pair."""


def save_gallery(results: list[QueryResult], path: Path, top: int = 8, columns: int = 4) -> int:
    """Write the ``top`` generations with the highest calibrated score beside their matches.

    Each tile: generation | training match, with raw and calibrated similarity and the
    match's file name below. Returns the number of pairs drawn (0 writes a blank note).
    """
    ranked = sorted(
        (r for r in results if r.error is None and r.top is not None),
        key=lambda r: r.score,
        reverse=True,
    )[:top]
    rows = max(1, -(-len(ranked) // columns))
    tile_w, tile_h = 2 * CELL + 8, CELL + LABEL
    sheet = Image.new("RGB", (columns * (tile_w + 12), rows * (tile_h + 12)), "white")
    draw = ImageDraw.Draw(sheet)
    if not ranked:
        draw.text((8, 8), "no readable generations", fill="black")
    for i, result in enumerate(ranked):
        x = (i % columns) * (tile_w + 12) + 6
        y = (i // columns) * (tile_h + 12) + 6
        match = result.matches[0]
        for offset, source in ((0, result.query), (CELL + 8, match.path)):
            sheet.paste(_cell(source), (x + offset, y))
            draw.rectangle((x + offset - 1, y - 1, x + offset + CELL, y + CELL), outline="grey")
        draw.text(
            (x, y + CELL + 2),
            f"cal {result.score:+.2f}  raw {match.score:.2f}",
            fill="black",
        )
        draw.text((x, y + CELL + 14), Path(match.path).stem[:30], fill=(90, 90, 90))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return len(ranked)


def _cell(path: str) -> Image.Image:
    try:
        image = load_image(path).image
    except ImageLoadError:
        return Image.new("RGB", (CELL, CELL), (255, 220, 220))
    resample = Image.Resampling.NEAREST if max(image.size) < CELL else Image.Resampling.LANCZOS
    return image.resize((CELL, CELL), resample)
