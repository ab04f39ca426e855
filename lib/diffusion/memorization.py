"""Memorized generations found without the training set.

An artist usually cannot search a commercial model's training data. Carlini et al.
("Extracting Training Data from Diffusion Models", USENIX Security 2023, section 4) flag a
generation as memorized when many independent generations are near-identical to it: a
model that reproduces a training image does so from many seeds, while new pictures differ
from one seed to the next. Here, for an unconditional model:

1. ``N`` images are sampled with seeds ``seed .. seed + N - 1``;
2. two generations are *near-identical* when their SSCD cosine reaches
   ``cosine_threshold`` **and** their tiled pixel distance is at most ``tile_threshold``
   (:func:`tiled_distance`: the pictures cut into 4 x 4 tiles, the largest root-mean-square
   difference of any tile, 0..1, as the paper's tiled l2 distance);
3. a generation is flagged when at least ``min_group - 1`` others are near-identical to it
   (:data:`MIN_GROUP`); the groups are the connected components of the flagged
   generations' links.

**Calibration.** Both thresholds come from real images of the same domain that are
different works (a held-out folder, brought to the model's size as its training images
were): the cosine threshold is the 99th percentile of their pairwise cosines, the tile
threshold the 1st percentile of their pairwise tiled distances (:data:`PAIR_QUANTILE`). The measured
false-alarm rate is the share of those held-out pairs that meet both, with its 95% Wilson
interval: how often two unrelated pictures of this kind pass for near-identical.

Where the training set is known (the bundled models), :func:`agreement` measures how well
this training-free flag agrees with the training-set verdict (a generation called ``copy``
against the model's own training images): precision and recall.

Example:
    >>> report = check_memorization(images, embedder, heldout_images)  # doctest: +SKIP
    >>> [len(g) for g in report.groups]  # doctest: +SKIP
    [7, 4]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lib.embedders import Embedder
from lib.progress import ProgressCallback
from lib.progress import report as report_progress

TILES = 4
"""Tiles per side for :func:`tiled_distance` (the paper: 16 tiles)."""
PAIR_QUANTILE = 0.99
"""Held-out pairs at or above the cosine threshold (and at or below the tile threshold)
are this rare, each on its own; together rarer (measured, :func:`calibrate`). Measured on
the bundled models (64 samples each, README): at 0.99 the flag agrees with the
training-set verdict at precision 1.0 and recall 0.32 for openmoji-100, and flags none of
openmoji-1000's; at 0.999 it flagged nothing (held-out skin-tone siblings reach cosine 0.98
and set the threshold)."""
MIN_GROUP = 2
"""A generation is flagged when at least this many generations (itself included) are
near-identical to each other around it: one twin among 64 samples. The paper used cliques
of 10 among 500 generations of one prompt; a model that copies 100 images at random
produces few twins of any one of them in 64 samples."""
TILE_SIDE = 32
"""Pictures are compared at this side (the bundled models' size)."""


@dataclass
class MemorizationReport:
    """What :func:`check_memorization` found.

    ``flagged``: per generation, whether it is memorized; ``groups``: lists of generation
    indices near-identical to each other, largest first; ``cosine_threshold``,
    ``tile_threshold``: the calibrated criterion; ``false_alarm_rate``: the share of
    held-out pairs (different real works) that meet it, with ``false_alarm_interval`` (95%
    Wilson) over ``heldout_pairs`` pairs.
    """

    n: int
    flagged: list[bool]
    groups: list[list[int]]
    cosine_threshold: float
    tile_threshold: float
    false_alarm_rate: float
    false_alarm_interval: tuple[float, float]
    heldout_pairs: int
    min_group: int = MIN_GROUP
    agreement: dict[str, Any] = field(default_factory=dict)

    @property
    def share_flagged(self) -> float:
        return sum(self.flagged) / self.n if self.n else 0.0

    def sentence(self) -> str:
        """The finding in words, with the measured false-alarm rate."""
        low, high = self.false_alarm_interval
        return (
            f"{sum(self.flagged)} of {self.n} generations ({self.share_flagged:.0%}) have at "
            f"least {self.min_group - 1} near-identical twin(s) among the others, in "
            f"{len(self.groups)} group(s): the sign of a memorized training image, found "
            f"without the training set. Near-identical means a copy-detection cosine of "
            f"{self.cosine_threshold:.3f} or more and a tiled pixel distance of "
            f"{self.tile_threshold:.3f} or less; {self.false_alarm_rate:.2%} of pairs of "
            f"different real pictures of this kind pass for near-identical (95% interval "
            f"{low:.2%}-{high:.2%}, {self.heldout_pairs:,} pairs)."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "flagged": self.flagged,
            "share_flagged": round(self.share_flagged, 4),
            "groups": self.groups,
            "cosine_threshold": round(self.cosine_threshold, 6),
            "tile_threshold": round(self.tile_threshold, 6),
            "false_alarm_rate": round(self.false_alarm_rate, 6),
            "false_alarm_interval": [round(x, 6) for x in self.false_alarm_interval],
            "heldout_pairs": self.heldout_pairs,
            "min_group": self.min_group,
            "agreement": self.agreement,
            "sentence": self.sentence(),
        }


def pixels(images: Sequence[Image.Image], side: int = TILE_SIDE) -> np.ndarray:
    """(n, side, side, 3) float32 in 0..1: the pictures squashed to ``side``."""
    return np.stack(
        [
            np.asarray(
                im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), np.float32
            )
            / 255.0
            for im in images
        ]
    )


