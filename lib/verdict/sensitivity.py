"""Measure how many copies of a collection's own images the verdict catches.

When an index is built or recalibrated, :func:`learn_sensitivity` makes copies of a
random sample of its own images with the broad random edit family of
:mod:`lib.verdict.learning` (not the benchmark's fixed edits, :mod:`lib.bench.edits`, so
that the benchmark stays a fair test):

- **edited** copies: the whole image through 1-3 random edits (crop, rotation, colour,
  blur, JPEG, downscaling, mirroring, text, border);
- **pasted** copies: the image scaled to 30-85% of the sides and pasted into another
  indexed image (or onto noise), as an object copied into a new scene.

Each copy is searched by :func:`lib.search.search_images`, the path an uploaded query
takes (embedding, shortlist, background, pixel alignment), and its shortlist is kept as a
:class:`lib.verdict.copy_tests.CopyTest` in the index's calibration. From those, every
verdict states its known error rates at its operating point
(:attr:`lib.calibration.Calibration.measured_sensitivity`).

Cost: about 360 copies for an index of 360 images or more (fewer below), each embedded
once and aligned with its shortlist: about 20-40 s on 2 cores with SSCD.

Example:
    >>> index = learn_sensitivity("data/indexes/openmoji")  # doctest: +SKIP
    >>> index.calibration.measured_sensitivity.error_rates()  # doctest: +SKIP
    'At this setting, about 2 in 100 unrelated images ...'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from lib.allowed_paths import Roots, index_roots, load_inside
from lib.calibration import Calibration
from lib.embedders import Embedder
from lib.images import ImageLoadError
from lib.index import BuildReport, ReplicaIndex, record_copy_tests
from lib.progress import ProgressCallback, report
from lib.search import search_images
from lib.verdict.copy_tests import CopyTest
from lib.verdict.learning import TRAINING_EDITS, training_copy
from lib.verification import SHORTLIST

EDITED_COPIES = 240
"""Edited copies made for an index of at least this many images (one per image below)."""
PASTED_COPIES = 120
"""Pasted copies made for an index of at least twice this many images (half as many as
its images below)."""
MIN_ROWS = 20
"""Below this many images an index is not calibrated, so nothing is measured."""
WORK_SIDE = 512
"""Source images are reduced to this many pixels on their long side before editing (the
embedder sees 288 on the short side; larger only costs time)."""
BATCH = 16
"""Copies searched per call (progress moves after each)."""
PHASE = "measuring the verdict on copies of the collection's own images"

EDITED_FAMILY = tuple(name for name in TRAINING_EDITS if name != "paste")


@dataclass(frozen=True)
class MadeCopy:
    """A self-made copy: its query label, picture, kind (``edited`` or ``pasted``), the
    edits that made it and its source's metadata id."""

    label: str
    image: Image.Image
    kind: str
    edits: list[str]
    source_id: int


