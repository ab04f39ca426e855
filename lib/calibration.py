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
images is searched against the rest of the index with itself and its near-duplicates
removed, which imitates an unrelated image from the same domain. ``copy`` is the
``1 - false_alarm_rate`` quantile of that null, ``similar`` its 90th percentile. A raw
cosine of ``identical_threshold`` (0.97) or more is a copy in any case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lib.faiss_search import search_flat

NEIGHBOURS = 32
"""Neighbours fetched per query to estimate the background (plus top-k)."""


@dataclass(frozen=True)
class Calibration:
    """Parameters and thresholds of the calibrated score, stored in the manifest.

    Thresholds are in calibrated units (cosine minus background cosine).
    """

    bg_rank: int = 1
    bg_width: int = 2
    dup_cosine: float = 0.9
    copy_threshold: float = 0.12
    similar_threshold: float = 0.06
    identical_threshold: float = 0.97
    false_alarm_rate: float = 0.02
    null_sample: int = 0
    null_quantiles: dict[str, float] = field(default_factory=dict)
    raw_quantiles: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibration:
        if not data:
            return cls()
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_false_alarm_rate(self, rate: float) -> Calibration:
        """A copy of this calibration whose copy threshold gives ``rate`` false alarms
        on the null (interpolated between the stored quantiles)."""
        if not self.null_quantiles:
            return self
        qs = sorted((float(k), v) for k, v in self.null_quantiles.items())
        levels = np.array([q for q, _ in qs])
        values = np.array([v for _, v in qs])
        threshold = float(np.interp(1.0 - rate, levels, values))
        return Calibration(
            **{**self.to_dict(), "copy_threshold": threshold, "false_alarm_rate": rate}
        )

    def verdict(self, calibrated: float, raw: float | None = None) -> str:
        """ "copy", "similar" or "none" for a calibrated score (and the raw cosine).

        A raw cosine at or above ``identical_threshold`` is a copy whatever the
        background: in dense domains a near-identical image can have look-alike
        neighbours that pull its calibrated score down (measured on the held-out
        OpenMoji emoji: 0.9% of them reach raw 0.97 against a training emoji).
        """
        if calibrated >= self.copy_threshold or (
            raw is not None and raw >= self.identical_threshold
        ):
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
            candidates = sims[i][valid][1:]
        if candidates.size == 0:
            continue
        start = min(calibration.bg_rank - 1, candidates.size - 1)
        out[i] = float(candidates[start : start + calibration.bg_width].mean())
    return out


def fit_calibration(
    faiss_index: Any,
    vectors: np.ndarray,
    *,
    base: Calibration | None = None,
    sample: int = 2000,
    seed: int = 0,
) -> Calibration:
    """Measure the null distribution of calibrated scores on the index itself.

    Args:
        faiss_index: the index holding ``vectors`` (row i = vector i).
        vectors: (n, d) float32, L2-normalised.
        base: ranks and false-alarm rate to use (defaults otherwise).
        sample: at most this many indexed images serve as stand-in unrelated queries.

    Returns:
        A calibration whose thresholds give ``base.false_alarm_rate`` false alarms on
        the null; the defaults when the index has fewer than 20 images.
    """
    base = base or Calibration()
    n = len(vectors)
    if n < 20:
        return base
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    k = min(n, NEIGHBOURS + 16)
    sims, ids = search_flat(faiss_index, np.ascontiguousarray(vectors[rows]), k)
    null_cal, null_raw = [], []
    for j, row in enumerate(rows):
        valid = ids[j] >= 0
        s, nb = sims[j][valid], ids[j][valid]
        self_and_dups = (nb == row) | (s >= base.dup_cosine)
        s, nb = s[~self_and_dups][:NEIGHBOURS], nb[~self_and_dups][:NEIGHBOURS]
        if s.size < 2:
            continue
        bg = background(s[None, :], vectors[nb][None, :, :], base)[0]
        null_cal.append(float(s[0] - bg))
        null_raw.append(float(s[0]))
    if len(null_cal) < 10:
        return base
    levels = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
    null_q = {str(q): float(np.quantile(null_cal, q)) for q in levels}
    raw_q = {str(q): float(np.quantile(null_raw, q)) for q in levels}
    fitted = Calibration(
        **{
            **base.to_dict(),
            "null_sample": len(null_cal),
            "null_quantiles": null_q,
            "raw_quantiles": raw_q,
        }
    ).with_false_alarm_rate(base.false_alarm_rate)
    similar = min(null_q["0.9"], fitted.copy_threshold)
    return Calibration(**{**fitted.to_dict(), "similar_threshold": similar})
