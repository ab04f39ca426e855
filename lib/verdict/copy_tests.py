"""The verdict's measured sensitivity: how many copies of this collection's own images it
catches, at each operating point.

A false-alarm rate alone is half of a method's known error rate (the question US courts
ask of an expert's method, *Daubert v. Merrell Dow*, 1993); the other half is how often it
misses a real copy. When an index is learned (:mod:`lib.verdict.sensitivity`), edited and
pasted copies of a random sample of its own images are searched as a user's query is,
and each one's shortlist is kept as a :class:`CopyTest`: its raw cosines, calibrated
scores and pixel alignments in global order, and where its source sits in it. Those
numbers do not depend on the thresholds, so the copies can be judged again under any
operating point (:func:`summarise`) by the same rules as a query (:func:`lib.results.leading`
and :meth:`lib.calibration.Calibration.verdict`): a copy is *caught* when the verdict is
``copy`` and its leading match is its source.

No threshold is fitted on these copies (the thresholds come from the null of unrelated
images alone), so every copy here is held out from what decided the verdict.

Example:
    >>> test = CopyTest("edited", ["crop"], [0.9, 0.5], [0.3, 0.0], [None, None], 0)
    >>> summarise([test], Calibration()).edited.caught  # doctest: +SKIP
    1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lib.results import leading

if TYPE_CHECKING:
    from lib.calibration import Calibration

KINDS = ("edited", "pasted")
"""``edited``: the whole image, changed by 1-3 random edits (crop, rotation, colour, blur,
JPEG, downscaling, mirroring, text, border); ``pasted``: the image scaled down and pasted
into another image of the collection or onto noise (a part of a new picture)."""
EDIT_WORDS = {
    "crop": "cropped",
    "rotate": "rotated",
    "colour": "recoloured or made grey",
    "blur": "blurred",
    "jpeg": "saved as a low-quality JPEG",
    "downscale": "shrunk and enlarged again",
    "mirror": "mirrored or flipped",
    "text": "text or a banner added",
    "border": "a border added",
    "paste": "pasted into another picture",
}
"""Each edit of the copies in words (the edit family of :mod:`lib.verdict.learning`)."""
MAX_TESTS = 5000
"""A stored calibration holds at most this many copy tests (a hostile manifest more)."""
MAX_SHORTLIST = 64
"""A copy test's shortlist holds at most this many matches."""


@dataclass(frozen=True)
class CopyTest:
    """One self-made copy of an indexed image, searched as a query is.

    ``kind``: one of :data:`KINDS`; ``edits``: the edits that made it, in order;
    ``raw``, ``calibrated``, ``alignment``: its shortlist's raw cosines, calibrated
    scores and pixel alignments (None: not aligned), in global order (highest cosine
    first); ``source_at``: the position of its source in that shortlist, -1 when the
    source is not in it.
    """

    kind: str
    edits: list[str]
    raw: list[float]
    calibrated: list[float]
    alignment: list[float | None]
    source_at: int

    def problem(self) -> str:
        """Why this test cannot be judged ("" when it can): a shape a writer of this
        version never makes, as a hostile or damaged manifest might hold."""
        n = len(self.raw)
        if self.kind not in KINDS:
            return f"kind {self.kind!r} is not one of {', '.join(KINDS)}"
        if not 1 <= n <= MAX_SHORTLIST or len(self.calibrated) != n or len(self.alignment) != n:
            return f"its shortlist lists must have one equal length of 1 to {MAX_SHORTLIST}"
        if not -1 <= self.source_at < n:
            return f"source_at {self.source_at} is outside its shortlist of {n}"
        numbers = [*self.raw, *self.calibrated, *(a for a in self.alignment if a is not None)]
        if not all(math.isfinite(x) for x in numbers):
            return "it holds a value that is not a finite number"
        if len(self.edits) > 16:
            return "it lists more than 16 edits"
        return ""

    def caught(self, calibration: Calibration) -> bool:
        """True when a query with this shortlist is called ``copy`` under
        ``calibration`` and its leading match is the source."""
        entries = list(zip(self.raw, self.calibrated, self.alignment, strict=True))
        lead = leading(entries, calibration)
        raw, cal, aligned = entries[lead]
        return lead == self.source_at and calibration.verdict(cal, raw, aligned) == "copy"


