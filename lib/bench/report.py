"""Benchmark results: dataclasses, a Markdown table, JSON, a per-query CSV and
precision-recall plots. Produced by :func:`lib.bench.evaluate.evaluate`."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.bench.manifest import DISTRACTOR
from lib.bench.metrics import RetrievalMetrics

TABLE_FILE, RESULTS_FILE, PER_QUERY_FILE = "table.md", "results.json", "per_query.csv"
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
TAB10 += ["#bcbd22", "#17becf"]


@dataclass(frozen=True)
class QueryOutcome:
    """One query's top-k: reference files, raw and calibrated scores, the product verdict."""

    file: str
    kind: str
    source: str | None
    candidates: tuple[str, ...]
    raw: tuple[float, ...]
    calibrated: tuple[float, ...]
    verdict: str

    @property
    def source_rank(self) -> int | None:
        """1-based rank of the source among the candidates; None if absent or a distractor."""
        if self.source is None or self.source not in self.candidates:
            return None
        return self.candidates.index(self.source) + 1


@dataclass
class KindMetrics:
    """Metrics of a group of queries with raw and with calibrated scores.

    ``copy_verdict_recall``: share of copies whose verdict is "copy" with the right top-1
    (the product's operating point: the index's copy threshold). ``distractor_false_alarms``:
    share of distractors whose verdict is "copy". Both 0..1.
    """

    raw: RetrievalMetrics
    calibrated: RetrievalMetrics
    n_copies: int
    n_distractors: int
    copy_verdict_recall: float
    distractor_false_alarms: float

    def to_dict(self, curve_points: int = 0) -> dict[str, Any]:
        return {
            "n_copies": self.n_copies,
            "n_distractors": self.n_distractors,
            "copy_verdict_recall": round(self.copy_verdict_recall, 6),
            "distractor_false_alarms": round(self.distractor_false_alarms, 6),
            "raw": self.raw.to_dict(curve_points),
            "calibrated": self.calibrated.to_dict(curve_points),
        }


