"""Score calibration: how far above its own neighbourhood does a match stand?

A raw cosine is not comparable across domains: in look-alike collections (clothes on
white, emoji, star fields) unrelated images reach 0.7-0.8, while heavily edited copies
fall to 0.5. Following SSCD's score normalisation, Replica subtracts a *background*
similarity measured on the index itself:

    calibrated(match) = raw(match) - background(query)

where background(query) is the mean similarity of the query to its ``bg_rank``-th to
``bg_rank + bg_width - 1``-th nearest neighbours after the top match, counting only
neighbours that are not near-duplicates of the top match (so that five skin-tone variants
of one emoji in the training set do not hide a copy of one of them). The defaults (the
first two such neighbours) were chosen on look-alike data, Fashion-MNIST and OpenMoji,
against backgrounds at ranks 2-8 and widths 1-8: see the README's calibration table.

Thresholds come from the index's own null distribution: each of a sample of indexed
images is searched against the rest of the index without its *family* (its connected
component among images at cosine ``family_cosine``, 0.85, or more: skin-tone variants,
battery icons at 0-100%, the same object photographed twice), which imitates an unseen,
unrelated image of the same domain. ``copy`` is the ``1 - false_alarm_rate`` quantile of
that null, ``similar`` its 90th percentile, and a query's ``null_percentile`` is the share
of the null sample that scores lower than it. With pixel alignment measured
(:mod:`lib.verification`), the null holds both signals and a copy is called when either
is rarer than the promised rate allows (:meth:`Calibration.evidence`). A raw cosine of
``identical_threshold`` (0.97) or more is a copy in any case. ``family_cosine`` (0.85, of
0.775-0.95 tried) and the neighbour depth were chosen on the verdict benchmark
(``benchmarks/verdicts.py``, ``benchmarks/verdict_nulls.py``, five look-alike domains;
README).

Calibration version 2 (this one) removes the family from the null and looks up to
:data:`NEIGHBOURS` neighbours deep for the background, so that a top match with dozens of
near-duplicates (25 skin-tone pairs of one emoji) still gets a background from beyond
them. Indexes calibrated by version 1 are refitted when opened (:func:`needs_refit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lib.progress import ProgressCallback
from lib.verdict.copy_tests import CopyTest, Sensitivity, summarise

NEIGHBOURS = 64
"""Neighbours fetched per query to estimate the background (plus top-k)."""
CALIBRATION_VERSION = 2
"""Version of the null and background method; older stored calibrations are refitted."""
NULL_SAMPLE = 2000
"""Indexed images that stand in for unrelated queries in the null."""
ALIGNMENT_SAMPLE = 1000
"""Of those, how many are also aligned with their shortlists (decoding their files)."""
FAMILY_MAX = 512
"""A family stops growing at this many images."""


@dataclass(frozen=True)
class Calibration:
    """Parameters and thresholds of the calibrated score, stored in the manifest.

    Thresholds are in calibrated units (cosine minus background cosine).
    """

    bg_rank: int = 1
    bg_width: int = 2
    dup_cosine: float = 0.9
    family_cosine: float = 0.85
    copy_threshold: float = 0.12
    similar_threshold: float = 0.06
    identical_threshold: float = 0.97
    false_alarm_rate: float = 0.02
    null_sample: int = 0
    null_quantiles: dict[str, float] = field(default_factory=dict)
    raw_quantiles: dict[str, float] = field(default_factory=dict)
    null_scores: list[float] = field(default_factory=list)
    """The null sample's calibrated scores, sorted ascending (empty: not calibrated)."""
    alignment_null: list[float] = field(default_factory=list)
    """Alignments (:mod:`lib.verification`) of a part of the null sample with their
    shortlists (best per image), sorted; empty when the files could not be read."""
    evidence_null: list[float] = field(default_factory=list)
    """Evidence (0..1, :meth:`evidence`) of the same images, sorted."""
    alignment_threshold: float = 2.0
    """A copy when the best alignment reaches this (2.0: never; set with the null)."""
    version: int = 1
    """:data:`CALIBRATION_VERSION` of the method that fitted it (1 for the first)."""
    fitted_rows: int = 0
    """Rows the index held when this was fitted (0: not recorded, calibrations stored
    before this field existed); :func:`is_stale` compares it with the index's count."""
    copy_tests: list[CopyTest] = field(default_factory=list)
    """Self-made copies of the indexed images, searched as queries are when the index was
    learned (:mod:`lib.verdict.sensitivity`); empty when not measured. They give
    :attr:`measured_sensitivity` at any operating point. A refit keeps them."""
    copy_tests_rows: int = 0
    """Rows the index held when :attr:`copy_tests` were made."""

    @cached_property
    def measured_sensitivity(self) -> Sensitivity | None:
        """Copies caught at this calibration's operating point, by kind and edit
        (:func:`lib.verdict.copy_tests.summarise`); None when not measured."""
        return summarise(self.copy_tests, self, self.copy_tests_rows)

    @cached_property
    def _null_array(self) -> np.ndarray:
        return np.asarray(self.null_scores, dtype=np.float64)

    @cached_property
    def _alignment_array(self) -> np.ndarray:
        return np.asarray(self.alignment_null, dtype=np.float64)

    @property
    def uses_alignment(self) -> bool:
        """True when the verdict also rests on pixel alignment (its null was measured)."""
        return bool(self.evidence_null)

    def evidence(self, calibrated: float, alignment: float | None = None) -> float:
        """The stronger of two signals, each as the share (0..1) of the null at or below
        it: the calibrated score, and the best alignment when given and measured."""
        p = _share_at_or_below(self._null_array, calibrated)
        if alignment is not None and self.alignment_null and np.isfinite(alignment):
            p = max(p, _share_at_or_below(self._alignment_array, alignment))
        return p

    @property
    def is_fitted(self) -> bool:
        """True when the thresholds were measured on the index (False: defaults)."""
        return self.null_sample > 0

    def null_percentile(self, calibrated: float, alignment: float | None = None) -> float | None:
        """Share (0..100) of the null sample scoring strictly lower than ``calibrated``
        (with ``alignment``, whose :meth:`evidence` is weaker); None when the index was
        too small to calibrate. With only quantiles stored (version 1), interpolated."""
        if self.evidence_null and alignment is not None and np.isfinite(alignment):
            p = self.evidence(calibrated, alignment)
            below = np.searchsorted(np.asarray(self.evidence_null), p, side="left")
            return 100.0 * float(below) / len(self.evidence_null)
        if self.null_scores:
            below = np.searchsorted(np.asarray(self.null_scores), calibrated, side="left")
            return 100.0 * float(below) / len(self.null_scores)
        if not self.null_quantiles:
            return None
        qs = sorted((v, float(k)) for k, v in self.null_quantiles.items())
        return 100.0 * float(np.interp(calibrated, [v for v, _ in qs], [q for _, q in qs]))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibration:
        if not data:
            return cls()
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        tests = [
            t if isinstance(t, CopyTest) else CopyTest(**t) for t in values.get("copy_tests", [])
        ]
        values["copy_tests"] = [t for t in tests if not t.problem()]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_false_alarm_rate(self, rate: float) -> Calibration:
        """A copy of this calibration whose copy threshold gives ``rate`` (0..1) false
        alarms on the null: its ``1 - rate`` quantile (interpolated between the stored
        quantiles when the sample itself is not stored)."""
        if self.evidence_null:
            # flag when either signal is rarer than share q of the null, with q chosen
            # so that the two together flag ``rate`` of it
            q = float(np.quantile(np.asarray(self.evidence_null), 1.0 - rate))
            return replace(
                self,
                copy_threshold=float(np.quantile(np.asarray(self.null_scores), q)),
                alignment_threshold=float(np.quantile(np.asarray(self.alignment_null), q)),
                false_alarm_rate=rate,
            )
        if self.null_scores:
            threshold = float(np.quantile(np.asarray(self.null_scores), 1.0 - rate))
        elif self.null_quantiles:
            qs = sorted((float(k), v) for k, v in self.null_quantiles.items())
            levels = np.array([q for q, _ in qs])
            values = np.array([v for _, v in qs])
            threshold = float(np.interp(1.0 - rate, levels, values))
        else:
            return self
        return replace(self, copy_threshold=threshold, false_alarm_rate=rate)

    def rule(
        self, calibrated: float, raw: float | None = None, alignment: float | None = None
    ) -> str | None:
        """Which rule makes a copy: "calibrated" (the score reaches ``copy_threshold``),
        "alignment" (the pixels line up at ``alignment_threshold`` or more), "identical"
        (only the raw cosine reaches ``identical_threshold``), or None."""
        if calibrated >= self.copy_threshold:
            return "calibrated"
        if alignment is not None and self.uses_alignment and alignment >= self.alignment_threshold:
            return "alignment"
        if raw is not None and raw >= self.identical_threshold:
            return "identical"
        return None

    def verdict(
        self, calibrated: float, raw: float | None = None, alignment: float | None = None
    ) -> str:
        """ "copy", "similar" or "none" for a calibrated score (and the raw cosine).

        A raw cosine at or above ``identical_threshold`` is a copy whatever the
        background: in dense domains a near-identical image can have look-alike
        neighbours that pull its calibrated score down (measured on the held-out
        OpenMoji emoji: 0.9% of them reach raw 0.97 against a training emoji).
        """
        if self.rule(calibrated, raw, alignment) is not None:
            return "copy"
        if calibrated >= self.similar_threshold:
            return "similar"
        return "none"


