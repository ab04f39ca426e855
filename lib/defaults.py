"""The embedded default data: OpenMoji rendered and split, its SSCD index and the index's
map (so that the Map page opens on a picture, not a form).

``make setup`` calls :func:`prepare_default_data`; the second call returns at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib.datasets import prepare_openmoji
from lib.index import ReplicaIndex, build_index, calibrate_index, is_index, open_index
from lib.progress import ProgressCallback
from lib.verdict.sensitivity import learn_after_write, learn_sensitivity, needs_measuring

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
INDEX_ROOT = DATA_DIR / "indexes"
OPENMOJI_DIR = DATA_DIR / "openmoji"
DEFAULT_INDEX = INDEX_ROOT / "openmoji-sscd"


def prepare_default_data(progress: ProgressCallback | None = None, rebuild: bool = False) -> str:
    """Render OpenMoji (train/held-out split), build the default SSCD index over the training
    part and its map (UMAP), unless they are already there (an index calibrated by an older
    method is recalibrated and stored). Returns a one-line summary."""
    split = prepare_openmoji(OPENMOJI_DIR, progress=progress)
    if is_index(DEFAULT_INDEX) and not rebuild:
        index = open_index(DEFAULT_INDEX)
        if index.count + len(index.manifest.skipped) == split.n_train:
            if index.recalibrated:  # built by an older version: store today's calibration
                index = calibrate_index(DEFAULT_INDEX, progress=progress)
            if needs_measuring(index.calibration, index.count):
                index = learn_sensitivity(DEFAULT_INDEX, progress=progress)
            _prepare_map(index, progress)
            return (
                f"default data ready: {index.count} training emoji indexed in "
                f"{DEFAULT_INDEX}, {split.n_heldout} held out in {split.heldout_dir}"
            )
        log.warning(
            "default index holds %d images, expected %d: rebuilding", index.count, split.n_train
        )
    report = build_index(
        split.train_dir, DEFAULT_INDEX, embedder="sscd", source="openmoji", progress=progress
    )
    report = learn_after_write(report, progress)
    _prepare_map(report.index, progress)
    return (
        f"default data ready: {report.summary()}; {split.n_heldout} held out in {split.heldout_dir}"
    )


def _prepare_map(index: ReplicaIndex, progress: ProgressCallback | None) -> None:
    """The index's map, computed once and stored beside it (the stored one loads at once)."""
    from lib.projection import project

    project(index, progress=progress)