def tiled_distance(a: np.ndarray, b: np.ndarray, tiles: int = TILES) -> np.ndarray:
    """Tiled pixel distance of every pair of ``a`` (n, s, s, 3) and ``b`` (m, s, s, 3), as
    in Carlini et al. 2023: the largest root-mean-square difference (0..1) of any of the
    ``tiles`` x ``tiles`` tiles. Returns (n, m) float32."""
    n, side = len(a), a.shape[1]
    t = side // tiles
    cut = tiles * t

    def per_tile(x: np.ndarray) -> np.ndarray:
        x = x[:, :cut, :cut]
        x = x.reshape(len(x), tiles, t, tiles, t, 3).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(len(x), tiles * tiles, t * t * 3)

    ta, tb = per_tile(a), per_tile(b)
    out = np.zeros((n, len(b)), np.float32)
    for k in range(tiles * tiles):
        d = ta[:, k][:, None, :] - tb[:, k][None, :, :]
        out = np.maximum(out, np.sqrt((d * d).mean(axis=2)))
    return out


def calibrate(
    heldout: Sequence[Image.Image], embedder: Embedder, quantile: float = PAIR_QUANTILE
) -> tuple[float, float, float, tuple[float, float], int]:
    """Thresholds from pairs of different real pictures: (cosine threshold, tile
    threshold, false-alarm rate of both, its 95% Wilson interval, pairs).

    Raises:
        ValueError: fewer than 20 held-out pictures (too few pairs to measure 0.1%).
    """
    if len(heldout) < 20:
        raise ValueError(
            f"need at least 20 held-out pictures to calibrate the memorization check, "
            f"got {len(heldout)}"
        )
    vectors = embedder.embed_images(list(heldout))
    cos = vectors @ vectors.T
    dist = tiled_distance(pixels(heldout), pixels(heldout))
    upper = np.triu_indices(len(heldout), k=1)
    cos_pairs, dist_pairs = cos[upper], dist[upper]
    cosine_threshold = float(np.quantile(cos_pairs, quantile))
    tile_threshold = float(np.quantile(dist_pairs, 1.0 - quantile))
    hits = int(np.sum((cos_pairs >= cosine_threshold) & (dist_pairs <= tile_threshold)))
    from scipy.stats import binomtest

    ci = binomtest(hits, len(cos_pairs)).proportion_ci(method="wilson")
    rate = hits / len(cos_pairs)
    return cosine_threshold, tile_threshold, rate, (float(ci.low), float(ci.high)), len(cos_pairs)


