"""A replication scan as a report section: the histogram, the rates with their meaning, the
most-copied generations beside their matches (each a reproducible :class:`Finding`), the
identities and the command that runs the scan again."""

from __future__ import annotations

import base64
import shlex
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lib.embedders import Embedder
from lib.evidence.finding import (
    Finding,
    FindingError,
    IndexRef,
    calibration_at,
    make_finding,
    now,
)
from lib.evidence.identity import embedder_identity, manifest_sha256, package_versions
from lib.index import ReplicaIndex
from lib.replication import ScanReport, save_histogram

MOST_COPIED = 6
"""Generations shown (and re-checked by ``verify``) beside their matches."""

RATE_MEANINGS = {
    "copy_rate": "Copy rate: the share of images whose top match is called a copy at the "
    "operating point (calibrated score or pixel alignment at or above the threshold).",
    "rate_above_threshold": "Share above raw 0.5: the measure of Somepalli et al. (CVPR "
    "2023), the share whose "
    "top-1 raw cosine is above 0.5 (it runs high on look-alike collections).",
    "mean_top1": "Mean top-1: the average raw cosine of each image to its closest training image.",
    "p95_top1": "95th percentile top-1: 95 in 100 images score at or under this raw cosine.",
}


@dataclass
class ScanRecord:
    """The reproducible record of one replication scan.

    ``generated`` and ``reference``: the statistics of :class:`lib.replication.
    ReplicationStats` (rates 0..1, cosines -1..1) without the per-image lists; ``findings``:
    the most-copied generations; ``pictures``: ``histogram`` as base64 PNG.
    """

    created: str
    index: IndexRef
    embedder: dict[str, Any]
    settings: dict[str, Any]
    generated: dict[str, Any]
    reference: dict[str, Any]
    thresholds: dict[str, float]
    skipped: int
    findings: list[Finding]
    versions: dict[str, str]
    pictures: dict[str, str] = field(default_factory=dict, repr=False)
    sensitivity: dict[str, Any] = field(default_factory=dict)
    """The copy verdict's measured sensitivity at the scan's operating point
    (:meth:`lib.verdict.copy_tests.Sensitivity.to_dict`; empty: not measured)."""
    sensitivity_note: str = ""
    """The same in words: the known error rates (empty: not measured)."""

    def command(self, out: str = "scan-report.pdf") -> str:
        """The command that runs the scan again and writes its report."""
        args = ["python", "-m", "lib", "scan", self.index.path, self.settings["generated"]]
        if self.settings.get("reference"):
            args += ["--reference", str(self.settings["reference"])]
        args += ["--false-alarm-rate", str(self.settings["false_alarm_rate"])]
        return shlex.join([*args, "--report", out])

    def readable_command(self, out: str = "scan-report.pdf") -> str:
        """:meth:`command` with folders by name, as a report's reader sees it."""
        from pathlib import PurePath

        text = self.command(out)
        for path in (self.index.path, self.settings["generated"], self.settings.get("reference")):
            if path:
                text = text.replace(shlex.quote(str(path)), shlex.quote(PurePath(path).name), 1)
        return text

    def to_dict(self, *, pictures: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["findings"] = [f.to_dict(pictures=pictures) for f in self.findings]
        data["command"] = self.command()
        if not pictures:
            data.pop("pictures")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanRecord:
        try:
            return cls(
                created=str(data["created"]),
                index=IndexRef(**data["index"]),
                embedder=dict(data["embedder"]),
                settings=dict(data["settings"]),
                generated=dict(data["generated"]),
                reference=dict(data["reference"]),
                thresholds={k: float(v) for k, v in data["thresholds"].items()},
                skipped=int(data.get("skipped", 0)),
                findings=[Finding.from_dict(f) for f in data.get("findings", [])],
                versions=dict(data.get("versions", {})),
                pictures=dict(data.get("pictures") or {}),
                sensitivity=dict(data.get("sensitivity") or {}),
                sensitivity_note=str(data.get("sensitivity_note") or ""),
            )
        except (KeyError, TypeError) as exc:
            raise FindingError(f"the scan's record is incomplete or damaged: {exc}") from exc


def _histogram_b64(report: ScanReport) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "histogram.png"
        save_histogram([report.generated, report.reference], path)
        return base64.b64encode(path.read_bytes()).decode("ascii")


def make_scan_record(
    index: ReplicaIndex,
    report: ScanReport,
    *,
    generated: str,
    reference: str | None = None,
    false_alarm_rate: float | None = None,
    embedder: Embedder | None = None,
    most_copied: int = MOST_COPIED,
) -> ScanRecord:
    """The record of ``report`` (a scan of the folder ``generated`` against ``index``),
    with the ``most_copied`` generations of highest calibrated top-1 made into findings.

    Raises:
        EmbedderUnavailable: the model or its weights are missing.
    """
    model = embedder or index.create_embedder()
    cal = calibration_at(index, false_alarm_rate)
    measured = cal.measured_sensitivity
    ranked = sorted(
        (r for r in report.results if r.error is None and r.matches),
        key=lambda r: r.score,
        reverse=True,
    )
    findings = []
    for result in ranked[:most_copied]:
        path = Path(result.query)
        try:
            findings.append(
                make_finding(
                    index,
                    path.name,
                    path.read_bytes(),
                    query_path=str(path),
                    false_alarm_rate=cal.false_alarm_rate,
                    embedder=model,
                )
            )
        except (OSError, FindingError):
            continue  # a generation removed since the scan: left out of the gallery
    return ScanRecord(
        created=now(),
        index=IndexRef(
            name=index.path.name,
            path=str(index.path),
            manifest_sha256=manifest_sha256(index.path),
            count=index.count,
            sources=list(index.manifest.sources),
        ),
        embedder=embedder_identity(model),
        settings={
            "generated": str(generated),
            "reference": str(reference) if reference else "",
            "false_alarm_rate": float(cal.false_alarm_rate),
        },
        generated=report.generated.summary(),
        reference=report.reference.summary(),
        thresholds={
            "copy": float(cal.copy_threshold),
            "identical": float(cal.identical_threshold),
            "paper": float(report.generated.threshold),
        },
        skipped=len(report.skipped),
        findings=findings,
        versions=package_versions(),
        pictures={"histogram": _histogram_b64(report)},
        sensitivity={} if measured is None else measured.to_dict(),
        sensitivity_note="" if measured is None else measured.error_rates(),
    )
