"""The paper's replication measurement for a set of generated images.

For each generation: its top-1 training match with raw and calibrated similarity.
For the set: the share flagged as copies (calibrated verdict), the share whose raw
similarity exceeds the paper's threshold (0.5 for SSCD), and the mean, median and
95th percentile of top-1 similarity. The same statistics for a reference: real
held-out images if given, otherwise each training image against its nearest *other*
training image (the paper's baseline).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lib.calibration import NEIGHBOURS, Calibration, background, families
from lib.embedders import Embedder
from lib.image_files import list_folder
from lib.images import SkippedFile, display_path
from lib.index import ReplicaIndex
from lib.progress import ProgressCallback
from lib.search import QueryResult, search_files
from lib.verdict.copy_tests import Sensitivity

log = logging.getLogger(__name__)

PAPER_THRESHOLD = 0.5
"""Raw SSCD similarity above which the paper counts a generation as replicated."""

TRAINING_BASELINE_SAMPLE = 5000
BASELINE_NAME = "training vs training"
"""The reference of a scan without a held-out set (:func:`training_baseline`)."""
"""At most this many training images form the training-vs-training baseline."""


@dataclass
class ReplicationStats:
    """Distribution summary of top-1 similarities for one set of images.

    Similarities are raw cosines (-1..1) unless named ``calibrated``; rates are 0..1.
    """

    name: str
    n: int
    copy_rate: float
    rate_above_threshold: float
    threshold: float
    mean_top1: float
    median_top1: float
    p95_top1: float
    mean_calibrated: float
    p95_calibrated: float
    top1: list[float] = field(default_factory=list, repr=False)
    calibrated: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """The statistics without the per-image lists."""
        data = asdict(self)
        data.pop("top1")
        data.pop("calibrated")
        return data


@dataclass
class ScanReport:
    """Result of :func:`scan`: per-generation results and the set statistics."""

    index: str
    embedder: str
    generated: ReplicationStats
    reference: ReplicationStats
    results: list[QueryResult]
    skipped: list[SkippedFile]
    files: dict[str, str] = field(default_factory=dict)
    sensitivity: Sensitivity | None = None
    """The copy verdict's measured sensitivity at the scan's operating point
    (:mod:`lib.verdict.copy_tests`); None when the index's was not measured."""

    def sensitivity_sentence(self) -> str:
        """What the copy rate may miss, in words ("" when not measured)."""
        if self.sensitivity is None:
            return ""
        return (
            "The copy verdict behind the copy rate is not exhaustive. "
            + self.sensitivity.error_rates()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "embedder": self.embedder,
            "measured_sensitivity": (
                None if self.sensitivity is None else self.sensitivity.to_dict()
            ),
            "generated": self.generated.summary(),
            "reference": self.reference.summary(),
            "skipped": [s.to_dict() for s in self.skipped],
            "files": self.files,
            "results": [r.to_dict() for r in self.results],
        }


def stats_from_scores(
    name: str,
    raw: np.ndarray,
    calibrated: np.ndarray,
    calibration: Calibration,
    threshold: float = PAPER_THRESHOLD,
) -> ReplicationStats:
    """Summarise top-1 raw (n,) and calibrated (n,) similarities."""
    raw = np.asarray(raw, dtype=np.float64)
    calibrated = np.asarray(calibrated, dtype=np.float64)
    n = int(raw.size)
    if n == 0:
        return ReplicationStats(name, 0, 0.0, 0.0, threshold, 0.0, 0.0, 0.0, 0.0, 0.0)
    return ReplicationStats(
        name=name,
        n=n,
        copy_rate=float(
            np.mean(
                (calibrated >= calibration.copy_threshold)
                | (raw >= calibration.identical_threshold)
            )
        ),
        rate_above_threshold=float(np.mean(raw > threshold)),
        threshold=threshold,
        mean_top1=float(raw.mean()),
        median_top1=float(np.median(raw)),
        p95_top1=float(np.percentile(raw, 95)),
        mean_calibrated=float(calibrated.mean()),
        p95_calibrated=float(np.percentile(calibrated, 95)),
        top1=[float(x) for x in raw],
        calibrated=[float(x) for x in calibrated],
    )


def training_baseline(
    index: ReplicaIndex,
    calibration: Calibration,
    sample: int = TRAINING_BASELINE_SAMPLE,
    seed: int = 0,
) -> ReplicationStats:
    """Each (sampled) training image against its nearest training image outside its own
    family (:func:`lib.calibration.families`: its near-identical variants, such as an
    emoji's skin tones), as the calibration's null is measured: what an image of this
    collection meets when nothing was copied. Counting siblings would call most of a
    look-alike collection copies of itself (48% of OpenMoji)."""
    n = index.count
    if n < 2:
        return stats_from_scores(BASELINE_NAME, np.array([]), np.array([]), calibration)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    vectors: Any = index.table if index.table is not None else index.vectors()
    family = families(index.faiss, vectors, rows, calibration.family_cosine)
    k = min(n, NEIGHBOURS + max(len(f) for f in family) + 16)
    sims, ids = index.search_vectors(index.get_vectors(rows), k)
    top, cal = [], []
    for j in range(len(rows)):
        outside = np.array(
            [i >= 0 and int(i) not in family[j] for i in ids[j]], dtype=bool
        ) & np.isfinite(sims[j])
        s, nb = sims[j][outside][:NEIGHBOURS], ids[j][outside][:NEIGHBOURS]
        if s.size < 2:
            continue
        bg = background(s[None, :], index.get_vectors(nb)[None, :, :], calibration)[0]
        top.append(float(s[0]))
        cal.append(float(s[0] - bg))
    return stats_from_scores(BASELINE_NAME, np.array(top), np.array(cal), calibration)