def background(
    sims: np.ndarray, neighbour_vectors: np.ndarray, calibration: Calibration
) -> np.ndarray:
    """Background similarity per query.

    Args:
        sims: (n, K) similarities of each query to its K nearest neighbours, descending;
            -inf where the index had fewer than K vectors.
        neighbour_vectors: (n, K, d) the neighbours' vectors (L2-normalised).
        calibration: ranks and the near-duplicate cosine.

    Returns:
        (n,) float32 background similarities (0 where the index is too small to tell).
        When all K neighbours are near-duplicates of the top match, the K-th similarity
        is used: the true background lies below it, so the score errs low.
    """
    n, k = sims.shape
    out = np.zeros(n, dtype=np.float32)
    if k < 2:
        return out
    top = neighbour_vectors[:, :1, :]
    to_top = np.einsum("nkd,njd->nk", neighbour_vectors, top)
    for i in range(n):
        valid = np.isfinite(sims[i])
        keep = valid & (to_top[i] < calibration.dup_cosine)
        keep[0] = False
        candidates = sims[i][keep]
        if candidates.size == 0:
            candidates = sims[i][valid][-1:] if valid.sum() > 1 else candidates
        if candidates.size == 0:
            continue
        start = min(calibration.bg_rank - 1, candidates.size - 1)
        out[i] = float(candidates[start : start + calibration.bg_width].mean())
    return out


