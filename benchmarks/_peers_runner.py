"""Run one peer near-duplicate finder on a folder and write its pairs as JSON.

Runs inside the peers' own venv (benchmarks/peers.py makes it; fastdup pins numpy 1.26),
so it imports nothing from this project. Each tool runs at its default setting; with
``--sweep`` it runs at a looser one instead, so that a threshold can be swept over the
pairs (the list is a superset of the default's):

| tool | default | --sweep | score |
|---|---|---|---|
| imagededup-phash, -dhash | ``find_duplicates``: Hamming <= 10 | <= 20 | -Hamming |
| imagehash-phash | equal hashes (its find_similar_images demo) | <= 20 | -Hamming |
| cleanvision | exact_duplicates + near_duplicates sets | (none: no score) | 1 / 0.5 |
| fastdup | ``run()``: similarity >= 0.9, 2 neighbours | >= 0.3 | cosine |

    data/cache/peers/venv/bin/python benchmarks/_peers_runner.py fastdup FOLDER OUT.json [--sweep]

OUT.json: ``{"tool", "setting", "pairs": [[name_a, name_b, score], ...]}`` with names
relative to FOLDER and score higher = more alike.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HASH_SWEEP = 20
"""Largest Hamming distance (of 64 bits) listed by --sweep: far past precision 0.95."""
FASTDUP_SWEEP = 0.3
Pairs = list[tuple[str, str, float]]


def _dedupe(pairs: Pairs) -> Pairs:
    """One entry per unordered pair, its highest score."""
    best: dict[tuple[str, str], float] = {}
    for a, b, s in pairs:
        if a == b:
            continue
        key = (a, b) if a < b else (b, a)
        best[key] = max(s, best.get(key, s))
    return [(a, b, s) for (a, b), s in sorted(best.items())]


def imagededup_pairs(method: str, folder: Path, sweep: bool) -> tuple[str, Pairs]:
    from imagededup import methods

    hasher = getattr(methods, method)()
    limit = HASH_SWEEP if sweep else 10
    found = hasher.find_duplicates(image_dir=str(folder), max_distance_threshold=limit, scores=True)
    pairs = [(a, b, -float(d)) for a, dups in found.items() for b, d in dups]
    return f"{method}, max_distance_threshold={limit}", pairs


def imagehash_pairs(folder: Path, sweep: bool) -> tuple[str, Pairs]:
    import imagehash
    import numpy as np
    from PIL import Image

    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    hashes = []
    for name in names:
        with Image.open(folder / name) as image:
            hashes.append(imagehash.phash(image))
    if not sweep:
        groups: dict[str, list[str]] = {}
        for name, h in zip(names, hashes, strict=True):
            groups.setdefault(str(h), []).append(name)
        pairs = [(a, b, 0.0) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1 :]]
        return "phash (hash_size 8), equal hashes", pairs
    bits = np.packbits(np.stack([h.hash.reshape(-1) for h in hashes]), axis=1)  # (n, 8) uint8
    pairs = []
    for i in range(len(names)):
        dist = np.unpackbits(bits[i] ^ bits[i + 1 :], axis=1).sum(axis=1)
        for j in np.flatnonzero(dist <= HASH_SWEEP):
            pairs.append((names[i], names[i + 1 + int(j)], -float(dist[j])))
    return f"phash (hash_size 8), distance <= {HASH_SWEEP}", pairs


def cleanvision_pairs(folder: Path, sweep: bool) -> tuple[str, Pairs]:
    from cleanvision import Imagelab

    lab = Imagelab(data_path=str(folder), verbose=False)
    lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}})
    pairs: Pairs = []
    for issue, score in (("exact_duplicates", 1.0), ("near_duplicates", 0.5)):
        for group in lab.info[issue]["sets"]:
            names = [Path(p).name for p in group]
            pairs += [(a, b, score) for i, a in enumerate(names) for b in names[i + 1 :]]
    return "exact_duplicates (md5) + near_duplicates (phash 8, equal)", pairs


def fastdup_pairs(folder: Path, sweep: bool) -> tuple[str, Pairs]:
    import fastdup

    with tempfile.TemporaryDirectory() as work:
        fd = fastdup.create(work_dir=work, input_dir=str(folder))
        kwargs: dict[str, Any] = {"threshold": FASTDUP_SWEEP} if sweep else {}
        fd.run(overwrite=True, **kwargs)
        sim = fd.similarity()  # with the file names of both ends
        pairs: Pairs = []
        if sim is not None and len(sim):
            ends = zip(sim["filename_from"], sim["filename_to"], sim["distance"], strict=True)
            pairs = [(Path(a).name, Path(b).name, float(s)) for a, b, s in ends]
    setting = f"threshold={FASTDUP_SWEEP}" if sweep else "defaults (threshold 0.9, k=2)"
    return setting, pairs


TOOLS: dict[str, Callable[[Path, bool], tuple[str, Pairs]]] = {
    "imagededup-phash": lambda f, s: imagededup_pairs("PHash", f, s),
    "imagededup-dhash": lambda f, s: imagededup_pairs("DHash", f, s),
    "imagehash-phash": imagehash_pairs,
    "cleanvision": cleanvision_pairs,
    "fastdup": fastdup_pairs,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tool", choices=list(TOOLS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sweep", action="store_true", help="a looser setting, to sweep")
    args = parser.parse_args()
    os.environ.setdefault("SENTRY_OPT_OUT", "1")
    os.environ.setdefault("FASTDUP_PRODUCTION", "1")
    setting, pairs = TOOLS[args.tool](args.folder.resolve(), args.sweep)
    result = {"tool": args.tool, "setting": setting, "pairs": _dedupe(pairs)}
    args.out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
