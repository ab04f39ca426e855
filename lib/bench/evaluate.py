"""Run embedders on a benchmark made by :mod:`lib.bench.generator` and score them.

For each embedder: embed the references into a temporary index with
:func:`lib.index.build_index` (so calibration is fitted exactly as in the product), embed
the queries, rank them with :func:`lib.search.rank_vectors`, and compute
:mod:`lib.bench.metrics` with raw and with calibrated scores, over all queries and per
query kind (a kind's copies plus every distractor). Throughput is the query embedding rate
(decode + preprocessing + model) measured in the run, after the model is loaded.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lib.allowed_paths import restrict
from lib.bench.manifest import DISTRACTOR, BenchmarkManifest, load_manifest
from lib.bench.metrics import DEFAULT_KS, RankedQuery, compute_metrics
from lib.bench.report import BenchReport, EmbedderResult, KindMetrics, QueryOutcome
from lib.embedders import EMBEDDERS, EmbedderUnavailable, create_embedder
from lib.embedding import embed_files
from lib.index import build_index
from lib.progress import ProgressCallback
from lib.regions import DEFAULT_SHORTLIST
from lib.search import QueryResult, rank_vectors, rerank_results

log = logging.getLogger(__name__)

DEFAULT_BENCH_EMBEDDERS = ("sscd", "sscd-distilled", "pixels", "efficientnet-lite0")
SCORES = ("raw", "calibrated")


def _offset(
    progress: ProgressCallback | None, start: int, overall: int, label: str
) -> ProgressCallback | None:
    """A callback mapping one stage's ``done`` onto the whole run: (start + done, overall)."""
    if progress is None:
        return None
    outer = progress

    def callback(done: int, total: int, message: str = "") -> None:
        outer(start + done, overall, label)

    return callback


