"""``python -m lib report`` and ``python -m lib verify`` (registered by :mod:`lib.cli`).

    report INDEX_DIR QUERY [--match ID] [--top-k 5] [--false-alarm-rate R] [--regions]
           --out FILE.pdf|FILE.html|FILE.json
    verify REPORT.(pdf|html|json) [--index INDEX_DIR]... [--query FILE]

``verify`` exits 0 only when every check passes, 1 when one differs, 2 for a file that is
not a Replica report.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_DIFFERS, EXIT_USAGE = 0, 1, 2


def cmd_report(args: argparse.Namespace) -> int:
    from lib.cli import UsageError, _open
    from lib.evidence.document import SUFFIXES, Document, write_document
    from lib.evidence.finding import FindingError, make_finding

    out = Path(args.out)
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out must end in {', '.join(SUFFIXES)}")
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if args.false_alarm_rate is not None and not 0.0 < args.false_alarm_rate < 1.0:
        raise UsageError("--false-alarm-rate must be between 0 and 1")
    query = Path(args.query).expanduser().resolve()
    if not query.is_file():
        raise UsageError(f"query image not found: {args.query}")
    index = _open(args.index_dir)
    try:
        finding = make_finding(
            index,
            query.name,
            query.read_bytes(),
            query_path=str(query),
            match_id=args.match,
            top_k=args.top_k,
            false_alarm_rate=args.false_alarm_rate,
            regions=args.regions,
        )
    except FindingError as exc:
        raise UsageError(str(exc)) from exc
    write_document(Document(title=f"Replica report: {finding.title}", findings=[finding]), out)
    m = finding.match
    print(
        f"{finding.query.name} -> training image #{m.id} ({m.caption or m.name}): "
        f"{m.verdict.upper()}, raw {m.score:.4f}, calibrated {m.calibrated:+.4f}"
    )
    if m.file_note:
        print(f"note: the report does not include the training picture: {m.file_note}")
    print(f"written: {out}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from lib.evidence.document import DocumentError
    from lib.evidence.verify import verify_document

    try:
        report = verify_document(args.report, index_path=args.index, query_path=args.query)
    except DocumentError as exc:
        print(f"error: {exc}")
        return EXIT_USAGE
    for line in report.lines():
        print(line)
    return EXIT_OK if report.ok else EXIT_DIFFERS


def register(sub: Any) -> None:
    """Add ``report`` and ``verify`` to the CLI's subcommands."""
    report = sub.add_parser(
        "report", help="a self-contained report (PDF, HTML or JSON) of one query's finding"
    )
    report.add_argument("index_dir")
    report.add_argument("query", help="the query image file")
    report.add_argument("--match", type=int, help="training image id (default: the top match)")
    report.add_argument("--top-k", type=int, default=5)
    report.add_argument("--false-alarm-rate", type=float, default=None)
    report.add_argument("--regions", action="store_true", help="match regions too")
    report.add_argument("--out", required=True, help="FILE.pdf, FILE.html or FILE.json")
    report.set_defaults(func=cmd_report)
    verify = sub.add_parser(
        "verify", help="re-run a report's findings and check files, index, model and scores"
    )
    verify.add_argument("report", help="REPORT.pdf, REPORT.html or REPORT.json")
    verify.add_argument(
        "--index",
        action="append",
        help="the index folder on this machine (default: the recorded path); repeat it for a "
        "case against several indexes, each matched to its findings by folder name",
    )
    verify.add_argument("--query", help="the query file (default: recorded path or embedded)")
    verify.set_defaults(func=cmd_verify)
