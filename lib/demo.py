"""A labelled demo batch of stand-in "generations" for trying the scan without a model:
edited copies of training images mixed with unseen images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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
    images from ``unseen_dir`` (``unseen_*.png``) into ``out_dir``; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    edits = ["crop", "jpeg", "colour", "text", "flip", "downscale"]
    rows = rng.choice(index.count, size=min(n_copies, index.count), replace=False)
    for j, row in enumerate(rows):
        edit = edits[j % len(edits)]
        try:
            image = load_image(str(index.metadata["path"].iloc[int(row)])).image
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