def _share_at_or_below(sorted_values: np.ndarray, x: float) -> float:
    if not len(sorted_values):
        return 0.0
    return float(np.searchsorted(sorted_values, x, side="right")) / len(sorted_values)


def _search(faiss_index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lib.index.flat.search_flat`, imported here: the index package imports this
    module (its builder fits calibrations), so importing it at the top would be a circle."""
    from lib.index.flat import search_flat

    return search_flat(faiss_index, queries, k)


def families(
    faiss_index: Any,
    vectors: np.ndarray,
    rows: np.ndarray,
    family_cosine: float,
    *,
    max_size: int = FAMILY_MAX,
) -> list[set[int]]:
    """Each row's family: its connected component in the graph linking images at cosine
    ``family_cosine`` or more, explored breadth-first through every member's
    :data:`NEIGHBOURS` nearest, up to ``max_size`` members (so a chain of variants,
    battery icons at 0-100%, is one family even where its ends differ).

    Args:
        rows: (m,) row ids whose families are wanted.

    Returns:
        m sets of row ids, each holding its own row.
    """
    k = min(len(vectors), NEIGHBOURS)
    linked: dict[int, np.ndarray] = {}
    found = [{int(r)} for r in rows]
    frontier = [[int(r)] for r in rows]
    while any(frontier):
        todo = sorted({i for f in frontier for i in f if i not in linked})
        for start in range(0, len(todo), 1024):
            chunk = np.array(todo[start : start + 1024])
            sims, ids = _search(faiss_index, np.ascontiguousarray(vectors[chunk]), k)
            for j, i in enumerate(chunk):
                linked[int(i)] = ids[j][(ids[j] >= 0) & (sims[j] >= family_cosine)]
        for m, members in enumerate(found):
            new = {int(n) for i in frontier[m] for n in linked[i]} - members
            members |= new
            frontier[m] = sorted(new) if len(members) < max_size else []
    return found


def fit_calibration(
    faiss_index: Any,
    vectors: np.ndarray,
    *,
    base: Calibration | None = None,
    sample: int = NULL_SAMPLE,
    paths: Sequence[str] | None = None,
    alignment_sample: int = ALIGNMENT_SAMPLE,
    family_max: int = FAMILY_MAX,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    roots: Sequence[Path] | None = None,
) -> Calibration:
    """Measure the null distribution of the verdict's scores on the index itself.

    Each of up to ``sample`` indexed images (chosen by ``seed``) is searched against the
    index without its family (:func:`families`) and scored as a query would be: its best
    remaining match minus its background. With ``paths`` (row i's image file), the first
    ``alignment_sample`` of them are also aligned (:mod:`lib.verification`) with their
    :data:`lib.verification.SHORTLIST` best remaining matches, which gives the null of
    the alignment and of the evidence the verdict rests on.

    Args:
        faiss_index: the index holding ``vectors`` (row i = vector i).
        vectors: (n, d) float32, L2-normalised.
        base: ranks, family cosine and false-alarm rate to use (defaults otherwise).
        sample: at most this many indexed images serve as stand-in unrelated queries.
        family_max: families stop growing at this size (1: only the images at
            ``family_cosine`` or more to the sampled one, no chains).
        progress: called with (done, total) over the aligned images.
        roots: ``paths`` are read only inside these folders (:mod:`lib.allowed_paths`;
            files outside count as unreadable); None reads them as they are.

    Returns:
        A calibration of version :data:`CALIBRATION_VERSION` whose thresholds give
        ``base.false_alarm_rate`` false alarms on the null, with the sorted null samples;
        the default thresholds (``null_sample == 0``) when the index has fewer than 20
        images or fewer than 10 of them keep two neighbours outside their family.
    """
    n = len(vectors)
    base = replace(base or Calibration(), version=CALIBRATION_VERSION, fitted_rows=n)
    if n < 20:
        return base
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, size=min(sample, n), replace=False)
    family = families(faiss_index, vectors, rows, base.family_cosine, max_size=family_max)
    k = min(n, NEIGHBOURS + max(len(f) for f in family) + 16)
    sims, ids = _search(faiss_index, np.ascontiguousarray(vectors[rows]), k)
    null_cal, null_raw, shortlists = [], [], []
    for j in range(len(rows)):
        valid = ids[j] >= 0
        s, nb = sims[j][valid], ids[j][valid]
        outside = np.array([int(i) not in family[j] for i in nb], dtype=bool)
        s, nb = s[outside][:NEIGHBOURS], nb[outside][:NEIGHBOURS]
        if s.size < 2:
            continue
        bg = background(s[None, :], vectors[nb][None, :, :], base)[0]
        null_cal.append(float(s[0] - bg))
        null_raw.append(float(s[0]))
        shortlists.append((int(rows[j]), nb))
    if len(null_cal) < 10:
        return base
    levels = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
    null_q = {str(q): float(np.quantile(null_cal, q)) for q in levels}
    raw_q = {str(q): float(np.quantile(null_raw, q)) for q in levels}
    fitted = replace(
        base,
        null_sample=len(null_cal),
        null_quantiles=null_q,
        raw_quantiles=raw_q,
        null_scores=[round(x, 5) for x in sorted(null_cal)],
    )
    if paths is not None:
        fitted = _fit_alignment(
            fitted, null_cal, shortlists, paths, alignment_sample, progress, roots
        )
    fitted = fitted.with_false_alarm_rate(base.false_alarm_rate)
    similar = min(null_q["0.9"], fitted.copy_threshold)
    return replace(fitted, similar_threshold=similar)


def _fit_alignment(
    fitted: Calibration,
    null_cal: list[float],
    shortlists: list[tuple[int, np.ndarray]],
    paths: Sequence[str],
    sample: int,
    progress: ProgressCallback | None,
    roots: Sequence[Path] | None = None,
) -> Calibration:
    """``fitted`` with the alignment and evidence nulls of the first ``sample`` null
    images (unchanged when fewer than 10 of them can be read, or lie inside ``roots``)."""
    from lib.verification import SHORTLIST, ThumbCache, align_shortlist, candidate_thumb

    cache: ThumbCache = {}
    aligned: list[tuple[float, float]] = []
    todo = shortlists[:sample]
    for done, ((row, nb), cal) in enumerate(zip(todo, null_cal, strict=False), start=1):
        own = candidate_thumb(str(paths[row]), cache, roots)
        if own is not None:
            best = align_shortlist(own, [str(paths[i]) for i in nb[:SHORTLIST]], cache, roots)
            if np.isfinite(best).any():
                aligned.append((cal, float(np.nanmax(best))))
        if progress is not None:
            progress(done, len(todo))
    if len(aligned) < 10:
        return fitted
    alignment_null = sorted(round(a, 5) for _, a in aligned)
    with_alignment = replace(fitted, alignment_null=alignment_null)
    evidence = sorted(round(with_alignment.evidence(c, a), 6) for c, a in aligned)
    return replace(with_alignment, evidence_null=evidence)


STALE_GROWTH = 0.1
"""Above :data:`lib.index.ann.EXACT_LIMIT` rows a calibration stays valid until the index
has changed by this share of the rows it was fitted on (its null is a sample of 2,000
images: a tenth more rows moves its quantiles less than the sample's own noise)."""
STALE_EXACT_LIMIT = 200_000
"""Below this many rows any change of count makes a calibration stale (the same figure
as :data:`lib.index.ann.EXACT_LIMIT`, kept here so the verdict need not import the index)."""


def is_stale(calibration: Calibration | dict[str, Any] | None, count: int) -> bool:
    """True when ``calibration`` no longer describes an index of ``count`` rows: it was
    fitted on another number of rows, and either the index is small (every row counts)
    or it changed by :data:`STALE_GROWTH` or more. A writer killed after committing new
    rows but before refitting leaves such a calibration; readers refit it in memory and
    the next writer stores a fresh one. Calibrations that did not record their row count
    (``fitted_rows == 0``, stored by earlier versions) are taken as they are.

    Example:
        >>> is_stale(Calibration(fitted_rows=20), 60)
        True
    """
    if not isinstance(calibration, Calibration):
        calibration = Calibration.from_dict(calibration)
    fitted = int(calibration.fitted_rows)
    if fitted <= 0 or fitted == count:
        return False
    return count < STALE_EXACT_LIMIT or abs(count - fitted) >= STALE_GROWTH * fitted


def needs_refit(calibration: Calibration) -> bool:
    """True when a stored calibration was fitted by an older method (or never)."""
    return calibration.version < CALIBRATION_VERSION
