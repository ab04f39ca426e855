"""Verdicts on look-alike domains: does the promised false-alarm rate hold, and how many
edited copies are flagged with the right top-1 match?

For each domain of :mod:`lib.bench.domains` (five packages that install offline), the
benchmark indexes part of the images with ``index build``'s own code, keeps the rest
(whole families, never a variant of an indexed image) as unrelated queries, and makes
edited copies of indexed images: crop to 70%, JPEG quality 25, colour jitter + 8 degree
rotation, flip + blur, a dark banner with text, 4x downscale-upscale, and the whole source
pasted at 55-75% scale onto a photograph (Debian mate-backgrounds). Every query goes
through the default search path (``search_files``: SSCD, calibrated score, pixel
alignment of the shortlist). It prints per domain:

- false alarms among the unrelated images at each promised rate (0.5, 2, 5, 10%), as a
  share and as a ratio to the promise, with a 95% Wilson interval;
- per edit, at the 2% operating point: the share flagged ``copy`` with the right top-1,
  and the share whose top-1 is the source;
- the cost per query (ms, models warm, on the cores this machine gives).

    .venv/bin/python benchmarks/verdicts.py [--domains openmoji,tuxpaint] [--quick]

The folders, indexes and results are cached under data/cache/verdicts/; results go to
benchmarks/results/verdicts.json and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._verdict_data import KINDS, prepare
from lib.bench.domains import DOMAINS
from lib.calibration import CALIBRATION_VERSION, Calibration
from lib.index import ReplicaIndex, build_index, is_index, open_index
from lib.search import QueryResult, search_files

RATES = (0.005, 0.02, 0.05, 0.10)
EDITED = [k for k in KINDS if k != "composed"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def domain_index(folder: Path) -> ReplicaIndex:
    """The domain's index, built once (rebuilt when its calibration is outdated)."""
    path = folder / "index"
    if is_index(path):
        index = open_index(path)
        if not index.recalibrated and index.calibration.version == CALIBRATION_VERSION:
            return index
    return build_index(folder / "indexed", path, embedder="sscd").index


def copy_at(calibration: Calibration, result: QueryResult) -> bool:
    """The verdict of ``result`` at another operating point, ``calibration`` (the order of
    the matches does not depend on it)."""
    top = result.top
    if top is None:
        return False
    return calibration.verdict(top.calibrated, top.score, top.alignment) == "copy"


def evaluate(name: str, quick: bool) -> dict[str, Any]:
    folder = prepare(name, 2000, 1000, 50)
    truth = json.loads((folder / "truth.json").read_text())
    index = domain_index(folder)
    unrelated = sorted((folder / "unrelated").glob("*.png"))
    copies = sorted((folder / "copies").glob("*.png"))
    if quick:
        unrelated, copies = unrelated[::4], copies[::4]
    search_files(index, unrelated[:4], top_k=5)  # warm the model and caches
    start = time.perf_counter()
    u = search_files(index, unrelated, top_k=5)
    c = search_files(index, copies, top_k=5)
    per_query_ms = 1000 * (time.perf_counter() - start) / (len(unrelated) + len(copies))
    names = index.metadata["path"].map(lambda p: Path(p).name)
    ids = dict(zip(names, index.metadata["id"], strict=True))
    at = {rate: index.calibration.with_false_alarm_rate(rate) for rate in RATES}
    false_alarms = {}
    for rate in RATES:
        k = sum(copy_at(at[rate], r) for r in u)
        low, high = wilson(k, len(u))
        false_alarms[str(rate)] = {
            "flagged": k,
            "n": len(u),
            "share": k / len(u),
            "ratio": k / len(u) / rate,
            "ci95": [low, high],
        }
    per_edit: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        rows = [
            (r, ids[truth["copies"][p.name]["source"]])
            for p, r in zip(copies, c, strict=True)
            if truth["copies"][p.name]["kind"] == kind
        ]
        right = [r.top is not None and r.top.id == source for r, source in rows]
        flagged = [ok and copy_at(at[0.02], r) for (r, _), ok in zip(rows, right, strict=True)]
        per_edit[kind] = {
            "n": len(rows),
            "flagged": float(np.mean(flagged)),
            "top1": float(np.mean(right)),
        }
    edited = [per_edit[k] for k in EDITED]
    total = sum(e["n"] for e in edited)
    return {
        "domain": name,
        "source": DOMAINS[name].source,
        "licence": DOMAINS[name].licence,
        "indexed": index.count,
        "unrelated": len(unrelated),
        "copies": len(copies),
        "null_sample": index.calibration.null_sample,
        "aligned_null": len(index.calibration.alignment_null),
        "false_alarms": false_alarms,
        "per_edit": per_edit,
        "edited_flagged": sum(e["flagged"] * e["n"] for e in edited) / total,
        "edited_top1": sum(e["top1"] * e["n"] for e in edited) / total,
        "per_query_ms": per_query_ms,
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| domain (indexed / unrelated / copies) | false alarms at 0.5% / 2% / 5% / 10% "
        "(ratio to the promise) | edited copies flagged at 2% | top-1 is the source | "
        "composed: flagged / top-1 | ms per query |\n|---|---|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in results:
        fa = " / ".join(f"{v['share']:.1%} ({v['ratio']:.2f}x)" for v in r["false_alarms"].values())
        comp = r["per_edit"]["composed"]
        lines.append(
            f"| {r['domain']} ({r['indexed']:,} / {r['unrelated']:,} / {r['copies']}) | {fa} | "
            f"{r['edited_flagged']:.1%} | {r['edited_top1']:.1%} | "
            f"{comp['flagged']:.0%} / {comp['top1']:.0%} | {r['per_query_ms']:.0f} |"
        )
    lines.append("")
    lines.append("| domain | " + " | ".join(KINDS) + " |")
    lines.append("|---|" + "---:|" * len(KINDS))
    for r in results:
        cells = [
            f"{r['per_edit'][k]['flagged']:.0%} / {r['per_edit'][k]['top1']:.0%}" for k in KINDS
        ]
        lines.append(f"| {r['domain']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--quick", action="store_true", help="a quarter of the queries")
    args = parser.parse_args()
    results = []
    for name in args.domains.split(","):
        print(f"{name}…", file=sys.stderr, flush=True)
        results.append(evaluate(name, args.quick))
    name = "verdicts-quick.json" if args.quick else "verdicts.json"  # keep the full run
    out = Path(__file__).resolve().parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"\n(per edit: flagged at 2% with the right top-1 / top-1 is the source; {out})")


if __name__ == "__main__":
    main()
