"""Seeded photo-like JPEGs for the benchmarks: gradients, shapes, texture and noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# (long / short) aspect ratios of common photos; a fifth of the images get a random one.
COMMON_ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """An RGB image whose JPEG size and decode cost resemble a photo's."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.empty((height, width, 3), np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / max(width, height)
    for c in range(3):
        lo, hi = rng.uniform(0, 255, 2)
        base[..., c] = lo + (hi - lo) * ramp
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 24))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = (x0, y0, x0 + w, y0 + h)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    # fine texture: low-amplitude noise at two scales, like sensor noise and foliage
    arr = np.asarray(image, np.float32)
    coarse = rng.normal(0, 12, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    arr += np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:height, :width]
    arr += rng.normal(0, 6, arr.shape).astype(np.float32)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): long side 640..1600 px, common or random aspect, either orientation."""
    long_side = int(rng.integers(640, 1601))
    aspect = float(rng.choice(COMMON_ASPECTS)) if rng.random() < 0.8 else rng.uniform(1.0, 2.5)
    short_side = round(long_side / aspect)
    return (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)


def write_photos(folder: Path, n: int, seed: int = 0, quality: int = 90) -> list[Path]:
    """Write ``n`` JPEGs (quality ``quality``) into ``folder``; same seed, same files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        width, height = random_size(rng)
        path = folder / f"photo_{i:05d}.jpg"
        photo_like(rng, width, height).save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def embedding_like(
    n: int,
    dim: int = 512,
    *,
    rank: int = 48,
    clusters: int = 500,
    spread: float = 0.9,
    noise: float = 0.05,
    seed: int = 0,
    shard_seed: int | None = None,
) -> np.ndarray:
    """(n, dim) float32 L2-normalised vectors that look like image embeddings: a mixture of
    ``clusters`` Gaussian clusters (uneven sizes) in a random ``rank``-dimensional subspace,
    plus a little isotropic noise. With the defaults, at 20k vectors the cosine to the
    nearest other vector has median 0.68 and 99th percentile 0.79 (SSCD on photos: similar);
    unrelated vectors rarely reach 0.85. ``seed`` fixes the mixture; ``shard_seed`` (when
    given) draws another sample of the same mixture, so that a large set can be made
    shard by shard."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    centres = rng.standard_normal((clusters, rank)).astype(np.float32)
    weights = rng.dirichlet(np.full(clusters, 2.0))
    if shard_seed is not None:
        rng = np.random.default_rng([seed, shard_seed])
    assign = rng.choice(clusters, size=n, p=weights)
    out = np.empty((n, dim), np.float32)
    scale = noise * 6 * np.sqrt(rank / dim)
    for start in range(0, n, 65_536):
        part = assign[start : start + 65_536]
        z = centres[part] + spread * rng.standard_normal((len(part), rank), dtype=np.float32)
        x = z @ basis.T.astype(np.float32)
        x += scale * rng.standard_normal((len(part), dim), dtype=np.float32)
        out[start : start + len(part)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def plant_near_duplicates(
    vectors: np.ndarray, n_pairs: int, low: float = 0.90, high: float = 0.99, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``vectors`` with ``n_pairs`` near-duplicates appended, rows shuffled: each copies a
    distinct original row at a cosine drawn uniformly from ``low``..``high`` (exactly: the
    original rotated towards a random orthogonal direction). Returns the (n + n_pairs, dim)
    float32 vectors and the (n_pairs, 2) int64 planted row pairs (smaller row first)."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    sources = rng.choice(n, size=n_pairs, replace=False)
    base = vectors[sources]
    direction = rng.standard_normal(base.shape).astype(np.float32)
    direction -= (direction * base).sum(axis=1, keepdims=True) * base
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    cos = rng.uniform(low, high, size=(n_pairs, 1)).astype(np.float32)
    copies = cos * base + np.sqrt(1 - cos**2) * direction
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    allv = np.concatenate([vectors, copies])
    order = rng.permutation(len(allv))
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    pairs = np.stack([where[sources], where[n + np.arange(n_pairs)]], axis=1)
    return allv[order], np.sort(pairs, axis=1).astype(np.int64)
