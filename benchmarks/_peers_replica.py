"""Replica's side of benchmarks/peers.py, in a process of its own so that its time and peak
memory are measured like the peers': index a folder (SSCD embedding included) and find its
near-duplicates at the default setting (pixels checked: the CLI's default up to 50,000
images), as ``python -m lib index build`` followed by ``python -m lib duplicates INDEX``
would.

    .venv/bin/python benchmarks/_peers_replica.py FOLDER INDEX_DIR OUT.json

OUT.json: ``{"tool", "setting", "pairs": [[name_a, name_b, cosine], ...], "skipped":
[[name, reason], ...], "n_indexed"}``. Exact copies never reach the index: the build skips
them ("already in the index (same sha256)"), and that skipped list is what a user is told;
benchmarks/peers.py turns it into pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.duplicates import (
    DEFAULT_MIN_ALIGNMENT,
    DEFAULT_NEIGHBOURS,
    PIXELS_COSINE,
    PixelCheck,
    find_duplicates,
)
from lib.index import build_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("index", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    built = build_index(args.folder, args.index, embedder="sscd")
    report = find_duplicates(built.index, PIXELS_COSINE, pixels=PixelCheck())
    names = [Path(p).name for p in built.index.metadata["path"].astype(str)]
    result = {
        "tool": "replica",
        "setting": (
            f"sscd, pixels aligned >= {DEFAULT_MIN_ALIGNMENT} or cosine >= {PIXELS_COSINE}, "
            f"k={DEFAULT_NEIGHBOURS}, mirrors count, recoloured pictures do not"
        ),
        "pairs": [[names[a], names[b], s] for a, b, s in report.pairs],
        "skipped": [[Path(s.path).name, s.reason] for s in built.skipped],
        "n_indexed": built.index.count,
    }
    args.out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
