"""A labelled demo batch of stand-in "generations" for trying the scan without a model:
edited copies of training images mixed with unseen images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lib.allowed_paths import index_roots, load_inside
from lib.bench.edits import EDITS
from lib.images import ImageLoadError, list_image_files, load_image
from lib.index import ReplicaIndex


def make_demo_batch(
    index: ReplicaIndex,
    out_dir: str | os.PathLike[str],
    unseen_dir: str | os.PathLike[str] | None,
    n_copies: int = 20,
    n_unseen: int = 40,
    seed: int = 0,
) -> Path:
    """Write ``n_copies`` edited training images (``copy_*.png``) and up to ``n_unseen``
    images from ``unseen_dir`` (``unseen_*.png``) into ``out_dir``; returns the folder.
    A training file outside the folders the index may read
    (:func:`lib.allowed_paths.index_roots`) is left out, as an unreadable one is."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    edits = ["crop", "jpeg", "colour", "text", "flip", "downscale"]
    rows = rng.choice(index.count, size=min(n_copies, index.count), replace=False)
    roots = index_roots(index)
    for j, row in enumerate(rows):
        edit = edits[j % len(edits)]
        try:
            image = load_inside(index.file_path(int(row)), roots).image
        except ImageLoadError:
            continue
        EDITS[edit](image, rng).save(out / f"copy_{j:03d}_{edit}_of_{int(row)}.png")
    if unseen_dir is not None and Path(unseen_dir).is_dir():
        unseen = list_image_files(unseen_dir)
        picks = rng.choice(len(unseen), size=min(n_unseen, len(unseen)), replace=False)
        for j, k in enumerate(picks):
            try:
                load_image(unseen[int(k)]).image.save(out / f"unseen_{j:03d}.png")
            except ImageLoadError:
                continue
    return out