def copy_counts(rows: int) -> tuple[int, int]:
    """(edited, pasted) copies made for an index of ``rows`` images ((0, 0) below
    :data:`MIN_ROWS`)."""
    if rows < MIN_ROWS:
        return 0, 0
    return min(EDITED_COPIES, rows), min(PASTED_COPIES, rows // 2)


def measure_copy_tests(
    index: ReplicaIndex,
    *,
    embedder: Embedder | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> list[CopyTest]:
    """Make edited and pasted copies of a random sample of ``index``'s readable images
    (:func:`copy_counts`) and search each as a query; their shortlists, in global order.

    Images outside the index's allowed folders (:func:`lib.allowed_paths.index_roots`)
    or unreadable are passed over; an index whose images cannot be read (one imported
    as vectors only) gets no tests.

    Args:
        embedder: the index's own (made from its manifest when None).
        seed: chooses the images and the edits.
        progress: called with (done, total, :data:`PHASE`).

    Returns:
        Up to ``sum(copy_counts(index.count))`` tests.
    """
    copies = make_copies(index, seed=seed, progress=progress)
    if not copies:
        return []
    model = embedder or index.create_embedder()
    tests: list[CopyTest] = []
    for start in range(0, len(copies), BATCH):
        batch = copies[start : start + BATCH]
        results = search_images(
            index,
            [(c.label, c.image) for c in batch],
            embedder=model,
            top_k=SHORTLIST,
            calibration=index.calibration,
        )
        for made, result in zip(batch, results, strict=True):
            if result.error is None and result.matches:
                tests.append(_test(made, result.matches))
        report(progress, start + len(batch), len(copies), PHASE)
    return tests


def learn_sensitivity(
    index_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> ReplicaIndex:
    """Measure the verdict's sensitivity on the index at ``index_dir``
    (:func:`measure_copy_tests`) and store it in its calibration, under the writer lock.

    Raises:
        lib.index.IndexNotFound: not an index. lib.index.IndexWriteError: the write failed.
        lib.index.IndexLocked: another writer holds the lock and ``wait`` is False.
    """
    return record_copy_tests(
        index_dir,
        lambda index: measure_copy_tests(index, progress=progress),
        progress=progress,
        wait=wait,
        on_wait=on_wait,
    )


def make_copies(
    index: ReplicaIndex, *, seed: int = 0, progress: ProgressCallback | None = None
) -> list[MadeCopy]:
    """The copies :func:`measure_copy_tests` searches: :func:`copy_counts` edited, then
    pasted copies of randomly chosen readable indexed images (chosen and edited by
    ``seed``; the same seed makes the same copies)."""
    edited, pasted = copy_counts(index.count)
    rng = np.random.default_rng(seed)
    roots = index_roots(index)
    paths = index.file_paths()
    ids = index.metadata["id"].astype(int).tolist()
    order = rng.permutation(len(paths))
    wanted = edited + pasted
    copies: list[MadeCopy] = []
    attempts = 0
    while len(copies) < wanted and attempts < 2 * wanted + 50:  # sources reused in turn
        row = int(order[attempts % len(order)])
        attempts += 1
        source = _load(paths[row], roots)
        if source is None:
            continue
        if len(copies) < edited:
            image, edits = training_copy(source, rng, edits=EDITED_FAMILY)
            kind = "edited"
        else:
            other_row = int(rng.integers(len(paths)))
            other = _load(paths[other_row], roots) if other_row != row else None
            image = TRAINING_EDITS["paste"](source, rng, other)
            edits = ["paste"]
            kind = "pasted"
        copies.append(MadeCopy(f"copy-{len(copies):04d}.png", image, kind, edits, ids[row]))
        report(progress, 0, 0, f"{PHASE}: making copy {len(copies)} of {wanted}")
    return copies


def _load(path: str, roots: Roots) -> Image.Image | None:
    try:
        image = load_inside(path, roots, draft_short_side=WORK_SIDE).image
    except ImageLoadError:
        return None
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.LANCZOS)
    return image


def _test(made: MadeCopy, matches: list) -> CopyTest:
    """The copy's shortlist back in global order (highest cosine first: the search may
    have moved an aligned match to the front) and where its source is in it."""
    ordered = sorted(matches, key=lambda m: (-m.score, m.rank))
    source_at = next((i for i, m in enumerate(ordered) if m.id == made.source_id), -1)
    return CopyTest(
        kind=made.kind,
        edits=list(made.edits),
        raw=[round(float(m.score), 5) for m in ordered],
        calibrated=[round(float(m.calibrated), 5) for m in ordered],
        alignment=[None if m.alignment is None else round(float(m.alignment), 5) for m in ordered],
        source_at=source_at,
    )


REMEASURE_GROWTH = 0.1
"""An index is measured again once it has grown or shrunk by this share of the rows its
copy tests were made on (a few added images change the verdict's sensitivity less than
the copies' own sampling noise)."""


def needs_measuring(calibration: Calibration, count: int) -> bool:
    """True when an index of ``count`` rows calibrated by ``calibration`` has no copy
    tests, or has changed by :data:`REMEASURE_GROWTH` or more since they were made
    (False below :data:`MIN_ROWS`, where nothing is measured)."""
    if count < MIN_ROWS:
        return False
    made = calibration.copy_tests_rows
    if not calibration.copy_tests or made <= 0:
        return True
    return abs(count - made) >= REMEASURE_GROWTH * made


def learn_after_write(
    written: BuildReport, progress: ProgressCallback | None = None
) -> BuildReport:
    """``written`` (what a build or add returned) with its index's sensitivity measured
    and stored when :func:`needs_measuring` says so; as it is otherwise."""
    index = written.index
    if not needs_measuring(index.calibration, index.count):
        return written
    return replace(written, index=learn_sensitivity(index.path, progress=progress))