@dataclass(frozen=True)
class Rate:
    """``caught`` of ``copies`` copies, with the 95% Wilson interval of the share."""

    caught: int
    copies: int

    @property
    def share(self) -> float:
        return self.caught / self.copies if self.copies else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval of :attr:`share` (0..1); (0, 1) with no copies."""
        if not self.copies:
            return 0.0, 1.0
        from scipy.stats import binomtest

        ci = binomtest(self.caught, self.copies).proportion_ci(method="wilson")
        return float(ci.low), float(ci.high)

    def in_100(self) -> int:
        """The share as "about N in 100" (rounded)."""
        return round(100 * self.share)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "caught": self.caught,
            "copies": self.copies,
            "share": round(self.share, 4),
            "interval_95": [round(low, 4), round(high, 4)],
        }


@dataclass(frozen=True)
class Sensitivity:
    """The verdict's measured sensitivity at one operating point.

    ``false_alarm_rate``: the operating point (0..1), the share of the null of unrelated
    images called ``copy``; ``edited`` and ``pasted``: copies caught by kind;
    ``by_edit``: copies caught among the edited copies that went through each edit;
    ``fitted_rows``: the rows the index held when the copies were made.
    """

    false_alarm_rate: float
    edited: Rate
    pasted: Rate
    by_edit: dict[str, Rate] = field(default_factory=dict)
    fitted_rows: int = 0

    def error_rates(self) -> str:
        """The sentence that states the verdict's known error rates, for example "At this
        setting, about 2 in 100 unrelated images of this collection are called copies;
        about 84 in 100 edited copies of its own images are caught, and about 60 in 100
        pasted into another picture."."""
        return (
            f"At this setting, about {_in_100(self.false_alarm_rate)} in 100 unrelated images "
            f"of this collection are called copies; about {self.edited.in_100()} in 100 "
            f"edited copies of its own images are caught, and about {self.pasted.in_100()} "
            f"in 100 pasted into another picture (measured on {self.edited.copies:,} and "
            f"{self.pasted.copies:,} such copies)."
        )

    def misses(self) -> str:
        """What a verdict short of ``copy`` does not rule out, for example "This is not a
        clearance: at this setting the check misses about 16 in 100 edited copies ..."."""
        return (
            f"This is not a clearance: at this setting the check misses about "
            f"{100 - self.edited.in_100()} in 100 edited copies of this collection's own "
            f"images and about {100 - self.pasted.in_100()} in 100 pasted into another "
            "picture."
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``measured_sensitivity`` in ``search --json`` and reports."""
        return {
            "false_alarm_rate": self.false_alarm_rate,
            "edited_copies": self.edited.to_dict(),
            "pasted_copies": self.pasted.to_dict(),
            "by_edit": {name: rate.to_dict() for name, rate in sorted(self.by_edit.items())},
            "fitted_rows": self.fitted_rows,
            "method": (
                "copies of a random sample of the indexed images, made when the index was "
                "calibrated and searched as a query is; caught = verdict copy with the "
                "source as the leading match"
            ),
        }


def _in_100(share: float) -> str:
    value = 100 * share
    return f"{value:.0f}" if value >= 1 or value == 0 else f"{value:.1f}"


def summarise(
    tests: Sequence[CopyTest], calibration: Calibration, fitted_rows: int = 0
) -> Sensitivity | None:
    """How many of ``tests`` are caught under ``calibration``, by kind and by edit;
    None when there are none of either kind (not measured)."""
    counts: dict[str, list[int]] = {kind: [0, 0] for kind in KINDS}
    by_edit: dict[str, list[int]] = {}
    for test in tests:
        hit = int(test.caught(calibration))
        counts[test.kind][0] += hit
        counts[test.kind][1] += 1
        if test.kind == "edited":
            for name in set(test.edits):
                tally = by_edit.setdefault(name, [0, 0])
                tally[0] += hit
                tally[1] += 1
    if not counts["edited"][1] or not counts["pasted"][1]:
        return None
    return Sensitivity(
        false_alarm_rate=calibration.false_alarm_rate,
        edited=Rate(*counts["edited"]),
        pasted=Rate(*counts["pasted"]),
        by_edit={name: Rate(*tally) for name, tally in by_edit.items()},
        fitted_rows=fitted_rows,
    )