@dataclass
class EmbedderResult:
    """One embedder on the benchmark. Seconds are wall-clock; ``throughput`` in images/s."""

    name: str
    description: str
    dim: int
    n_references: int
    n_queries: int
    reference_seconds: float
    query_seconds: float
    calibration: dict[str, float]
    overall: KindMetrics
    per_kind: dict[str, KindMetrics]
    queries: list[QueryOutcome] = field(repr=False, default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Query images embedded per second (decode, preprocessing and model)."""
        return self.n_queries / self.query_seconds if self.query_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "dim": self.dim,
            "n_references": self.n_references,
            "n_queries": self.n_queries,
            "reference_seconds": round(self.reference_seconds, 3),
            "query_seconds": round(self.query_seconds, 3),
            "throughput_images_per_s": round(self.throughput, 2),
            "calibration": self.calibration,
            "overall": self.overall.to_dict(curve_points=200),
            "per_kind": {k: m.to_dict() for k, m in self.per_kind.items()},
            "skipped": self.skipped,
        }


@dataclass
class BenchReport:
    """Every embedder's results on one benchmark; ``unavailable``: name -> reason."""

    benchmark: str
    params: dict[str, Any]
    top_k: int
    kinds: list[str]
    results: list[EmbedderResult]
    unavailable: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "params": self.params,
            "top_k": self.top_k,
            "kinds": self.kinds,
            "embedders": [r.to_dict() for r in self.results],
            "unavailable": self.unavailable,
            "files": self.files,
        }

    def markdown(self) -> str:
        """The overall table and two per-kind tables (recall@1, calibrated uAP)."""
        return "\n".join([*_overall_table(self), "", *_kind_tables(self)])

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        """Write table.md, results.json, per_query.csv and PR-curve PNGs; returns the paths."""
        out = Path(out_dir).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        files = {"table": out / TABLE_FILE, "per_query": out / PER_QUERY_FILE}
        files.update(_plot_curves(self, out))
        self.files = {k: str(v) for k, v in files.items()}
        self.files["results"] = str(out / RESULTS_FILE)
        (out / TABLE_FILE).write_text(self.markdown() + "\n", encoding="utf-8")
        _write_per_query(self, out / PER_QUERY_FILE)
        (out / RESULTS_FILE).write_text(
            json.dumps(self.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8"
        )
        return dict(self.files)


def _f(value: float) -> str:
    return f"{value:.3f}"


def _overall_table(report: BenchReport) -> list[str]:
    lines = [
        "| embedder | dim | img/s | uAP raw | uAP calibrated | recall@P90 calibrated "
        f"| mAP | recall@1 | recall@{report.top_k} | copy verdicts | distractors flagged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.results:
        raw, cal = r.overall.raw, r.overall.calibrated
        lines.append(
            f"| {r.name} | {r.dim} | {r.throughput:.0f} | {_f(raw.micro_ap)} | "
            f"{_f(cal.micro_ap)} | {_f(cal.recall_at_precision)} | {_f(raw.mean_ap)} | "
            f"{_f(raw.recall_at[1])} | {_f(raw.recall_at[report.top_k])} | "
            f"{r.overall.copy_verdict_recall:.1%} | {r.overall.distractor_false_alarms:.1%} |"
        )
    return lines


def _kind_tables(report: BenchReport) -> list[str]:
    names = [r.name for r in report.results]
    header = "| kind | n | " + " | ".join(names) + " |"
    rule = "|---|---:|" + "---:|" * len(names)
    copy_kinds = [k for k in report.kinds if k != DISTRACTOR]
    out: list[str] = []
    for title, value in (
        ("recall@1 by kind", lambda m: m.raw.recall_at[1]),
        ("uAP (calibrated) by kind: the kind's copies and every distractor", _cal_uap),
    ):
        out += [f"**{title}**", "", header, rule]
        for kind in copy_kinds:
            n = report.results[0].per_kind[kind].n_copies
            cells = " | ".join(_f(value(r.per_kind[kind])) for r in report.results)
            out.append(f"| {kind} | {n} | {cells} |")
        out.append("")
    return out[:-1]


def _cal_uap(m: KindMetrics) -> float:
    return m.calibrated.micro_ap


def _write_per_query(report: BenchReport, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["embedder", "query", "kind", "source", "source_rank", "top1", "top1_raw",
             "top1_calibrated", "verdict"]
        )  # fmt: skip
        for r in report.results:
            for q in r.queries:
                writer.writerow(
                    [
                        r.name,
                        q.file,
                        q.kind,
                        q.source or "",
                        q.source_rank or "",
                        q.candidates[0] if q.candidates else "",
                        f"{q.raw[0]:.6f}" if q.raw else "",
                        f"{q.calibrated[0]:.6f}" if q.calibrated else "",
                        q.verdict,
                    ]
                )


def _plot_curves(report: BenchReport, out: Path) -> dict[str, Path]:
    """pr_raw.png and pr_calibrated.png (every embedder), pr_kinds_<embedder>.png."""
    from matplotlib.figure import Figure

    files: dict[str, Path] = {}
    for score in ("raw", "calibrated"):
        fig = Figure(figsize=(6, 4.5), dpi=110)
        ax = fig.subplots()
        for r in report.results:
            m = getattr(r.overall, score)
            ax.plot(m.curve.recall, m.curve.precision, label=f"{r.name} (uAP {m.micro_ap:.3f})")
        _style(ax, f"All queries, {score} scores")
        files[f"pr_{score}"] = out / f"pr_{score}.png"
        fig.savefig(files[f"pr_{score}"], bbox_inches="tight")
    for r in report.results:
        fig = Figure(figsize=(6, 4.5), dpi=110)
        ax = fig.subplots()
        ax.set_prop_cycle(color=[*TAB10, "#000000", "#999999"])
        for kind, km in r.per_kind.items():
            if kind != DISTRACTOR:
                c = km.calibrated.curve
                ax.plot(c.recall, c.precision, label=f"{kind} ({km.calibrated.micro_ap:.2f})")
        _style(ax, f"{r.name}: each kind + all distractors, calibrated")
        files[f"pr_kinds_{r.name}"] = out / f"pr_kinds_{r.name}.png"
        fig.savefig(files[f"pr_kinds_{r.name}"], bbox_inches="tight")
    return files


def _style(ax: Any, title: str) -> None:
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
