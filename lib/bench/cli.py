"""``python -m lib bench make|run``: make a synthetic copy-detection benchmark, score embedders.

Registered into the main parser by :func:`lib.cli._add_extensions`; exit codes as there
(0 success, 1 failure, 2 usage error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.progress import ProgressCallback, tqdm_progress


@contextlib.contextmanager
def _progress(args: argparse.Namespace, desc: str) -> Iterator[ProgressCallback | None]:
    if getattr(args, "quiet", False):
        yield None
        return
    with tqdm_progress(desc) as callback:
        yield callback


def cmd_bench_make(args: argparse.Namespace) -> int:
    from lib.bench.generator import NotEnoughImages, default_kinds, generate_benchmark
    from lib.cli import EXIT_OK, UsageError

    kinds = _split(args.kinds) if args.kinds else default_kinds()
    for flag, value, low in (
        ("--n-sources", args.n_sources, 1),
        ("--copies-per-source", args.copies_per_source or 1, 1),
        ("--n-distractors", args.n_distractors, 0),
        ("--min-size", args.min_size, 1),
    ):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    unknown = [k for k in kinds if k not in default_kinds()]
    if unknown:
        raise UsageError(f"unknown --kinds {unknown}; choose from {','.join(default_kinds())}")
    try:
        with _progress(args, "generating") as progress:
            manifest = generate_benchmark(
                args.images_dir,
                args.out,
                n_sources=args.n_sources,
                copies_per_source=args.copies_per_source,
                n_distractors=args.n_distractors,
                backgrounds_dir=args.backgrounds,
                seed=args.seed,
                kinds=kinds,
                min_size=args.min_size,
                overwrite=args.force,
                progress=progress,
            )
    except NotEnoughImages as exc:
        raise UsageError(str(exc)) from exc
    n_distractors = sum(q.source is None for q in manifest.queries)
    print(
        f"benchmark {Path(args.out).resolve()}: {len(manifest.references)} references, "
        f"{len(manifest.queries) - n_distractors} copies ({len(kinds)} kinds), "
        f"{n_distractors} distractors"
    )
    return EXIT_OK


def cmd_bench_run(args: argparse.Namespace) -> int:
    from lib.bench.evaluate import evaluate
    from lib.cli import EXIT_OK, UsageError

    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    embedders = _split(args.embedders)
    if not embedders:
        raise UsageError("--embedders names no embedder")
    with _progress(args, "embedding") as progress:
        report = evaluate(
            args.benchmark_dir,
            embedders,
            top_k=args.top_k,
            progress=progress,
            regions=args.regions,
        )
    out = Path(args.out) if args.out else Path(args.benchmark_dir) / "results"
    report.write(out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK
    print(report.markdown())
    for name, reason in report.unavailable.items():
        print(f"\nnot run: {name}: {reason}")
    print(f"\nwritten: {', '.join(sorted(report.files.values()))}")
    return EXIT_OK


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: Any) -> None:
    """Add ``bench make`` and ``bench run`` to the main parser's subcommands."""
    from lib.bench.evaluate import DEFAULT_BENCH_EMBEDDERS
    from lib.bench.generator import DEFAULT_MIN_SIZE

    bench = subparsers.add_parser(
        "bench", help="synthetic copy-detection benchmark: make one, score embedders on it"
    )
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    make = bsub.add_parser(
        "make", help="references, edited and pasted copies, distractors from an image folder"
    )
    make.add_argument("images_dir")
    make.add_argument("--out", required=True, help="benchmark folder to write")
    make.add_argument("--n-sources", type=int, default=60, help="references (default 60)")
    make.add_argument(
        "--copies-per-source", type=int, default=None, help="default: one copy of each kind"
    )
    make.add_argument("--n-distractors", type=int, default=60, help="default 60")
    make.add_argument("--backgrounds", help="images to paste into (default: unused images)")
    make.add_argument("--kinds", help="comma-separated subset of the edits, segmix, cutmix")
    make.add_argument("--min-size", type=int, default=DEFAULT_MIN_SIZE, help="short side, px")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--force", action="store_true", help="replace an existing --out folder")
    make.set_defaults(func=cmd_bench_make)

    run = bsub.add_parser("run", help="score embedders on a benchmark: table, JSON, PR curves")
    run.add_argument("benchmark_dir")
    run.add_argument(
        "--embedders",
        default=",".join(DEFAULT_BENCH_EMBEDDERS),
        help="comma-separated registry names (default %(default)s)",
    )
    run.add_argument("--top-k", type=int, default=10)
    run.add_argument("--out", help="results folder (default BENCHMARK_DIR/results)")
    run.add_argument("--json", action="store_true", help="print results.json")
    run.add_argument(
        "--regions",
        action="store_true",
        help="also score each embedder with region re-ranking (rows '<embedder>+regions')",
    )
    run.set_defaults(func=cmd_bench_run)
