"""Re-run a report's findings and say plainly which checks pass and which differ.

For each finding (and each most-copied generation of a scan):

- **query file**: the query's bytes (the file at ``--query``, else at its recorded path,
  else the copy embedded in the report) have the recorded SHA-256;
- **index unchanged**: the index's manifest has the recorded SHA-256;
- **index holds the match**: the matched training image is still in the index, under the
  same id, with the same SHA-256;
- **training file**: the matched training file on disk has the recorded SHA-256 (it is
  read only inside the folders the index may read, :mod:`lib.allowed_paths`);
- **same model**: the index's embedder has the recorded name, configuration and weights;
- **scores**: searching the query again gives the same raw and calibrated scores and
  alignment (to :data:`TOLERANCE`), null percentile and verdict.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.allowed_paths import OUTSIDE_REASON, app_roots, index_roots, resolve_inside
from lib.embedders import Embedder, EmbedderUnavailable
from lib.evidence.document import read_document
from lib.evidence.finding import Finding, FindingError, calibration_at, focus, row_of, search_query
from lib.evidence.identity import embedder_identity, manifest_sha256, sha256_bytes, sha256_file
from lib.images import MAX_FILE_BYTES
from lib.index import EmbedderMismatch, IndexNotFound, ReplicaIndex, open_index

TOLERANCE = 1e-4
"""Largest difference allowed between a recorded and a recomputed score (cosine units)."""


@dataclass(frozen=True)
class Check:
    """One check of one finding: ``ok``, what was compared (``detail``) and, when it
    failed, the kind of difference in a few words (``problem``: "file changed", "index
    changed", "different model", "scores differ", "missing")."""

    name: str
    ok: bool
    detail: str
    problem: str = ""


@dataclass
class FindingCheck:
    """The checks of one finding."""

    title: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_document`; ``ok`` only when every check passes."""

    source: str
    findings: list[FindingCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.findings) and all(f.ok for f in self.findings)

    @property
    def problems(self) -> list[str]:
        """The distinct kinds of difference found, in order."""
        found = [c.problem for f in self.findings for c in f.checks if not c.ok]
        return list(dict.fromkeys(found))

    def lines(self) -> list[str]:
        """The report as plain lines, one per check, and a last line with the outcome."""
        out = []
        for f in self.findings:
            out.append(f"{f.title}")
            for c in f.checks:
                tag = "PASS" if c.ok else "FAIL"
                problem = f" [{c.problem}]" if c.problem and not c.ok else ""
                out.append(f"  {tag}  {c.name}{problem}: {c.detail}")
        total = sum(len(f.checks) for f in self.findings)
        failed = sum(1 for f in self.findings for c in f.checks if not c.ok)
        if not self.findings:
            out.append(f"NOT VERIFIED: {self.source} holds no finding to check")
        elif self.ok:
            out.append(f"VERIFIED: all {total} checks pass")
        else:
            out.append(
                f"NOT VERIFIED: {failed} of {total} checks differ ({', '.join(self.problems)})"
            )
        return out


def _query_bytes(finding: Finding, query: Path | None) -> tuple[bytes | None, str]:
    """The query's bytes and where they came from."""
    recorded = Path(finding.query.path) if finding.query.path else None
    if query is not None and query.is_file():
        return query.read_bytes(), f"the file {query}"
    # The report's path is read only inside the folders Replica may read (a report can
    # name any file: reading it would turn verify into an oracle for its content); it is
    # skipped when it cannot be read here, or is too large.
    outside = recorded is not None and resolve_inside(recorded, app_roots()) is None
    try:
        if (
            recorded is not None
            and not outside
            and recorded.is_file()
            and recorded.stat().st_size <= MAX_FILE_BYTES
        ):
            return recorded.read_bytes(), f"the file {recorded}"
    except OSError:
        pass
    if finding.query.data_b64:
        return finding.query.data(), "the copy embedded in the report"
    if outside:
        return None, "outside the folders Replica may read: pass it with --query"
    return None, "nowhere"


def _check_query(finding: Finding, data: bytes | None, where: str) -> Check:
    if data is None:
        detail = "the query file was not found"
        if where.startswith("outside"):
            detail = f"the recorded query file lies {where}"
        return Check("query file", False, detail, "missing")
    digest = sha256_bytes(data)
    if digest != finding.query.sha256:
        return Check(
            "query file",
            False,
            f"{where} has SHA-256 {digest[:16]}…, the report records {finding.query.sha256[:16]}…",
            "file changed",
        )
    return Check("query file", True, f"SHA-256 matches ({where})")


def _check_index(finding: Finding, index: ReplicaIndex) -> list[Check]:
    out = []
    digest = manifest_sha256(index.path)
    if digest == finding.index.manifest_sha256:
        out.append(Check("index unchanged", True, f"{index.path.name}: manifest SHA-256 matches"))
    else:
        out.append(
            Check(
                "index unchanged",
                False,
                f"{index.path.name}'s manifest is not the recorded one (images added, removed or "
                f"recalibrated since; {index.count:,} images now, {finding.index.count:,} then)",
                "index changed",
            )
        )
    m = finding.match
    try:
        row = row_of(index, m.id)
    except FindingError:
        out.append(
            Check(
                "index holds the match",
                False,
                f"the index holds no training image #{m.id}",
                "index changed",
            )
        )
        return out
    stored = str(index.metadata["sha256"].iloc[row])
    if stored == m.sha256:
        out.append(Check("index holds the match", True, f"#{m.id} is the recorded file"))
    else:
        out.append(
            Check(
                "index holds the match",
                False,
                f"#{m.id} in the index is another image now",
                "index changed",
            )
        )
    if not m.file_available:
        out.append(Check("training file", True, "not readable when recorded: index hash used"))
        return out
    path = resolve_inside(index.file_path(row), index_roots(index))
    if path is None:
        out.append(
            Check(
                "training file",
                False,
                f"{Path(index.file_path(row)).name}: {OUTSIDE_REASON}, so it was not read",
                "missing",
            )
        )
        return out
    try:
        digest = sha256_file(path)
    except OSError:
        out.append(
            Check(
                "training file",
                False,
                f"{Path(index.file_path(row)).name} cannot be read",
                "missing",
            )
        )
        return out
    if digest == m.sha256:
        out.append(
            Check("training file", True, f"{Path(index.file_path(row)).name}: SHA-256 matches")
        )
    else:
        out.append(
            Check(
                "training file",
                False,
                f"{Path(index.file_path(row)).name} has SHA-256 {digest[:16]}…, the "
                f"report records {m.sha256[:16]}…",
                "file changed",
            )
        )
    return out


def _check_model(finding: Finding, embedder: Embedder) -> Check:
    now = embedder_identity(embedder)
    then = finding.embedder
    keys = ("name", "identity", "weights_sha256")
    differ = [k for k in keys if now.get(k) != then.get(k)]
    if not differ:
        return Check("same model", True, f"{now['name']}, weights SHA-256 matches")
    return Check(
        "same model",
        False,
        f"the index's model is {now['name']} (weights {str(now['weights_sha256'])[:16]}…), the "
        f"report records {then.get('name')} (weights {str(then.get('weights_sha256'))[:16]}…)",
        "different model",
    )


def _close(a: float | None, b: float | None, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tolerance


def _check_scores(
    finding: Finding, index: ReplicaIndex, embedder: Embedder, data: bytes, tolerance: float
) -> Check:
    s, m = finding.settings, finding.match
    cal = calibration_at(index, float(s["false_alarm_rate"]))
    try:
        result = search_query(
            index,
            finding.query.name,
            data,
            top_k=int(s["top_k"]),
            calibration=cal,
            regions=bool(s.get("regions")),
            embedder=embedder,
        )
        shown = focus(result, m.id, cal)
    except FindingError as exc:
        return Check("scores", False, str(exc), "scores differ")
    top = shown.matches[0]
    pairs: list[tuple[str, Any, Any, float]] = [
        ("raw cosine", m.score, top.score, tolerance),
        ("calibrated", m.calibrated, top.calibrated, tolerance),
        ("alignment", m.alignment, top.alignment, tolerance),
        ("null percentile", m.null_percentile, shown.null_percentile, 100 * tolerance),
    ]
    differ = [
        f"{name} {then if then is None else round(then, 6)} recorded, "
        f"{now if now is None else round(now, 6)} now"
        for name, then, now, tol in pairs
        if not _close(then, now, tol)
    ]
    if shown.verdict != m.verdict:
        differ.append(f"verdict {m.verdict} recorded, {shown.verdict} now")
    if differ:
        return Check("scores", False, "; ".join(differ), "scores differ")
    return Check(
        "scores",
        True,
        f"raw {top.score:.4f}, calibrated {top.calibrated:+.4f}, "
        f"verdict {shown.verdict}: the same (to {tolerance:g})",
    )


def verify_finding(
    finding: Finding,
    *,
    index_path: str | os.PathLike[str] | None = None,
    query_path: str | os.PathLike[str] | None = None,
    tolerance: float = TOLERANCE,
    cache: dict[str, tuple[ReplicaIndex, Embedder]] | None = None,
) -> FindingCheck:
    """Every check of one finding (see the module). ``index_path``: the index on this
    machine (default: the recorded path); ``cache``: indexes and models opened so far."""
    cache = {} if cache is None else cache
    out = FindingCheck(finding.title)
    data, where = _query_bytes(finding, Path(query_path) if query_path else None)
    out.checks.append(_check_query(finding, data, where))
    path = str(index_path or finding.index.path)
    try:
        if path not in cache:
            index = open_index(path)
            cache[path] = (index, index.create_embedder())
        index, embedder = cache[path]
    except (IndexNotFound, OSError) as exc:
        out.checks.append(
            Check(
                "index unchanged",
                False,
                f"the index {Path(path).name} cannot be opened: {exc}; point at it with --index",
                "missing",
            )
        )
        return out
    except (EmbedderUnavailable, EmbedderMismatch) as exc:
        out.checks.append(Check("same model", False, str(exc), "different model"))
        return out
    out.checks += _check_index(finding, index)
    out.checks.append(_check_model(finding, embedder))
    if data is not None:
        out.checks.append(_check_scores(finding, index, embedder, data, tolerance))
    return out


def index_for(
    finding: Finding, index_paths: Sequence[str | os.PathLike[str]], *, one_index: bool
) -> str | os.PathLike[str] | None:
    """Which of the checker's ``index_paths`` stands for the finding's index: the one whose
    folder has the recorded index's name; else, when the report used ``one_index`` and one
    path is given, that one; else None (the recorded path)."""
    named = [p for p in index_paths if Path(p).name == finding.index.name]
    if named:
        return named[0]
    return index_paths[0] if one_index and len(index_paths) == 1 else None


def verify_document(
    path: str | os.PathLike[str],
    *,
    index_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    query_path: str | os.PathLike[str] | None = None,
    tolerance: float = TOLERANCE,
) -> VerifyReport:
    """Verify every finding of a report (.pdf, .html or .json), the most-copied generations
    of its scans included. ``index_path``: the index folder(s) on this machine, matched to
    findings by folder name (:func:`index_for`); ``query_path``: the query file, for a
    report of one finding.

    Raises:
        DocumentError: not a Replica report; OSError: the file cannot be read.
    """
    document = read_document(path)
    report = VerifyReport(source=Path(path).name)
    cache: dict[str, tuple[ReplicaIndex, Embedder]] = {}
    if index_path is None:
        paths: list[str | os.PathLike[str]] = []
    elif isinstance(index_path, str | os.PathLike):
        paths = [index_path]
    else:
        paths = list(index_path)
    findings = list(document.findings) + [f for s in document.scans for f in s.findings]
    one_index = len({f.index.path for f in findings}) == 1
    for finding in findings:
        report.findings.append(
            verify_finding(
                finding,
                index_path=index_for(finding, paths, one_index=one_index),
                query_path=query_path if len(findings) == 1 else None,
                tolerance=tolerance,
                cache=cache,
            )
        )
    return report