def scan(
    index: ReplicaIndex,
    generated: str | os.PathLike[str] | list[Path],
    *,
    reference: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    embedder: Embedder | None = None,
    calibration: Calibration | None = None,
    threshold: float = PAPER_THRESHOLD,
    progress: ProgressCallback | None = None,
) -> ScanReport:
    """Measure replication of a folder (or list) of generated images against an index.

    Args:
        reference: folder of real held-out images; without it the training set
            against itself is the reference.
        out_dir: where to write ``results.csv``, ``report.json`` and ``histogram.png``.
        threshold: raw-similarity threshold for ``rate_above_threshold``.

    Raises:
        FileNotFoundError: a folder is missing. ValueError: no generated image is readable.
    """
    cal = calibration or index.calibration
    model = embedder or index.create_embedder()
    gen_files, not_images = _files(generated)
    if not gen_files:
        raise ValueError(f"no image files found in {generated}{_left_out(not_images)}")
    results = search_files(
        index, gen_files, embedder=model, top_k=1, calibration=cal, progress=progress
    )
    ok = [r for r in results if r.error is None]
    if not ok:
        raise ValueError(f"none of the {len(gen_files)} generated file(s) could be read")
    skipped = not_images + [
        SkippedFile(r.query, r.error or "") for r in results if r.error is not None
    ]
    gen_stats = stats_from_scores(
        "generated vs training",
        np.array([r.raw_score for r in ok]),
        np.array([r.score for r in ok]),
        cal,
        threshold,
    )
    if reference is not None:
        ref_files, _ = _files(reference)
        ref_results = [
            r
            for r in search_files(
                index, ref_files, embedder=model, top_k=1, calibration=cal, progress=progress
            )
            if r.error is None
        ]
        ref_stats = stats_from_scores(
            "held-out vs training",
            np.array([r.raw_score for r in ref_results]),
            np.array([r.score for r in ref_results]),
            cal,
            threshold,
        )
    else:
        ref_stats = training_baseline(index, cal)
        ref_stats.threshold = threshold
        ref_stats.rate_above_threshold = float(np.mean(np.array(ref_stats.top1) > threshold))
    report = ScanReport(
        index=str(index.path),
        embedder=index.embedder_name,
        generated=gen_stats,
        reference=ref_stats,
        results=results,
        skipped=skipped,
        sensitivity=cal.measured_sensitivity,
    )
    if out_dir is not None:
        write_report(report, Path(out_dir))
    return report


def _files(source: str | os.PathLike[str] | list[Path]) -> tuple[list[Path], list[SkippedFile]]:
    """The images of a list or a folder, and the folder's other files with their reasons."""
    if isinstance(source, list):
        return [Path(p) for p in source], []
    listing = list_folder(source)
    return listing.images, listing.skipped


def _left_out(skipped: list[SkippedFile]) -> str:
    """`` (left out: a.heic: HEIC/HEIF: ...; ...)`` for a message, or ''."""
    if not skipped:
        return ""
    reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f" (left out: {reasons}{more})"


def write_report(report: ScanReport, out_dir: Path) -> None:
    """Write results.csv (one row per generation), report.json and histogram.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "query",
                "verdict",
                "raw_top1",
                "calibrated_top1",
                "null_percentile",
                "rule",
                "alignment",
                "match_id",
                "match_path",
                "match_caption",
                "error",
            ]
        )
        for r in report.results:
            top = r.top
            writer.writerow(
                [
                    display_path(r.query),
                    r.verdict if r.error is None else "",
                    f"{r.raw_score:.6f}" if r.error is None else "",
                    f"{r.score:.6f}" if r.error is None else "",
                    "" if r.null_percentile is None else f"{r.null_percentile:.2f}",
                    r.rule or "",
                    "" if r.alignment is None else f"{r.alignment:.6f}",
                    top.id if top else "",
                    display_path(top.path) if top else "",
                    top.caption if top else "",
                    r.error or "",
                ]
            )
    hist_path = out_dir / "histogram.png"
    save_histogram([report.generated, report.reference], hist_path)
    report.files = {
        "csv": str(csv_path),
        "histogram": str(hist_path),
        "json": str(out_dir / "report.json"),
    }
    (out_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")


def save_histogram(stats: list[ReplicationStats], path: Path, title: str = "") -> None:
    """Overlaid density histograms of top-1 raw similarity, one per set, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    bins = np.linspace(-0.1, 1.0, 45).tolist()
    for s in stats:
        if s.n:
            ax.hist(
                s.top1,
                bins=bins,
                density=True,
                alpha=0.5,
                label=f"{s.name} (n={s.n}, p95={s.p95_top1:.2f})",
            )
    threshold = stats[0].threshold if stats else PAPER_THRESHOLD
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xlabel("top-1 similarity to the training set (raw cosine)")
    ax.set_ylabel("density")
    ax.set_title(title or "Replication: top-1 similarity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
