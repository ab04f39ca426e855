"""Seeded synthetic images for tests: distinct scenes and planted copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A distinct RGB picture: a coloured background with random shapes (same seed, same image)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, 3)
    grad = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, 3)
    arr = np.clip(base + grad + np.zeros((h, 1, 1)), 0, 255).astype(np.uint8)
    image = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return image


def write_scenes(folder: Path, seeds: range | list[int], prefix: str = "img") -> list[Path]:
    """Save scene(seed) as PNG for each seed; returns the paths in seed order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"{prefix}_{seed:04d}.png"
        scene(seed).save(path)
        paths.append(path)
    return paths


def family_member(seed: int, variant: int) -> Image.Image:
    """scene(seed) lightly edited (variant 0 is the scene itself): brightness steps of 5,
    and from variant 8 on also a 4% crop. Every variant is a near-duplicate of the scene."""
    image = scene(seed)
    delta = (variant % 8) * 5 * (1 if variant % 2 else -1)
    if delta:
        image = Image.eval(image, lambda v: max(0, min(255, v + delta)))
    if variant >= 8:
        image = image.crop((6, 4, 154, 116)).resize((160, 120))
    return image


def write_families(
    folder: Path, seeds: range | list[int], variants: int = 16, words: tuple[str, ...] = ()
) -> list[Path]:
    """For each seed, ``variants`` near-duplicates (``fam_0003_v07.png``): tight clusters.
    With ``words``, each image gets the sidecar caption ``"<word> scene <seed> v<j>"``
    where word is ``words[seed % len(words)]``. Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        for j in range(variants):
            path = folder / f"fam_{seed:04d}_v{j:02d}.png"
            family_member(seed, j).save(path)
            if words:
                word = words[seed % len(words)]
                path.with_suffix(".txt").write_text(f"{word} scene {seed} v{j:02d}\n")
            paths.append(path)
    return paths
