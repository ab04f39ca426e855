"""One finding: a query, the training image it is compared with, and everything needed to
reproduce the comparison, as a small JSON record.

A finding is made by searching the query's bytes (:func:`lib.search.search_images`), so
that ``python -m lib report`` on a server, the Search page and ``verify`` compute it the
same way. It embeds the query's bytes (base64) so that ``verify`` can re-run it where the
query file is not at hand, and the pictures a report shows (PNG, base64) so that a case
can be exported after its images have gone.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lib.allowed_paths import OUTSIDE_REASON, index_roots, resolve_inside
from lib.calibration import Calibration
from lib.embedders import Embedder
from lib.evidence.identity import (
    embedder_identity,
    licence_line,
    manifest_sha256,
    package_versions,
    sha256_bytes,
    sha256_file,
)
from lib.index import ReplicaIndex
from lib.search import Match, QueryResult, judge, search_images

FINDING_KIND = "replica-finding"
FINDING_VERSION = 1
NULL_BINS = 30


class FindingError(ValueError):
    """A finding cannot be made: the query is unreadable or the match is not found."""


@dataclass(frozen=True)
class QueryFile:
    """The query image: its file name, where it was read (empty for an upload), SHA-256 of
    its bytes and the bytes themselves (base64)."""

    name: str
    path: str
    sha256: str
    data_b64: str = field(repr=False, default="")

    def data(self) -> bytes:
        return base64.b64decode(self.data_b64)


@dataclass(frozen=True)
class IndexRef:
    """The index searched: folder name and path as given, SHA-256 of its manifest, size and
    the datasets it holds."""

    name: str
    path: str
    manifest_sha256: str
    count: int
    sources: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MatchRecord:
    """The training image the finding is about, with its scores against the query.

    ``score``: raw cosine (-1..1); ``calibrated``: cosine minus the query's background;
    ``alignment``: pixel alignment (-1..1) or None; ``null_percentile``: 0..100 (None for an
    index too small to calibrate); ``verdict``: copy / similar / none.
    """

    id: int
    rank: int
    name: str
    path: str
    sha256: str
    caption: str
    source: str
    licence: str
    score: float
    calibrated: float
    alignment: float | None
    verdict: str
    null_percentile: float | None
    file_available: bool = True
    file_note: str = ""
    """Why the training file was not read when the finding was made, in plain words (its
    picture is then not in the report and ``sha256`` is the index's record); "" when it was."""


@dataclass(frozen=True)
class NullSummary:
    """The index's null (its own images searched as unrelated queries) as histograms: of
    calibrated scores, ``edges`` (bins + 1) and ``counts`` (bins), ``size`` images; of pixel
    alignments, ``alignment_edges`` and ``alignment_counts`` (empty when not measured)."""

    edges: list[float]
    counts: list[int]
    size: int
    alignment_edges: list[float] = field(default_factory=list)
    """The same for the null's pixel alignments (-1..1), when the index measured them."""
    alignment_counts: list[int] = field(default_factory=list)


@dataclass
class Finding:
    """The reproducible record of one finding (serialised by :meth:`to_dict`)."""

    created: str
    query: QueryFile
    index: IndexRef
    embedder: dict[str, Any]
    settings: dict[str, Any]
    result: dict[str, Any]
    match: MatchRecord
    null: NullSummary
    versions: dict[str, str]
    note: str = ""
    pictures: dict[str, str] = field(default_factory=dict, repr=False)
    """Report pictures as base64 PNG: query, match, strip, difference, regions, null."""

    @property
    def title(self) -> str:
        return f"{self.query.name} and training image #{self.match.id}"

    def readable_command(self, out: str = "report.pdf") -> str:
        """:meth:`command` with the index and the query by name, as a report's reader sees
        it (no folder of the machine that made it)."""
        from pathlib import PurePath

        return (
            self.command(out)
            .replace(shlex.quote(self.index.path), shlex.quote(PurePath(self.index.path).name), 1)
            .replace(
                shlex.quote(self.query.path or self.query.name), shlex.quote(self.query.name), 1
            )
        )

    def command(self, out: str = "report.pdf") -> str:
        """The command that makes this finding again (the index path as recorded)."""
        args = [
            "python",
            "-m",
            "lib",
            "report",
            self.index.path,
            self.query.path or self.query.name,
            "--match",
            str(self.match.id),
            "--top-k",
            str(self.settings["top_k"]),
            "--false-alarm-rate",
            str(self.settings["false_alarm_rate"]),
        ]
        if self.settings.get("regions"):
            args.append("--regions")
        return shlex.join([*args, "--out", out])

    def picture(self, name: str) -> bytes | None:
        data = self.pictures.get(name)
        return base64.b64decode(data) if data else None

    def to_dict(self, *, pictures: bool = True) -> dict[str, Any]:
        """JSON-ready dict; ``pictures=False`` leaves the report pictures out (the record
        that ``verify`` reads)."""
        data = asdict(self)
        data["kind"] = FINDING_KIND
        data["version"] = FINDING_VERSION
        data["command"] = self.command()
        if not pictures:
            data.pop("pictures")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """Raises FindingError when ``data`` is not a finding this version can read."""
        if data.get("kind") != FINDING_KIND:
            raise FindingError("not a Replica finding (its 'kind' is missing or different)")
        try:
            return cls(
                created=str(data["created"]),
                query=QueryFile(**data["query"]),
                index=IndexRef(**data["index"]),
                embedder=dict(data["embedder"]),
                settings=dict(data["settings"]),
                result=dict(data["result"]),
                match=MatchRecord(**data["match"]),
                null=NullSummary(**data["null"]),
                versions=dict(data["versions"]),
                note=str(data.get("note", "")),
                pictures=dict(data.get("pictures") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise FindingError(f"the finding's record is incomplete or damaged: {exc}") from exc


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def calibration_at(index: ReplicaIndex, false_alarm_rate: float | None) -> Calibration:
    """The index's calibration at an operating point (0..1; None: the stored one)."""
    if false_alarm_rate is None:
        return index.calibration
    return index.calibration.with_false_alarm_rate(false_alarm_rate)


def search_query(
    index: ReplicaIndex,
    name: str,
    data: bytes,
    *,
    top_k: int,
    calibration: Calibration,
    regions: bool,
    embedder: Embedder | None = None,
) -> QueryResult:
    """The query's result, searched exactly as every finding is (from its bytes).

    Raises:
        FindingError: the query could not be read.
    """
    (result,) = search_images(
        index,
        [(name, data)],
        embedder=embedder,
        top_k=top_k,
        calibration=calibration,
        regions=regions,
    )
    if result.error is not None:
        raise FindingError(f"the query {name} could not be read: {result.error}")
    if not result.matches:
        raise FindingError("the index is empty: there is nothing to compare with")
    return result


def focus(result: QueryResult, match_id: int | None, calibration: Calibration) -> QueryResult:
    """``result`` judged on the match with ``match_id`` (None: the top match), which comes
    first; the others keep their order and ranks.

    Raises:
        FindingError: no match has that id.
    """
    if match_id is None:
        return result
    chosen = [m for m in result.matches if m.id == int(match_id)]
    if not chosen:
        raise FindingError(
            f"training image #{match_id} is not among the {len(result.matches)} best matches "
            "of this query; raise --top-k or pick another match"
        )
    rest = [m for m in result.matches if m.id != int(match_id)]
    return judge(replace(result), [chosen[0], *rest], calibration)


def row_of(index: ReplicaIndex, match_id: int) -> int:
    """The metadata row whose ``id`` is ``match_id``.

    Raises:
        FindingError: the index holds no such image.
    """
    ids = index.metadata["id"].to_numpy()
    i = int(match_id)
    if 0 <= i < len(ids) and int(ids[i]) == i:
        return i
    found = np.flatnonzero(ids == i)
    if not found.size:
        raise FindingError(f"the index holds no training image #{match_id}")
    return int(found[0])


def match_record(
    index: ReplicaIndex, match: Match, result: QueryResult, calibration: Calibration
) -> MatchRecord:
    """The record of ``match`` (the first match of ``result``), with its file's SHA-256
    (the index's stored hash when the file cannot be read, or lies outside the folders the
    index may read, :func:`lib.allowed_paths.index_roots`: then it is not opened)."""
    i = row_of(index, match.id)
    row = index.row(i)
    path = resolve_inside(index.file_path(i), index_roots(index))
    digest, available, note = str(row.get("sha256") or ""), False, OUTSIDE_REASON
    if path is not None:
        try:
            digest, available, note = sha256_file(path), True, ""
        except OSError:
            note = "the training file could not be read"
    return MatchRecord(
        id=int(match.id),
        rank=int(match.rank),
        name=Path(str(row["path"])).name,
        path=str(row["path"]),
        sha256=digest,
        caption=str(row.get("caption") or ""),
        source=str(row.get("source") or ""),
        licence=licence_line(str(row.get("source") or ""), index.manifest.sources),
        score=float(match.score),
        calibrated=float(match.calibrated),
        alignment=None if match.alignment is None else float(match.alignment),
        verdict=result.verdict,
        null_percentile=result.null_percentile,
        file_available=available,
        file_note=note,
    )


def null_summary(calibration: Calibration, bins: int = NULL_BINS) -> NullSummary:
    """Histogram of the null's calibrated scores (empty for an uncalibrated index)."""
    scores = np.asarray(calibration.null_scores, dtype=np.float64)
    if scores.size == 0:
        return NullSummary(edges=[], counts=[], size=0)
    counts, edges = np.histogram(scores, bins=bins)
    summary = NullSummary([float(e) for e in edges], [int(c) for c in counts], int(scores.size))
    aligned = np.asarray(calibration.alignment_null, dtype=np.float64)
    aligned = aligned[np.isfinite(aligned)]
    if aligned.size:
        a_counts, a_edges = np.histogram(aligned, bins=bins)
        summary = replace(
            summary,
            alignment_edges=[float(e) for e in a_edges],
            alignment_counts=[int(c) for c in a_counts],
        )
    return summary


def make_finding(
    index: ReplicaIndex,
    query_name: str,
    data: bytes,
    *,
    query_path: str = "",
    match_id: int | None = None,
    top_k: int = 5,
    false_alarm_rate: float | None = None,
    regions: bool = False,
    embedder: Embedder | None = None,
    pictures: bool = True,
) -> Finding:
    """Search ``data`` (an image file's bytes) in ``index`` and record the finding about the
    match with ``match_id`` (None: the top match).

    ``query_path``: where the file was read (empty for an upload); ``pictures``: draw the
    report's pictures too (about a second; needs the training files).

    Raises:
        FindingError: unreadable query, empty index, or no such match in the top ``top_k``.
        EmbedderUnavailable: the model or its weights are missing.
    """
    model = embedder or index.create_embedder()
    cal = calibration_at(index, false_alarm_rate)
    result = search_query(
        index, query_name, data, top_k=top_k, calibration=cal, regions=regions, embedder=model
    )
    shown = focus(result, match_id, cal)
    top = shown.matches[0]
    finding = Finding(
        created=now(),
        query=QueryFile(
            name=Path(query_name).name,
            path=str(query_path),
            sha256=sha256_bytes(data),
            data_b64=base64.b64encode(data).decode("ascii"),
        ),
        index=IndexRef(
            name=index.path.name,
            path=str(index.path),
            manifest_sha256=manifest_sha256(index.path),
            count=index.count,
            sources=list(index.manifest.sources),
        ),
        embedder=embedder_identity(model),
        settings={
            "top_k": int(top_k),
            "false_alarm_rate": float(cal.false_alarm_rate),
            "regions": bool(regions),
        },
        result=shown.to_dict(),
        match=match_record(index, top, shown, cal),
        null=null_summary(cal),
        versions=package_versions(),
    )
    if pictures:
        from lib.evidence.pictures import finding_pictures

        finding.pictures = finding_pictures(finding, index, shown, model)
    return finding
