"""Materialise the verdict benchmark's folders: per domain, the indexed images, the unrelated
images (never indexed, never a variant of an indexed one) and the edited copies, with a
``truth.json`` naming each copy's source. Written once under data/cache/verdicts/ and reused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.bench.domains import DOMAINS, background_photos, sample_sources, split_domain
from lib.bench.edits import VERDICT_EDITS, composed

ROOT = Path(__file__).resolve().parent.parent / "data" / "cache" / "verdicts"
KINDS = [*VERDICT_EDITS, "composed"]


def prepare(name: str, n_indexed: int, n_unrelated: int, per_kind: int, seed: int = 0) -> Path:
    """Write (once) and return the folder of domain ``name``."""
    folder = ROOT / f"{name}-{n_indexed}-{n_unrelated}-{per_kind}-s{seed}"
    if (folder / "truth.json").is_file():
        return folder
    items = DOMAINS[name].items()
    # small domains: 55% indexed, the rest unrelated
    n_indexed = min(n_indexed, int(0.55 * len(items)))
    n_unrelated = min(n_unrelated, len(items) - n_indexed)
    indexed, unrelated = split_domain(
        items, n_indexed, n_unrelated, seed=seed, lookalike=DOMAINS[name].lookalike
    )
    print(f"{name}: {len(items)} items, {len(indexed)} indexed, {len(unrelated)} unrelated")
    for sub in ("indexed", "unrelated", "copies"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i, (item, image) in enumerate(indexed):
        path = folder / "indexed" / f"{i:05d}.png"
        image.save(path)
        if item.caption:
            path.with_suffix(".txt").write_text(item.caption + "\n", encoding="utf-8")
        names.append(path.name)
    for i, (_, image) in enumerate(unrelated):
        image.save(folder / "unrelated" / f"{i:05d}.png")
    photos = background_photos()
    rng = np.random.default_rng(seed + 1)
    copies = {}
    for kind, pos in sample_sources(len(indexed), per_kind, KINDS, seed + 2):
        source = indexed[pos][1]
        if kind == "composed":
            out = composed(source, rng, photos[int(rng.integers(len(photos)))])
        else:
            out = VERDICT_EDITS[kind](source, rng)
        file = f"{kind}-{pos:05d}.png"
        out.save(folder / "copies" / file)
        copies[file] = {"kind": kind, "source": names[pos]}
    truth = {
        "domain": name,
        "source": DOMAINS[name].source,
        "licence": DOMAINS[name].licence,
        "indexed": len(indexed),
        "unrelated": len(unrelated),
        "copies": copies,
    }
    (folder / "truth.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return folder


if __name__ == "__main__":
    for domain in sys.argv[1:] or list(DOMAINS):
        print(prepare(domain, 2000, 1000, 50))
