"""What a search returns: :class:`Match` (one training image found for a query) and
:class:`QueryResult` (a query's matches and verdict), and :func:`judge`, which gives a
result the verdict its top match earns under a calibration.

Both :mod:`lib.search` (global ranking, pixel alignment) and :mod:`lib.regions` (region
re-ranking) build these; neither imports the other's types, so imports go one way:
``lib.search -> lib.regions -> lib.results``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lib.calibration import Calibration
    from lib.verdict.copy_tests import Sensitivity


@dataclass(frozen=True)
class Match:
    """One training image retrieved for a query.

    ``score``: raw cosine similarity (-1..1). ``calibrated``: score minus the query's
    background similarity (see :mod:`lib.calibration`).

    Only in a search with ``regions=True`` (see :mod:`lib.regions`): ``global_score`` is
    the whole-image cosine (the same as ``score``), ``region_score`` the best crop-pair
    cosine, ``query_box`` and ``match_box`` that pair's crops (left, top, right, bottom)
    in pixels of each image, and ``combined`` the score the shortlist is ordered by.
    These fields are None otherwise and left out of the JSON. ``alignment``: how well
    the pixels line up (:mod:`lib.verification`, -1..1), for the shortlisted matches of a
    search from images (None for a search from vectors or an unreadable file).
    """

    rank: int
    id: int
    path: str
    score: float
    calibrated: float
    caption: str = ""
    width: int = 0
    height: int = 0
    global_score: float | None = None
    region_score: float | None = None
    query_box: tuple[int, int, int, int] | None = None
    match_box: tuple[int, int, int, int] | None = None
    combined: float | None = None
    alignment: float | None = None


@dataclass
class QueryResult:
    """The matches and verdict for one query image (or the reason it failed).

    ``score``: the top match's calibrated score; ``raw_score`` its cosine;
    ``null_percentile``: the share (0..100) of the index's null sample (indexed images
    searched as unrelated queries, :mod:`lib.calibration`) with weaker evidence, None
    when the index is too small to calibrate; ``rule``: what made a ``copy`` verdict,
    "calibrated", "alignment" (the pixels line up, :mod:`lib.verification`) or
    "identical" (raw cosine >= ``identical_threshold``); ``alignment``: the top match's
    alignment, with ``alignment_threshold`` when the index's null measured it.
    """

    query: str
    verdict: str = "none"
    score: float = 0.0
    raw_score: float = 0.0
    background: float = 0.0
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    null_percentile: float | None = None
    rule: str | None = None
    alignment: float | None = None
    alignment_threshold: float | None = None
    copy_threshold: float = 0.0
    similar_threshold: float = 0.0
    identical_threshold: float = 0.97
    false_alarm_rate: float = 0.02
    null_size: int = 0
    sensitivity: Sensitivity | None = None
    """The verdict's measured sensitivity at this operating point (copies of the
    collection's own images caught, :mod:`lib.verdict.copy_tests`); None: not measured."""

    @property
    def top(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def explanation(self) -> str:
        """Sentences saying why the verdict is what it is, with the numbers that decided
        it (the rule that fired, the threshold and the percentile among unrelated images)."""
        if self.error:
            return f"Could not read this image: {self.error}."
        if not self.matches:
            return "The index is empty: there is nothing to compare with."
        score, thr = ordered_pair(self.score, self.copy_threshold, sign=True)
        if self.null_percentile is None:
            among = (
                " This index is too small to calibrate (fewer than 20 images), so the "
                "thresholds are defaults, not measured on this collection."
            )
        elif self.null_percentile >= 100.0:
            among = (
                f" None of {self.null_size:,} unrelated images of this collection scores as high."
            )
        elif self.verdict == "copy":
            among = (
                f" Of {self.null_size:,} unrelated images of this collection, "
                f"{self.null_percentile:.1f}% score lower."
            )
        else:  # a weak match: say how common such a score is, not how many score lower
            among = (
                f" Of {self.null_size:,} unrelated images of this collection, "
                f"{100.0 - self.null_percentile:.1f}% score as high or higher."
            )
        if self.rule == "alignment" and self.alignment is not None:
            aligned, needed = ordered_pair(self.alignment, self.alignment_threshold or 0.0)
            return (
                f"The pixels of this image line up with the top match at {aligned} "
                f"(normalised cross-correlation, 1 = identical), at or above the {needed} "
                f"that calls a copy; its score above the neighbourhood is {score} (copy at "
                f"{thr})." + among + self._rates()
            )
        if self.rule == "identical":
            return (
                f"The top match has a raw cosine of {self.raw_score:.3f}, at or above "
                f"{self.identical_threshold:.2f}: the two images are near-identical. "
                f"(Its score above the neighbourhood, {score}, is under the {thr} copy "
                f"threshold because the collection holds close look-alikes of it.)"
                + among
                + self._rates()
            )
        lead = f"The top match scores {score} above this image's neighbourhood"
        if self.verdict == "copy":
            return f"{lead}, at or above the {thr} that calls a copy." + among + self._rates()
        if self.verdict == "similar":
            return (
                f"{lead}: more than most unrelated images of this collection, but under "
                f"the {thr} that calls a copy." + among + self._rates()
            )
        return (
            f"{lead}, under the {thr} that calls a copy: no training image stands out."
            + among
            + self._rates()
        )

    def _rates(self) -> str:
        """The verdict's known error rates: for a copy the false alarms and the copies
        caught, for any other verdict the copies it misses (" ..." or "")."""
        if self.sensitivity is None:
            if self.verdict == "none":
                return (
                    " This is not a clearance: the check can miss copies, above all crops "
                    "and pictures pasted into another scene (how many has not been measured "
                    "on this collection: recalibrate the index to measure it)."
                )
            return ""
        if self.verdict == "copy":
            return " " + self.sensitivity.error_rates()
        return " " + self.sensitivity.misses()

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the CLI's ``search --json``."""
        if self.error is not None:
            return {"query": self.query, "error": self.error, "verdict": None, "matches": []}
        return {
            "query": self.query,
            "verdict": self.verdict,
            "score": round(self.score, 6),
            "raw_score": round(self.raw_score, 6),
            "background": round(self.background, 6),
            "null_percentile": (
                None if self.null_percentile is None else round(self.null_percentile, 2)
            ),
            "rule": self.rule,
            "alignment": None if self.alignment is None else round(self.alignment, 6),
            "copy_threshold": round(self.copy_threshold, 6),
            "alignment_threshold": (
                None if self.alignment_threshold is None else round(self.alignment_threshold, 6)
            ),
            "false_alarm_rate": self.false_alarm_rate,
            "measured_sensitivity": (
                None if self.sensitivity is None else self.sensitivity.to_dict()
            ),
            "explanation": self.explanation(),
            "matches": [_match_dict(m) for m in self.matches],
        }


def percentile_words(verdict: str, null_percentile: float | None) -> str:
    """Where a score sits among unrelated images, framed so that it never reads as more
    evidence than the verdict: a copy by how many score lower, any other verdict by how
    many score as high or higher ("" when the index was too small to measure it)."""
    if null_percentile is None:
        return ""
    if verdict == "copy":
        return f"{null_percentile:.1f}% of unrelated images score lower"
    return f"{100.0 - null_percentile:.1f}% of unrelated images score as high or higher"


def ordered_pair(value: float, threshold: float, *, sign: bool = False) -> tuple[str, str]:
    """A score and its threshold as text, with as many decimals (2 to 6) as it takes for
    the text to keep their order: never "+0.25, under the +0.25"."""
    for decimals in range(2, 7):
        spec = f"{'+' if sign else ''}.{decimals}f"
        a, b = format(value, spec), format(threshold, spec)
        tie_shown = a == b and value != threshold  # "0.99 ... at or above the 0.99"
        if (float(a) >= float(b)) == (value >= threshold) and not tie_shown:
            return a, b
    return a, b


_REGION_FIELDS = (
    "global_score",
    "region_score",
    "query_box",
    "match_box",
    "combined",
    "alignment",
)


def _match_dict(m: Match) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in asdict(m).items():
        if k in _REGION_FIELDS and v is None:
            continue
        out[k] = round(v, 6) if isinstance(v, float) else (list(v) if isinstance(v, tuple) else v)
    return out


def leading(entries: Sequence[tuple[float, float, float | None]], calibration: Calibration) -> int:
    """Which of a shortlist leads the verdict: the first (the highest cosine, the paper's
    top-1), unless another one's pixels line up well enough to call a copy on their own
    (the "alignment" rule) and its evidence (:meth:`Calibration.evidence`) is the
    strongest of the shortlist: that one then leads.

    Args:
        entries: the shortlist in global order, each (raw cosine, calibrated score,
            alignment or None).

    Returns:
        The position (0-based) of the leading entry; 0 for an empty shortlist.

    Example:
        >>> leading([(0.8, 0.1, None)], Calibration())  # doctest: +SKIP
        0
    """
    if len(entries) < 2:
        return 0
    evidence = [calibration.evidence(cal, aligned) for _, cal, aligned in entries]
    best = max(range(len(evidence)), key=lambda i: (evidence[i], -i))
    raw, cal, aligned = entries[best]
    if best and calibration.rule(cal, raw, aligned) == "alignment":
        return best
    return 0


def judge(result: QueryResult, matches: list[Match], calibration: Calibration) -> QueryResult:
    """``result`` with ``matches`` (best first) and the verdict, score, percentile, rule
    and thresholds that the top match earns under ``calibration``."""
    top = matches[0] if matches else None
    score = top.calibrated if top else 0.0
    raw = top.score if top else 0.0
    aligned = top.alignment if top else None
    cal = calibration
    return replace(
        result,
        matches=matches,
        verdict=cal.verdict(score, raw, aligned) if top else "none",
        rule=cal.rule(score, raw, aligned) if top else None,
        score=score,
        raw_score=raw,
        alignment=aligned,
        alignment_threshold=cal.alignment_threshold if cal.uses_alignment else None,
        null_percentile=cal.null_percentile(score, aligned) if top else None,
        copy_threshold=cal.copy_threshold,
        similar_threshold=cal.similar_threshold,
        identical_threshold=cal.identical_threshold,
        false_alarm_rate=cal.false_alarm_rate,
        null_size=cal.null_sample,
        sensitivity=cal.measured_sensitivity,
    )