def check_memorization(
    generations: Sequence[Image.Image],
    embedder: Embedder,
    heldout: Sequence[Image.Image],
    *,
    min_group: int = MIN_GROUP,
    quantile: float = PAIR_QUANTILE,
) -> MemorizationReport:
    """Flag the generations that many others are near-identical to (module docstring),
    with thresholds calibrated on ``heldout`` (different real works of the same kind, at
    the generations' size).

    Raises:
        ValueError: fewer than 2 generations, ``min_group`` below 2, or too few held-out
            pictures (:func:`calibrate`).
    """
    if len(generations) < 2:
        raise ValueError(f"need at least 2 generations, got {len(generations)}")
    if min_group < 2:
        raise ValueError(f"min_group must be at least 2, got {min_group}")
    cosine_threshold, tile_threshold, rate, interval, pairs = calibrate(heldout, embedder, quantile)
    vectors = embedder.embed_images(list(generations))
    px = pixels(generations)
    near = (vectors @ vectors.T >= cosine_threshold) & (tiled_distance(px, px) <= tile_threshold)
    np.fill_diagonal(near, False)
    flagged = near.sum(axis=1) >= min_group - 1
    groups = _components(near, flagged)
    return MemorizationReport(
        n=len(generations),
        flagged=[bool(f) for f in flagged],
        groups=groups,
        cosine_threshold=cosine_threshold,
        tile_threshold=tile_threshold,
        false_alarm_rate=rate,
        false_alarm_interval=interval,
        heldout_pairs=pairs,
        min_group=min_group,
    )


def _components(near: np.ndarray, flagged: np.ndarray) -> list[list[int]]:
    """Connected components of ``near`` among the flagged generations, largest first."""
    seen: set[int] = set()
    groups = []
    for start in np.flatnonzero(flagged).tolist():
        if start in seen:
            continue
        group, todo = [], [start]
        seen.add(start)
        while todo:
            i = todo.pop()
            group.append(i)
            for j in np.flatnonzero(near[i] & flagged).tolist():
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        groups.append(sorted(group))
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def agreement(flagged: Sequence[bool], verdicts: Sequence[str]) -> dict[str, Any]:
    """How the training-free flag agrees with the training-set verdict (``copy`` against
    the model's own training images), generation by generation: counts, precision (of
    the flagged, the share that are copies) and recall (of the copies, the share flagged);
    None where undefined."""
    flags = np.asarray(flagged, bool)
    copies = np.asarray([v == "copy" for v in verdicts], bool)
    if len(flags) != len(copies):
        raise ValueError(f"{len(flags)} flags but {len(copies)} verdicts")
    tp = int(np.sum(flags & copies))
    fp = int(np.sum(flags & ~copies))
    fn = int(np.sum(~flags & copies))
    return {
        "flagged": int(flags.sum()),
        "copies": int(copies.sum()),
        "both": tp,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
    }


def check_model(
    model_dir: str | os.PathLike[str],
    n: int,
    *,
    embedder: Embedder,
    heldout_dir: str | os.PathLike[str],
    steps: int = 50,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> tuple[MemorizationReport, list[Image.Image]]:
    """:func:`check_memorization` of ``n`` samples of a bundled model (seeds ``seed`` ..
    ``seed + n - 1``), calibrated on ``heldout_dir`` brought to the model's size; when the
    model's training images are here, with :attr:`MemorizationReport.agreement` against
    the training-set verdict (its study index, built on first use). Returns the report and
    the generations.

    Raises:
        FileNotFoundError: not a model folder, or no held-out image. ValueError: as
            :func:`check_memorization`.
    """
    from lib.diffusion.export import is_model, read_manifest
    from lib.diffusion.pipelines import BundledModel
    from lib.diffusion.sample import sample
    from lib.diffusion.study import reference_at_size, training_subset_index
    from lib.images import list_image_files, load_image

    if not is_model(model_dir):
        raise FileNotFoundError(f"{model_dir} is not a Replica model folder (data/models/NAME)")
    manifest = read_manifest(model_dir)
    generations = sample(model_dir, n, steps=steps, seed=seed, progress=progress)
    report_progress(progress, 0, 0, "calibrating on the held-out pictures")
    heldout_at_size = reference_at_size(heldout_dir, manifest.image_size)
    heldout = [load_image(p).image for p in list_image_files(heldout_at_size)]
    report = check_memorization(generations, embedder, heldout)
    train_files = manifest.train_paths()
    if train_files and all(p.is_file() for p in train_files):
        from lib.search import search_images

        report_progress(progress, 0, 0, "searching the model's training images")
        model = BundledModel(name=manifest.name, path=Path(model_dir), manifest=manifest)
        index = training_subset_index(model, embedder)
        labelled = [(str(i), g) for i, g in enumerate(generations)]
        results = search_images(index, labelled, embedder=embedder, top_k=1)
        report.agreement = agreement(report.flagged, [r.verdict for r in results])
    return report, generations
