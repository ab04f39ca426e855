"""Training data for the small diffusion models: nested OpenMoji subsets, images as arrays,
and a data order that is a pure function of (seed, step), so that a resumed run sees
exactly the batches an uninterrupted run would have seen."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from lib.images import ImageLoadError, SkippedFile, list_image_files, load_image

RESAMPLE = Image.Resampling.BOX
"""Downscaling filter from the source images to the training size (area averaging)."""


def prepare_image(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop an RGB image to a square and resize it to ``size`` x ``size`` pixels.

    The one transform shared by training and the study, so that generations and the
    training images they are compared with have the same resolution and filter.
    """
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    if image.size == (size, size):
        return image.convert("RGB")
    return image.convert("RGB").resize((size, size), RESAMPLE, box=box)


def load_images(files: list[Path], size: int) -> tuple[np.ndarray, list[Path], list[SkippedFile]]:
    """Load and prepare image files.

    Returns:
        (n, size, size, 3) uint8 RGB, the files kept (in input order) and the files
        skipped with their reasons.
    """
    arrays: list[np.ndarray] = []
    kept: list[Path] = []
    skipped: list[SkippedFile] = []
    for path in files:
        try:
            loaded = load_image(path)
        except ImageLoadError as exc:
            skipped.append(SkippedFile(str(path), exc.reason))
            continue
        arrays.append(np.asarray(prepare_image(loaded.image, size), dtype=np.uint8))
        kept.append(path)
    if not arrays:
        return np.zeros((0, size, size, 3), np.uint8), kept, skipped
    return np.stack(arrays), kept, skipped


def distinct_files(files: list[Path]) -> list[Path]:
    """The files in order, without byte-identical repeats (the first one is kept)."""
    seen: set[str] = set()
    out = []
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(path)
    return out


def openmoji_subset(train_dir: str | os.PathLike[str], n: int, seed: int = 0) -> list[Path]:
    """The first ``n`` distinct training images of one seeded permutation of ``train_dir``.

    Subsets with the same seed are nested: the 100-image subset is inside the 1000-image
    one. Byte-identical renders (OpenMoji draws some emoji identically under two codes)
    count once.

    Raises:
        FileNotFoundError: the folder is missing. ValueError: ``n`` is not in 1..available.
    """
    files = distinct_files(list_image_files(train_dir, recursive=False))
    if not 1 <= n <= len(files):
        raise ValueError(
            f"subset size must be between 1 and {len(files)} (distinct images in {train_dir}), "
            f"got {n}"
        )
    order = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in order[:n]]


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Rows of the images in the batch of training ``step`` (0-based): (batch_size,) int64.

    The data stream is one seeded permutation of the ``n`` images per epoch, read in
    order; a batch may span two epochs. A pure function of its arguments: a resumed run
    reproduces the uninterrupted run's batches without any stored iterator state.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    start = step * batch_size
    out = np.empty(batch_size, np.int64)
    filled = 0
    while filled < batch_size:
        epoch, offset = divmod(start + filled, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(batch_size - filled, n - offset)
        out[filled : filled + take] = perm[offset : offset + take]
        filled += take
    return out


FASHION_SPLIT_FILES = {"train": 60_000, "test": 10_000}
"""Images per Fashion-MNIST split (Debian package ``dataset-fashion-mnist``)."""


def write_fashion_mnist(folder: str | os.PathLike[str], split: str = "train") -> list[Path]:
    """Write one Fashion-MNIST split as grey 28 x 28 PNGs named ``NNNNN-CLASS.png`` (row
    number in the split, class name) into ``folder``, once: a complete folder is reused.
    Files are written under temporary names (one per process) and renamed, so a killed
    export never leaves a truncated PNG that a later run would read, and two exports at
    once (two trainings started together) do not take each other's files.

    Returns the files in split order.

    Raises:
        FileNotFoundError: the Debian package is not installed. ValueError: bad split.

    Example:
        >>> files = write_fashion_mnist("data/fashion-mnist/train")  # doctest: +SKIP
    """
    from lib.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

    if split not in FASHION_SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(FASHION_SPLIT_FILES)}, got {split!r}")
    out = Path(folder)
    existing = sorted(out.glob("*.png")) if out.is_dir() else []
    if len(existing) == FASHION_SPLIT_FILES[split]:
        return existing
    images, labels = load_fashion_mnist(split)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        name = FASHION_MNIST_CLASSES[int(label)].lower().replace("/", "-").replace(" ", "-")
        path = out / f"{i:05d}-{name}.png"
        if not path.is_file():  # two exports at once (two trainings) each rename their own
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            Image.fromarray(pixels, mode="L").save(tmp, format="PNG")
            os.replace(tmp, path)
        files.append(path)
    return files


def fashion_mnist_subset(
    folder: str | os.PathLike[str], n: int, seed: int = 0, split: str = "train"
) -> list[Path]:
    """The first ``n`` images of one seeded permutation of a Fashion-MNIST split, written
    to ``folder`` as PNGs (:func:`write_fashion_mnist`). Subsets with one seed are nested:
    the 300-image subset is inside the 3,000-image one, as the paper's Celeb-A subsets.

    Raises:
        ValueError: ``n`` is not in 1..size of the split. FileNotFoundError: as above.

    Example:
        >>> files = fashion_mnist_subset("data/fashion-mnist/train", 300)  # doctest: +SKIP
    """
    total = FASHION_SPLIT_FILES.get(split, 0)
    if not 1 <= n <= total:
        raise ValueError(f"subset size must be between 1 and {total} for {split!r}, got {n}")
    files = write_fashion_mnist(folder, split)
    order = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in order[:n]]
