"""Command line: ``python -m lib COMMAND ...`` over the same library the app uses.

Exit codes: 0 success, 1 failure (nothing usable came out), 2 usage error (bad
arguments, missing folders, an index used with the wrong embedder, a damaged index file:
one line naming the file and what is wrong).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lib.progress import ProgressCallback, tqdm_progress

DEFAULT_INDEX_ROOT = Path("data/indexes")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """The command was called wrongly; exit code 2."""


def _print_json(data: Any) -> None:
    print(json.dumps(_printable(data), indent=2, ensure_ascii=False))


def _printable(data: Any) -> Any:
    """``data`` with every string valid Unicode: a path that is not valid UTF-8 (surrogate
    escapes) becomes its readable form, so that the JSON printed is valid UTF-8."""
    from lib.images import display_path, is_displayable

    if isinstance(data, str):
        return data if is_displayable(data) else display_path(data)
    if isinstance(data, dict):
        return {_printable(k): _printable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_printable(v) for v in data]
    return data


def _waiting(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _progress(args: argparse.Namespace, desc: str) -> Iterator[ProgressCallback | None]:
    if getattr(args, "quiet", False):
        yield None
        return
    with tqdm_progress(desc) as callback:
        yield callback


def _open(path: str) -> Any:
    from lib.index import open_index

    index = open_index(path)
    if index.recalibrated:
        why = (
            "its calibration was fitted on fewer images than it holds now (a write stopped "
            "before refitting it)"
            if index.calibration_stale
            else "it was calibrated by an older method"
        )
        print(
            f"note: {index.path.name}: {why}; its verdicts use a fresh calibration computed "
            f"now (store it with `python -m lib index calibrate {path}`)",
            file=sys.stderr,
        )
    return index


# ---------------------------------------------------------------- index commands
def cmd_index_build(args: argparse.Namespace) -> int:
    from lib.index import build_index

    with _progress(args, "embedding") as progress:
        result = build_index(
            args.images_dir,
            args.out,
            embedder=args.embedder,
            weights=args.weights,
            batch_size=args.batch_size,
            progress=progress,
            wait=not args.no_wait,
            on_wait=_waiting,
            resume=args.resume,
            engine=args.engine,
            address=args.address,
            workers=args.workers,
            memory=args.memory,
            segment_files=args.segment_size,
        )
    _print_skipped(result.skipped)
    print(result.summary())
    _learn(args, result)
    return EXIT_OK


def _learn(args: argparse.Namespace, written: Any) -> None:
    """Measure the verdict on copies of the index's own images when it is new or has
    changed by a tenth (:func:`lib.verdict.sensitivity.learn_after_write`), and say what
    was measured."""
    from lib.verdict.sensitivity import learn_after_write

    with _progress(args, "measuring") as progress:
        learned = learn_after_write(written, progress)
    if learned is not written:
        _print_sensitivity(learned.index)


def _print_sensitivity(index: Any) -> None:
    measured = index.calibration.measured_sensitivity
    if measured is None:
        print(
            f"{index.path.name}: the verdict's sensitivity was not measured (too few images, "
            "or its image files cannot be read)"
        )
        return
    print(
        f"measured on copies of its own images: at {measured.false_alarm_rate:.1%} false "
        f"alarms, {measured.edited.share:.0%} of {measured.edited.copies} edited copies and "
        f"{measured.pasted.share:.0%} of {measured.pasted.copies} pasted copies are caught"
    )


def cmd_index_add(args: argparse.Namespace) -> int:
    from lib.index import add_to_index

    with _progress(args, "embedding") as progress:
        result = add_to_index(
            args.index_dir,
            args.images_dir,
            batch_size=args.batch_size,
            progress=progress,
            wait=not args.no_wait,
            on_wait=_waiting,
            segment_files=args.segment_size,
        )
    _print_skipped(result.skipped)
    print(result.summary())
    _learn(args, result)
    return EXIT_OK


def cmd_index_import(args: argparse.Namespace) -> int:
    from lib.index.importer import import_embeddings

    with _progress(args, "importing") as progress:
        result = import_embeddings(
            args.embeddings_dir,
            args.out,
            embedder=args.embedder,
            weights=args.weights,
            progress=progress,
            wait=not args.no_wait,
            on_wait=_waiting,
            memory=args.memory,
        )
    _print_skipped(result.skipped)
    print(result.summary())
    return EXIT_OK


def cmd_index_compact(args: argparse.Namespace) -> int:
    from lib.index import compact_index

    with _progress(args, "compacting") as progress:
        index = compact_index(
            args.index_dir,
            memory=args.memory,
            progress=progress,
            wait=not args.no_wait,
            on_wait=_waiting,
        )
    m = index.manifest
    search = f"approximate ({m.faiss_type}, re-ranked exactly)" if m.ann else "exact"
    print(
        f"compacted {index.path.name}: {index.count:,} images in {len(m.segments)} "
        f"segment(s); search is {search}"
    )
    return EXIT_OK


def cmd_index_upgrade(args: argparse.Namespace) -> int:
    from lib.index import open_index, upgrade_index

    before = open_index(args.index_dir).manifest.format
    with _progress(args, "upgrading") as progress:
        index = upgrade_index(
            args.index_dir,
            memory=args.memory,
            progress=progress,
            wait=not args.no_wait,
            on_wait=_waiting,
        )
    if before == index.manifest.format:
        print(f"{index.path.name} is already in format {before}; nothing to do")
    else:
        print(
            f"upgraded {index.path.name} from format {before} to {index.manifest.format} "
            f"({index.count:,} images, calibration kept)"
        )
    return EXIT_OK


def cmd_index_info(args: argparse.Namespace) -> int:
    index = _open(args.index_dir)
    m = index.manifest
    info = {
        "path": str(index.path),
        "embedder": m.embedder,
        "dim": m.dim,
        "metric": m.metric,
        "faiss_type": m.faiss_type,
        "format": m.format,
        "segments": len(m.segments),
        "search": "approximate, re-ranked exactly" if m.ann else "exact",
        "count": index.count,
        "created": m.created,
        "updated": m.updated,
        "sources": m.sources,
        "skipped": m.skipped,
        "calibration": {
            k: v
            for k, v in index.calibration.to_dict().items()
            if k not in ("null_scores", "alignment_null", "evidence_null", "copy_tests")
        },
        "measured_sensitivity": {
            str(rate): (s.to_dict() if s is not None else None)
            for rate, s in _sensitivities(index.calibration).items()
        },
        "recalibrated_on_open": index.recalibrated,
        "calibration_stale": index.calibration_stale,
        "versions": m.versions,
    }
    if args.json:
        _print_json(info)
        return EXIT_OK
    cal = index.calibration
    print(f"index      {index.path}")
    print(f"embedder   {m.embedder_name} (dim {m.dim}, {m.metric}, {m.faiss_type})")
    print(f"images     {index.count}   skipped at build: {len(m.skipped)}")
    layout = (
        f"{len(m.segments)} segment(s)" if m.format >= 2 else "one file (upgrade: index upgrade)"
    )
    search = f"approximate ({m.faiss_type}), re-ranked exactly" if m.ann else "exact"
    print(f"format     {m.format}, {layout}; search {search}")
    print(f"created    {m.created}   updated: {m.updated}")
    print(f"sources    {', '.join(m.sources)}")
    print(
        f"verdicts   copy if calibrated >= {cal.copy_threshold:.3f} or raw >= "
        f"{cal.identical_threshold:.2f} "
        f"({cal.false_alarm_rate:.0%} false alarms on the index's null), "
        f"similar if >= {cal.similar_threshold:.3f}"
    )
    if not cal.is_fitted:
        print(
            "           too few images to calibrate: these are default thresholds, not "
            "measured on this collection"
        )
    if index.calibration_stale:
        fitted_rows = int(m.calibration.get("fitted_rows", 0))
        print(
            f"           stale: the stored calibration was fitted on {fitted_rows:,} images, "
            f"the index holds {index.count:,}; "
            "the figures above were refitted in memory. `index calibrate` (or the next "
            "write) stores a fresh one"
        )
    measured = _sensitivities(cal)
    if any(v is not None for v in measured.values()):
        first = next(v for v in measured.values() if v is not None)
        print(
            f"caught     copies of its own images caught ({first.edited.copies} edited, "
            f"{first.pasted.copies} pasted, made when it was calibrated):"
        )
        for rate, sens in measured.items():
            if sens is not None:
                print(
                    f"           at {rate:.1%} false alarms: {sens.edited.share:.0%} edited, "
                    f"{sens.pasted.share:.0%} pasted"
                )
    else:
        print("caught     not measured (`index calibrate` measures it)")
    for s in m.skipped[:20]:
        print(f"  skipped  {s['path']}: {s['reason']}")
    return EXIT_OK


OPERATING_POINTS = (0.005, 0.02, 0.05, 0.1)
"""The false-alarm rates the app offers; ``index info`` states the sensitivity at each."""


def _sensitivities(calibration: Any) -> dict[float, Any]:
    """The measured sensitivity at each of :data:`OPERATING_POINTS` (None: not measured)."""
    if not calibration.is_fitted:
        return dict.fromkeys(OPERATING_POINTS)
    return {
        rate: calibration.with_false_alarm_rate(rate).measured_sensitivity
        for rate in OPERATING_POINTS
    }


def cmd_index_calibrate(args: argparse.Namespace) -> int:
    from lib.index import calibrate_index

    with _progress(args, "calibrating") as progress:
        index = calibrate_index(
            args.index_dir, progress=progress, wait=not args.no_wait, on_wait=_waiting
        )
    cal = index.calibration
    print(
        f"calibrated {index.path.name}: {cal.null_sample:,} indexed images as the null "
        f"({len(cal.alignment_null):,} aligned); copy at calibrated >= "
        f"{cal.copy_threshold:+.3f}"
        + (f" or alignment >= {cal.alignment_threshold:.3f}" if cal.uses_alignment else "")
        + f" ({cal.false_alarm_rate:.1%} false alarms)"
        if cal.is_fitted
        else f"{index.path.name} has too few images to calibrate; default thresholds stored"
    )
    if cal.is_fitted:
        from lib.verdict.sensitivity import learn_sensitivity

        with _progress(args, "measuring") as progress:
            index = learn_sensitivity(
                args.index_dir, progress=progress, wait=not args.no_wait, on_wait=_waiting
            )
        _print_sensitivity(index)
    return EXIT_OK


def cmd_index_list(args: argparse.Namespace) -> int:
    """Every index under ROOT, opened: a damaged one is listed too, marked DAMAGED with
    why (``error`` in JSON, null for the others), and hides none of the others. Exit 0
    when at least one index opens (or there is none), 2 when every one found is damaged."""
    from lib.index import IndexError_, list_indexes, open_index

    rows: list[dict[str, Any]] = []
    for path in list_indexes(args.root):
        try:
            index = open_index(path)
        except (IndexError_, OSError, ValueError) as exc:
            rows.append({"path": str(path), "embedder": "", "count": None, "created": ""})
            rows[-1]["error"] = str(exc)
            continue
        rows.append(
            {
                "path": str(path),
                "embedder": index.embedder_name,
                "count": index.count,
                "created": index.manifest.created,
                "error": None,
            }
        )
    damaged = sum(1 for r in rows if r["error"])
    if args.json:
        _print_json(rows)
    elif not rows:
        print(f"no indexes under {args.root}")
    for r in rows if not args.json else []:
        if r["error"]:
            print(f"{r['path']}  DAMAGED: {r['error']}")
        else:
            print(f"{r['path']}  {r['embedder']}  {r['count']} images  {r['created']}")
    if damaged:
        print(f"{damaged} of {len(rows)} index(es) cannot be opened", file=sys.stderr)
    return EXIT_USAGE if rows and damaged == len(rows) else EXIT_OK


# ---------------------------------------------------------------- search, scan, duplicates
def _calibration(index: Any, false_alarm_rate: float | None) -> Any:
    if false_alarm_rate is None:
        return index.calibration
    if not 0.0 < false_alarm_rate < 1.0:
        raise UsageError("--false-alarm-rate must be between 0 and 1")
    return index.calibration.with_false_alarm_rate(false_alarm_rate)


def cmd_search(args: argparse.Namespace) -> int:
    from lib.images import expand_inputs
    from lib.search import search_files

    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    index = _open(args.index_dir)
    queries = expand_inputs(args.queries)
    if not queries:
        raise UsageError(f"no query images found in {' '.join(args.queries)}")
    with _progress(args, "searching") as progress:
        results = search_files(
            index,
            queries,
            top_k=args.top_k,
            calibration=_calibration(index, args.false_alarm_rate),
            progress=progress,
            regions=args.regions,
        )
    if args.json:
        _print_json([_with_urls(index, r.to_dict()) for r in results])
    else:
        for r in results:
            _print_result(r)
    return EXIT_OK if any(r.error is None for r in results) else EXIT_FAILURE


def _with_urls(index: Any, result: dict[str, Any]) -> dict[str, Any]:
    """A result's JSON with each match's ``url`` where the index stores one (imported)."""
    for match in result["matches"]:
        url = index.url(match["id"])
        if url is not None:
            match["url"] = url
    return result


def _print_result(r: Any) -> None:
    if r.error:
        print(f"\n{r.query}\n  ERROR: {r.error}")
        return
    percentile = "" if r.null_percentile is None else f", null percentile {r.null_percentile:.1f}"
    print(
        f"\n{r.query}\n  verdict: {r.verdict.upper()}  (calibrated {r.score:+.3f}, "
        f"raw {r.raw_score:.3f}{percentile})\n  {r.explanation()}"
    )
    for m in r.matches:
        caption = f'  "{m.caption}"' if m.caption else ""
        print(f"  #{m.rank}  raw {m.score:.3f}  calibrated {m.calibrated:+.3f}  {m.path}{caption}")
        if m.region_score is not None:
            print(
                f"       region {m.region_score:.3f} (global {m.global_score:.3f}): "
                f"query box {m.query_box} ~ match box {m.match_box}"
            )


def cmd_scan(args: argparse.Namespace) -> int:
    from lib.evidence.document import SUFFIXES
    from lib.replication import scan

    if args.report and Path(args.report).suffix.lower() not in SUFFIXES:
        raise UsageError(f"--report must end in {', '.join(SUFFIXES)}")
    index = _open(args.index_dir)
    with _progress(args, "scanning") as progress:
        report = scan(
            index,
            args.generated_dir,
            reference=args.reference,
            out_dir=args.out,
            calibration=_calibration(index, args.false_alarm_rate),
            progress=progress,
        )
    if args.report:
        _write_scan_report(index, report, args)
    if args.json:
        data = report.to_dict()
        data["results"] = [r.to_dict() for r in report.results]
        _print_json(data)
        return EXIT_OK
    print(f"\nreplication scan against {report.index} ({report.embedder})")
    header = f"{'set':24s} {'n':>6s} {'copies':>8s} {'>' + str(report.generated.threshold):>7s}"
    print(header + f" {'mean':>7s} {'median':>7s} {'p95':>7s}")
    for s in (report.generated, report.reference):
        print(
            f"{s.name:24s} {s.n:6d} {s.copy_rate:8.1%} {s.rate_above_threshold:7.1%} "
            f"{s.mean_top1:7.3f} {s.median_top1:7.3f} {s.p95_top1:7.3f}"
        )
    if report.sensitivity_sentence():
        print(report.sensitivity_sentence())
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable file(s)")
    for kind, path in report.files.items():
        print(f"{kind}: {path}")
    return EXIT_OK


def _write_scan_report(index: Any, report: Any, args: argparse.Namespace) -> None:
    """``scan --report FILE``: the scan as a report (:mod:`lib.evidence`), PDF, HTML or JSON."""
    from lib.evidence.document import Document, write_document
    from lib.evidence.scan_record import make_scan_record

    record = make_scan_record(
        index,
        report,
        generated=str(Path(args.generated_dir).resolve()),
        reference=str(Path(args.reference).resolve()) if args.reference else None,
        false_alarm_rate=args.false_alarm_rate,
    )
    title = f"Replica replication scan: {Path(args.generated_dir).name}"
    write_document(Document(title=title, scans=[record]), args.report)
    print(f"report: {args.report}", file=sys.stderr)


def cmd_duplicates(args: argparse.Namespace) -> int:
    from lib.duplicates import (
        DEFAULT_DUPLICATE_THRESHOLD,
        PIXEL_LIMIT,
        PIXELS_COSINE,
        PixelCheck,
        find_duplicates,
    )

    index = _open(args.index_dir)
    pixels = None
    if args.pixels == "on" or (args.pixels == "auto" and index.count <= PIXEL_LIMIT):
        pixels = PixelCheck(
            min_alignment=args.min_alignment,
            mirrors=not args.mirrors_differ,
            same_colours=not args.recoloured_are_duplicates,
        )
    if args.threshold is None:
        args.threshold = DEFAULT_DUPLICATE_THRESHOLD if pixels is None else PIXELS_COSINE
    if args.against:
        return _contamination(args, index, pixels)
    with _progress(args, "nearest neighbours") as progress:
        report = find_duplicates(
            index,
            threshold=args.threshold,
            progress=progress,
            keep=args.keep,
            k=args.k,
            pixels=pixels,
        )
    _write_report(report, args.out)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK
    rule = f"cosine >= {args.threshold}"
    if pixels is not None:
        rule += f" or pixels aligned at >= {pixels.min_alignment}"
    print(
        f"{len(report.clusters)} cluster(s) of near-duplicates at {rule} "
        f"among {report.n_images} images ({report.k} nearest searched per image); "
        f"{report.n_removable} removable ({report.removable_share:.0%}; kept: {report.keep_rule})"
    )
    if pixels is None and args.pixels == "auto":
        print(f"pixels not checked: more than {PIXEL_LIMIT:,} images (--pixels on checks them)")
    if report.removable_share > 0.2:
        print(
            f"warning: this would remove {report.n_removable:,} of {report.n_images:,} images "
            f"({report.removable_share:.0%}). That many is unusual: look-alike works (skin "
            "tones of small faces, variants drawn on one template) may be linked; look at the "
            "clusters before removing anything"
            + (", or try --pixels off" if pixels else ", or raise --threshold"),
            file=sys.stderr,
        )
    if report.n_unassigned:
        print(f"{report.n_unassigned} linked only through others: not proposed for removal")
    if report.n_chained:
        print(
            f"{report.n_chained} cluster(s) hold two images below the threshold against each "
            "other (each is near the kept image, not near each other): marked 'chained'"
        )
    for c in report.clusters[:20]:
        chained = " (chained: below the threshold)" if c.chained else ""
        print(
            f"  cluster {c.cluster}: {c.size} images, similarity to the kept image "
            f"{c.min_similarity:.3f}-{c.max_similarity:.3f}, lowest pair (diameter) "
            f"{c.lowest_pair:.3f}{chained}"
        )
        for m in c.members:
            why = f"  ({m.reason})" if m.reason else ""
            print(f"    {'keep' if m.keep else '    '}  {m.similarity:.3f}  {m.path}{why}")
    if args.out:
        print(f"written: {args.out}")
    return EXIT_OK


def _write_report(report: Any, out_arg: str | None) -> None:
    """``report`` as ``out_arg`` (a .json file, or a CSV with a JSON beside it)."""
    if not out_arg:
        return
    out = Path(out_arg)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        report.write_json(out)
    else:
        report.write_csv(out)
        report.write_json(out.with_suffix(".json"))


def _contamination(args: argparse.Namespace, index: Any, pixels: Any) -> int:
    from lib.duplicates import find_contamination

    other = _open(args.against)
    with _progress(args, f"searching {other.path.name}") as progress:
        report = find_contamination(
            index, other, threshold=args.threshold, k=args.k, progress=progress, pixels=pixels
        )
    _write_report(report, args.out)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK
    print(
        f"{report.n_contaminated} of {report.n_images} images of {index.path.name} "
        f"({report.contaminated_share:.1%}) are in {other.path.name} at cosine >= "
        f"{args.threshold}{' or with their pixels aligned' if pixels else ''} "
        f"({len(report.matches)} pair(s), {report.k} nearest searched)"
    )
    for m in report.matches[:50]:
        why = f"  ({m.reason})" if m.reason else ""
        print(f"  {m.cosine:.3f}  {m.path}  ->  {m.other_path}{why}")
    if len(report.matches) > 50:
        print(f"  ... and {len(report.matches) - 50} more (--out FILE writes them all)")
    if args.out:
        print(f"written: {args.out}")
    return EXIT_OK


# ---------------------------------------------------------------- data
def cmd_data_prepare(args: argparse.Namespace) -> int:
    from lib.defaults import prepare_default_data

    with _progress(args, "preparing") as progress:
        summary = prepare_default_data(progress=progress, rebuild=args.rebuild)
    print(summary)
    return EXIT_OK


def _print_skipped(skipped: Sequence[Any]) -> None:
    for s in skipped[:20]:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"... and {len(skipped) - 20} more skipped", file=sys.stderr)


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from lib.duplicates import (
        DEFAULT_DUPLICATE_THRESHOLD,
        DEFAULT_KEEP_RULE,
        DEFAULT_MIN_ALIGNMENT,
        DEFAULT_NEIGHBOURS,
        KEEP_RULES,
        PIXEL_CANDIDATE_COSINE,
        PIXEL_LIMIT,
        PIXELS_COSINE,
    )
    from lib.embedders import DEFAULT_EMBEDDER, available_embedders

    parser = argparse.ArgumentParser(
        prog="python -m lib",
        description="Replica: did this generated image copy a training image, and which one?",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="build, extend and inspect indexes")
    isub = index.add_subparsers(dest="index_command", required=True)
    build = isub.add_parser("build", help="embed a folder of images into a new index")
    build.add_argument("images_dir")
    build.add_argument("--out", required=True, help="index folder to write (replaced atomically)")
    build.add_argument(
        "--embedder", default=DEFAULT_EMBEDDER, help=f"one of {', '.join(available_embedders())}"
    )
    build.add_argument("--weights", help="local weights file for timm:<model> embedders")
    build.add_argument("--batch-size", type=int, default=32)
    build.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted build of the same folder from its last saved segment",
    )
    build.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="embed here (local) or with Ray Data actors (ray)",
    )
    build.add_argument(
        "--address", help="Ray cluster to join: auto or HOST:PORT (default: a local Ray)"
    )
    build.add_argument("--workers", type=int, help="Ray actors (default: one per CPU)")
    _add_memory(build)
    _add_segment_size(build)
    _add_no_wait(build)
    build.set_defaults(func=cmd_index_build)
    add = isub.add_parser("add", help="add new images to an index (same files are skipped)")
    add.add_argument("index_dir")
    add.add_argument("images_dir")
    add.add_argument("--batch-size", type=int, default=32)
    _add_segment_size(add)
    _add_no_wait(add)
    add.set_defaults(func=cmd_index_add)
    imp = isub.add_parser(
        "import", help="write a new index from precomputed embeddings (clip-retrieval, .npy)"
    )
    imp.add_argument(
        "embeddings_dir",
        help="clip-retrieval output (img_emb/, metadata/) or a .npy with a .parquet beside it",
    )
    imp.add_argument("--out", required=True, help="index folder to write (replaced atomically)")
    imp.add_argument(
        "--embedder",
        required=True,
        help=f"the model that made the vectors: one of {', '.join(available_embedders())}",
    )
    imp.add_argument("--weights", help="local weights file for timm:<model> embedders")
    _add_memory(imp)
    _add_no_wait(imp)
    imp.set_defaults(func=cmd_index_import)
    compact = isub.add_parser(
        "compact",
        help="merge small segments and bring every image into the approximate index",
    )
    compact.add_argument("index_dir")
    compact.add_argument(
        "--memory", help="RAM budget of a new approximate index, e.g. 4GB (default: as built)"
    )
    _add_no_wait(compact)
    compact.set_defaults(func=cmd_index_compact)
    upgrade = isub.add_parser("upgrade", help="convert an index of format 1 to format 2")
    upgrade.add_argument("index_dir")
    _add_memory(upgrade)
    _add_no_wait(upgrade)
    upgrade.set_defaults(func=cmd_index_upgrade)
    info = isub.add_parser("info", help="show an index's manifest")
    info.add_argument("index_dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_index_info)
    calibrate = isub.add_parser(
        "calibrate", help="refit an index's verdict thresholds with the current method"
    )
    calibrate.add_argument("index_dir")
    _add_no_wait(calibrate)
    calibrate.set_defaults(func=cmd_index_calibrate)
    lst = isub.add_parser(
        "list",
        help="list the indexes under a folder; damaged ones are marked with why (exit 2 "
        "only when every index found is damaged)",
    )
    lst.add_argument("root", nargs="?", default=str(DEFAULT_INDEX_ROOT))
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_index_list)

    search = sub.add_parser("search", help="top-k training matches and a verdict per query")
    search.add_argument("index_dir")
    search.add_argument("queries", nargs="+", metavar="QUERY", help="image files or folders")
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument(
        "--false-alarm-rate",
        type=float,
        default=None,
        help="operating point: share of unrelated images flagged (default 0.02)",
    )
    search.add_argument("--json", action="store_true")
    search.add_argument(
        "--regions",
        action="store_true",
        help="re-rank the top 10 by overlapping crops: finds objects pasted into a new "
        "scene; about 10x slower per query",
    )
    search.set_defaults(func=cmd_search)

    scan = sub.add_parser("scan", help="replication statistics for a folder of generations")
    scan.add_argument("index_dir")
    scan.add_argument("generated_dir")
    scan.add_argument("--reference", help="folder of real held-out images (the baseline)")
    scan.add_argument("--out", help="report folder: results.csv, report.json, histogram.png")
    scan.add_argument("--false-alarm-rate", type=float, default=None)
    scan.add_argument(
        "--report", help="also write the scan as a report: FILE.pdf, FILE.html or FILE.json"
    )
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(func=cmd_scan)

    dup = sub.add_parser(
        "duplicates",
        help="near-duplicate clusters inside an index, or (--against) its images found in "
        "another index",
    )
    dup.add_argument("index_dir")
    dup.add_argument(
        "--against",
        metavar="OTHER_INDEX",
        help="instead of clusters: the images of INDEX_DIR (a test set) that also appear in "
        "OTHER_INDEX (a training set); both must be made by the same embedder",
    )
    dup.add_argument(
        "--k",
        type=int,
        default=DEFAULT_NEIGHBOURS,
        help="nearest neighbours searched per image (default %(default)s): an image with "
        "more near-duplicates is linked to this many; raise it for bigger groups",
    )
    dup.add_argument(
        "--threshold",
        type=float,
        default=None,
        help=f"raw cosine that makes a duplicate on its own (default {PIXELS_COSINE} with "
        f"pixels checked, else {DEFAULT_DUPLICATE_THRESHOLD})",
    )
    dup.add_argument(
        "--pixels",
        choices=("auto", "on", "off"),
        default="auto",
        help="also align the pixels of each image with its neighbours down to cosine "
        f"{PIXEL_CANDIDATE_COSINE}: finds JPEG, resized, cropped, mirrored and pasted copies "
        f"(auto: on up to {PIXEL_LIMIT:,} images of INDEX_DIR; with --against too)",
    )
    dup.add_argument(
        "--min-alignment",
        type=float,
        default=DEFAULT_MIN_ALIGNMENT,
        help="pixel alignment (-1..1) that makes a duplicate (default %(default)s)",
    )
    dup.add_argument(
        "--mirrors-differ",
        action="store_true",
        help="mirror images of each other are different works (a 'p' and a 'q'), not copies",
    )
    dup.add_argument(
        "--recoloured-are-duplicates",
        action="store_true",
        help="pictures that differ only in colour (skin tones, a heart of another colour) "
        "are duplicates (default: different works)",
    )
    dup.add_argument(
        "--keep",
        choices=list(KEEP_RULES),
        default=DEFAULT_KEEP_RULE,
        help="which image a cluster keeps (default %(default)s)",
    )
    dup.add_argument("--out", help="CSV file (a JSON file is written beside it) or .json")
    dup.add_argument("--json", action="store_true")
    dup.set_defaults(func=cmd_duplicates)

    data = sub.add_parser("data", help="embedded default data")
    dsub = data.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="render OpenMoji and build the default index")
    prep.add_argument("--rebuild", action="store_true")
    prep.set_defaults(func=cmd_data_prepare)
    _add_extensions(sub)
    return parser


def _add_memory(parser: argparse.ArgumentParser) -> None:
    from lib.index.ann import DEFAULT_MEMORY, EXACT_LIMIT

    parser.add_argument(
        "--memory",
        default=DEFAULT_MEMORY,
        help=f"RAM budget of the approximate index used above {EXACT_LIMIT:,} images, "
        f"e.g. 4GB or 512MB (default {DEFAULT_MEMORY})",
    )


def _add_segment_size(parser: argparse.ArgumentParser) -> None:
    from lib.index.builder import SEGMENT_FILES

    parser.add_argument(
        "--segment-size",
        type=int,
        default=SEGMENT_FILES,
        metavar="N",
        help=f"images embedded and saved together (default {SEGMENT_FILES}); a kill loses "
        "at most one segment's work",
    )


def _add_no_wait(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--no-wait",
        action="store_true",
        help="when another writer is changing the index, exit with code 1 instead of "
        "waiting for it",
    )


def _add_extensions(sub: Any) -> None:
    """Commands contributed by optional modules (study, bench, report and verify) when
    present."""
    for module_name in ("lib.diffusion.cli", "lib.bench.cli", "lib.evidence.cli"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ImportError:
            continue
        module.register(sub)


def _usage_errors() -> tuple[type[BaseException], ...]:
    from lib.embedders import EmbedderUnavailable
    from lib.index import EmbedderMismatch, IndexNotFound
    from lib.index.ann import MemoryBudgetError
    from lib.index.importer import EmbeddingsError

    return (
        EmbeddingsError,
        MemoryBudgetError,
        UsageError,
        FileNotFoundError,
        NotADirectoryError,
        FileExistsError,
        IndexNotFound,
        EmbedderMismatch,
        EmbedderUnavailable,
    )


def _tolerate_undecodable_names() -> None:
    """A file name that is not valid UTF-8 (a query given on the command line) prints
    with its bad bytes escaped instead of failing a strict UTF-8 stdout."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    _tolerate_undecodable_names()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _usage_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "interrupted; every index is as it was at its last commit (an interrupted "
            "`index build` continues with --resume)",
            file=sys.stderr,
        )
        return 130
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
