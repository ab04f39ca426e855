"""Shared by the evidence tests: a small index with a planted copy, and PDF pages as PNG."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from PIL import Image

from lib.index import build_index
from tests.synthetic import scene, write_scenes

PDFTOPPM = shutil.which("pdftoppm")


def small_index(root: Path, seeds: range = range(24), name: str = "idx") -> tuple[Path, Path]:
    """An sscd-distilled index of synthetic scenes, ``root/name``, and a query that copies
    scene 5 (turned 3 degrees) when the seeds hold it: (index folder, query file)."""
    write_scenes(root / "train", seeds)
    index = build_index(root / "train", root / name, embedder="sscd-distilled").index.path
    query = root / "queries" / "my_generation.png"
    query.parent.mkdir(parents=True, exist_ok=True)
    scene(5).rotate(3, fillcolor=(255, 255, 255)).save(query)
    return index, query


def render_pages(pdf: Path, out_dir: Path, dpi: int = 60) -> list[Path]:
    """Every page of ``pdf`` rendered to PNG by Debian's ``pdftoppm`` (poppler-utils)."""
    assert PDFTOPPM, "pdftoppm (Debian poppler-utils) is needed"
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [PDFTOPPM, "-r", str(dpi), "-png", str(pdf), str(out_dir / "page")],
        check=True,
        timeout=120,
    )
    return sorted(out_dir.glob("page*.png"))


def colourful_share(png: Path) -> float:
    """Share (0..1) of a page's pixels that are strongly coloured: pictures, not text."""
    hsv = Image.open(png).convert("HSV")
    saturation = hsv.getchannel("S").point(lambda s: 255 if s > 80 else 0)
    histogram = saturation.histogram()
    return histogram[255] / max(1, sum(histogram))
