"""Does the approximate search keep copies? Edited copies of planted sources among 1M
distractors clustered around real SSCD vectors.

The ANN benchmark (``ann_scale.py``) measures recall with queries drawn from the indexed
distribution. A copy is not such a query: its cosine to its source is often 0.3-0.8,
among many closer-looking distractors. Here:

- **real vectors** of two domains: the default OpenMoji index (drawings) and Tux Paint's
  stamps (photographs and drawings; Debian ``tuxpaint-stamps-default``), embedded with
  SSCD (the Tux Paint index is built on first run under data/cache/ann_copies/);
- **distractors** clustered around them: each one is ``c r + sqrt(1 - c^2) u`` for a real
  vector ``r`` drawn at random, ``c`` uniform in 0.55-0.95 and ``u`` a random unit vector
  orthogonal to ``r``, so every real image has hundreds of look-alikes;
- **planted sources**: ``--sources`` real images (half per domain) whose own vectors are
  in the index; **queries**: their copies by the verdict benchmark's edits
  (:data:`lib.bench.edits.VERDICT_EDITS` and ``composed``), embedded by SSCD.

The index is written in the clip-retrieval layout and imported by ``lib.index.importer``
(approximate index above ``EXACT_LIMIT``). Each query is searched through
``ReplicaIndex.search_vectors`` (k=64, what a verdict asks for) at the index's own
``nprobe`` and deeper ones, and also, as the baseline in the same run, exactly over the
same stored vectors. It prints, per setting, how often the approximate top-1 is the exact
top-1, how often it is the source, and the single-query time (one thread).

    .venv/bin/python benchmarks/ann_copies.py [--size 1000000] [--nprobe 64 128 256 512]

Results: benchmarks/results/ann_copies-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.bench.edits import VERDICT_EDITS, composed
from lib.embedders import create_embedder
from lib.images import load_image
from lib.index import build_index, is_index, open_index
from lib.index.importer import import_embeddings

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "data" / "cache" / "ann_copies"
RESULTS = REPO / "benchmarks" / "results"
STAMPS = Path("/usr/share/tuxpaint/stamps")
SHARD = 250_000


def real_domains() -> list[tuple[np.ndarray, list[str]]]:
    """(vectors, paths) of the default OpenMoji index and of the Tux Paint stamps."""
    tux = CACHE / "tuxpaint-index"
    if not is_index(tux):
        build_index(STAMPS, tux, embedder="sscd", source="tuxpaint stamps")
    out = []
    for folder in (REPO / "data" / "indexes" / "openmoji-sscd", tux):
        index = open_index(folder)
        out.append((np.asarray(index.vectors(), np.float32), index.file_paths()))
    return out


def distractors(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n unit vectors, each at cosine 0.55-0.95 to a random vector of ``pool``."""
    rng = np.random.default_rng(seed)
    r = pool[rng.integers(0, len(pool), n)]
    u = rng.standard_normal(r.shape).astype(np.float32)
    u -= np.sum(u * r, axis=1, keepdims=True) * r
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    c = rng.uniform(0.55, 0.95, (n, 1)).astype(np.float32)
    out = c * r + np.sqrt(1 - c**2) * u
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--sources", type=int, default=60)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    domains = real_domains()
    sources: list[tuple[np.ndarray, str]] = []
    pool = []
    for vectors, paths in domains:
        chosen = set(rng.choice(len(paths), args.sources // 2, replace=False).tolist())
        sources += [(vectors[i], paths[i]) for i in sorted(chosen)]
        pool.append(np.delete(vectors, sorted(chosen), axis=0))
    pool_vectors = np.concatenate(pool)

    # the queries: the benchmark's edits of each source, embedded as a query would be
    model = create_embedder("sscd")
    backgrounds = [load_image(p).image for p in sorted(STAMPS.rglob("*.png"))[:40]]
    queries, query_source, query_edit = [], [], []
    for s, (_, path) in enumerate(sources):
        image = load_image(path).image
        for name, edit in [*VERDICT_EDITS.items(), ("composed", None)]:
            if edit is None:
                edited = composed(image, rng, backgrounds[int(rng.integers(len(backgrounds)))])
            else:
                edited = edit(image, rng)
            queries.append(model.prepare(edited))
            query_source.append(s)
            query_edit.append(name)
    query_vectors = model.embed_arrays(queries)

    # the index: distractors with the sources planted at random rows
    folder = CACHE / f"copies-{args.size}"
    index_dir = CACHE / f"copies-{args.size}-index"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    n = args.size
    planted_rows = np.sort(rng.choice(n, len(sources), replace=False))
    row_of_source = {int(s): int(r) for s, r in enumerate(planted_rows)}
    started = time.perf_counter()
    for k, start in enumerate(range(0, n, SHARD)):
        stop = min(n, start + SHARD)
        block = distractors(pool_vectors, stop - start, seed=args.seed + 1 + k)
        names = [f"distractors/{i:08d}.jpg" for i in range(start, stop)]
        for s, row in row_of_source.items():
            if start <= row < stop:
                block[row - start] = sources[s][0]
                names[row - start] = f"sources/{s:03d}.png"
        np.save(folder / "img_emb" / f"img_emb_{k}.npy", block.astype(np.float16))
        pd.DataFrame({"image_path": names, "caption": [""] * len(names)}).to_parquet(
            folder / "metadata" / f"metadata_{k}.parquet"
        )
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    import_embeddings(folder, index_dir, embedder="sscd", source="ann_copies")
    import_s = time.perf_counter() - started
    index = open_index(index_dir)
    assert index.table is not None

    # the baseline in the same run: exact top-1 over the same stored vectors
    best_s = np.full(len(query_vectors), -np.inf, np.float32)
    best_i = np.zeros(len(query_vectors), np.int64)
    for start, block in index.table.blocks(262_144):
        sims = query_vectors @ np.asarray(block, np.float32).T
        top = np.argmax(sims, axis=1)
        better = sims[np.arange(len(top)), top] > best_s
        best_s[better] = sims[np.arange(len(top)), top][better]
        best_i[better] = start + top[better]
    truth_rows = np.array([row_of_source[s] for s in query_source])
    exact_is_source = best_i == truth_rows
    rows: list[dict[str, Any]] = [
        {
            "setting": "exact (baseline)",
            "top1_is_exact_top1": 1.0,
            "top1_is_source": round(float(exact_is_source.mean()), 4),
        }
    ]
    own = (index.manifest.ann or {}).get("nprobe")
    for nprobe in [None, *args.nprobe]:
        found, times = [], []
        for q in query_vectors:
            t = time.perf_counter()
            _, ids = index.search_vectors(q[None, :], 64, nprobe=nprobe)
            times.append(time.perf_counter() - t)
            found.append(int(ids[0, 0]))
        found_a = np.array(found)
        per_edit = {
            name: round(float(np.mean((found_a == truth_rows)[np.array(query_edit) == name])), 3)
            for name in dict.fromkeys(query_edit)
        }
        label = "the index's own" if nprobe is None else "deeper"
        rows.append(
            {
                "setting": f"nprobe {nprobe or own} ({label})",
                "top1_is_exact_top1": round(float(np.mean(found_a == best_i)), 4),
                "top1_is_source": round(float(np.mean(found_a == truth_rows)), 4),
                "source_by_edit": per_edit,
                "p50_ms": round(float(np.percentile(np.array(times) * 1000, 50)), 2),
                "p99_ms": round(float(np.percentile(np.array(times) * 1000, 99)), 2),
            }
        )
    print(
        f"{n:,} vectors ({index.manifest.faiss_type}), {len(sources)} planted sources, "
        f"{len(query_vectors)} edited-copy queries; written in {write_s:.0f} s, imported in "
        f"{import_s:.0f} s"
    )
    print(f"{'setting':32s} {'= exact top-1':>14s} {'= source':>9s} {'p50 ms':>7s} {'p99 ms':>7s}")
    for row in rows:
        print(
            f"{row['setting']:32s} {row['top1_is_exact_top1']:14.1%} "
            f"{row['top1_is_source']:9.1%} {row.get('p50_ms', float('nan')):7.1f} "
            f"{row.get('p99_ms', float('nan')):7.1f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ann_copies-{n}.json").write_text(
        json.dumps({"args": vars(args), "rows": rows}, indent=2)
    )
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