def evaluate(
    benchmark_dir: str | os.PathLike[str],
    embedders: Sequence[str] = DEFAULT_BENCH_EMBEDDERS,
    *,
    top_k: int = 10,
    progress: ProgressCallback | None = None,
    regions: bool = False,
) -> BenchReport:
    """Score each embedder on the benchmark; an embedder that cannot be created here
    (missing package or weights) is listed in ``report.unavailable`` instead.
    ``regions``: also score each embedder with region re-ranking (:mod:`lib.regions`)
    as a row named "<embedder>+regions"; its ``query_seconds`` adds the re-ranking.

    Raises:
        BenchmarkNotFound: no manifest in ``benchmark_dir``.
        EmbedderUnavailable: a name that is not registered (``timm:<model>`` is refused:
            it needs a weights file), or no embedder could be created at all.
        ValueError: ``top_k`` below 1 or no embedder named.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if not embedders:
        raise ValueError("name at least one embedder")
    unknown = [name for name in embedders if name not in EMBEDDERS]
    if unknown:
        raise EmbedderUnavailable(
            f"unknown embedder(s) {', '.join(unknown)}; choose from {', '.join(EMBEDDERS)}"
        )
    root = Path(benchmark_dir).expanduser().resolve()
    manifest = load_manifest(root)
    per_embedder = len(manifest.references) + len(manifest.queries)
    total = per_embedder * len(embedders)
    results, unavailable = [], {}
    for i, name in enumerate(embedders):
        sub = _offset(progress, i * per_embedder, total, name)
        try:
            results.extend(_run_one(root, manifest, name, top_k, sub, regions))
        except EmbedderUnavailable as exc:
            log.warning("skipping embedder %s: %s", name, exc)
            unavailable[name] = str(exc)
    if not results:
        raise EmbedderUnavailable(
            "no embedder could run: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items())
        )
    return BenchReport(
        benchmark=str(root),
        params=manifest.params,
        top_k=top_k,
        kinds=manifest.kinds(),
        results=results,
        unavailable=unavailable,
    )


def _run_one(
    root: Path,
    manifest: BenchmarkManifest,
    name: str,
    top_k: int,
    progress: ProgressCallback | None,
    regions: bool = False,
) -> list[EmbedderResult]:
    model = create_embedder(name)
    ref_paths = [root / r.file for r in manifest.references]
    query_paths = [root / q.file for q in manifest.queries]
    with tempfile.TemporaryDirectory(prefix="replica-bench-") as tmp:
        started = time.perf_counter()
        built = build_index(
            ref_paths, Path(tmp) / "index", embedder=model, source="benchmark", progress=progress
        )
        ref_seconds = time.perf_counter() - started
        query_progress = _offset(progress, len(ref_paths), 0, name) if progress else None
        started = time.perf_counter()
        embedded = embed_files(query_paths, model, dedupe=False, progress=query_progress)
        query_seconds = time.perf_counter() - started
        labels = [r.path for r in embedded.records]
        k = max(top_k, DEFAULT_SHORTLIST) if regions else top_k
        ranked = rank_vectors(built.index, embedded.vectors, labels, top_k=k)
        calibration = built.index.calibration
        reranked, rerank_seconds = None, 0.0
        if regions:
            # the references were indexed from a list of files: read them in their folder
            restrict(built.index, lambda: (root,))
            started = time.perf_counter()
            reranked = rerank_results(built.index, model, ranked, None, top_k=top_k)
            rerank_seconds = time.perf_counter() - started
            log.info("%s+regions: %.1f ms per query", name, 1000 * rerank_seconds / len(labels))
        ranked = [replace(r, matches=r.matches[:top_k]) for r in ranked]
    ref_ids = {
        str(p.resolve()): r.file for p, r in zip(ref_paths, manifest.references, strict=True)
    }
    rows = [(name, ranked, query_seconds)]
    if reranked is not None:
        rows.append((f"{name}+regions", reranked, query_seconds + rerank_seconds))
    return [
        _embedder_result(
            row_name,
            model,
            built.index.count,
            ref_seconds,
            seconds,
            calibration,
            _outcomes(root, manifest, results, ref_ids),
            manifest,
            top_k,
            embedded.skipped,
        )
        for row_name, results, seconds in rows
    ]


def _embedder_result(
    name: str,
    model: Any,
    n_references: int,
    ref_seconds: float,
    query_seconds: float,
    calibration: Any,
    outcomes: list[QueryOutcome],
    manifest: BenchmarkManifest,
    top_k: int,
    skipped: list[Any],
) -> EmbedderResult:
    return EmbedderResult(
        name=name,
        description=model.config.description,
        dim=model.dim,
        n_references=n_references,
        n_queries=len(outcomes),
        reference_seconds=ref_seconds,
        query_seconds=query_seconds,
        calibration={
            "copy_threshold": calibration.copy_threshold,
            "similar_threshold": calibration.similar_threshold,
            "false_alarm_rate": calibration.false_alarm_rate,
            "null_sample": calibration.null_sample,  # 0: too few references to calibrate
        },
        overall=_metrics(outcomes, None, top_k),
        per_kind={k: _metrics(outcomes, k, top_k) for k in manifest.kinds()},
        queries=outcomes,
        skipped=[s.path for s in skipped],
    )


def _outcomes(
    root: Path, manifest: BenchmarkManifest, ranked: list[QueryResult], ref_ids: dict[str, str]
) -> list[QueryOutcome]:
    by_path = {str((root / q.file).resolve()): q for q in manifest.queries}
    out = []
    for result in ranked:
        q = by_path[result.query]
        ids = [ref_ids.get(str(Path(m.path).resolve()), m.path) for m in result.matches]
        out.append(
            QueryOutcome(
                file=q.file,
                kind=q.kind,
                source=q.source,
                candidates=tuple(ids),
                raw=tuple(m.score for m in result.matches),
                calibrated=tuple(m.calibrated for m in result.matches),
                verdict=result.verdict,
            )
        )
    return out


def _metrics(outcomes: list[QueryOutcome], kind: str | None, top_k: int) -> KindMetrics:
    """Metrics over every query (``kind`` None) or over one kind's copies plus every
    distractor; for "distractor" itself only the false alarms mean anything. Recall at
    1, 5, 10 and ``top_k``, as far as ``top_k`` reaches."""
    ks = sorted({k for k in DEFAULT_KS if k <= top_k} | {top_k})
    chosen = [o for o in outcomes if kind in (None, DISTRACTOR) or o.kind in (kind, DISTRACTOR)]
    by_score: dict[str, Any] = {}
    for score in SCORES:
        ranked = [
            RankedQuery(
                query=o.file,
                candidates=o.candidates,
                scores=o.raw if score == "raw" else o.calibrated,
                positives=frozenset([o.source]) if o.source else frozenset(),
            )
            for o in chosen
        ]
        by_score[score] = compute_metrics(ranked, ks=ks)
    copies = [o for o in chosen if o.source]
    distractors = [o for o in chosen if not o.source]
    flagged = [o for o in copies if o.verdict == "copy" and o.candidates[:1] == (o.source,)]
    return KindMetrics(
        raw=by_score["raw"],
        calibrated=by_score["calibrated"],
        n_copies=len(copies),
        n_distractors=len(distractors),
        copy_verdict_recall=len(flagged) / len(copies) if copies else 0.0,
        distractor_false_alarms=(
            sum(o.verdict == "copy" for o in distractors) / len(distractors) if distractors else 0.0
        ),
    )
