"""Index scale: import, search latency, recall@10 and memory at 100k, 1M (and 10M) vectors.

For each size it writes a clip-retrieval folder of synthetic SSCD-like vectors
(:func:`benchmarks._synthetic.embedding_like`: a mixture in a low-rank subspace, float16
shards as clip-retrieval writes them), imports it with ``lib.index.importer`` (timed:
segments, approximate index above ``EXACT_LIMIT``, calibration), then, in a fresh
process so that its resident memory is the index's own, opens the index and times 200
held-out queries one at a time through ``ReplicaIndex.search_vectors`` (k=64, what a
verdict asks for). Recall@10 is measured against an exact brute force over the same
stored vectors. The baseline, measured in the same run, is the exact search Replica ran
before (``IndexFlatIP`` over every vector, one thread): the ratio exact/approximate is
the figure to quote. Optionally (``--add``) it times adding 1,000 images to the largest
index, minus the time to embed them.

    .venv/bin/python benchmarks/ann_scale.py [--sizes 100000 1000000] [--add] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._synthetic import embedding_like, write_photos

RESULTS = Path(__file__).resolve().parent / "results" / "ann_scale.json"
QUERIES = 200
SHARD = 250_000


def write_embeddings(folder: Path, n: int) -> np.ndarray:
    """clip-retrieval layout of n vectors (+ QUERIES held out, returned). Above 2M vectors
    they are drawn shard by shard from the same mixture (same subspace and clusters, a
    seed per shard), so that memory stays at one shard."""
    if n <= 2_000_000:
        vectors = embedding_like(n + QUERIES, seed=0)
        queries = vectors[n:].copy()

        def shard(start: int, stop: int) -> np.ndarray:
            return vectors[start:stop]
    else:
        queries = embedding_like(QUERIES, seed=0, shard_seed=10**6)

        def shard(start: int, stop: int) -> np.ndarray:
            return embedding_like(stop - start, seed=0, shard_seed=1 + start // SHARD)

    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    for k, start in enumerate(range(0, n, SHARD)):
        stop = min(n, start + SHARD)
        np.save(folder / "img_emb" / f"img_emb_{k}.npy", shard(start, stop).astype(np.float16))
        pd.DataFrame(
            {
                "image_path": [f"images/{i:08d}.jpg" for i in range(start, stop)],
                "caption": [f"image {i}" for i in range(start, stop)],
            }
        ).to_parquet(folder / "metadata" / f"metadata_{k}.parquet")
    return queries


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_queries(index_dir: str, queries_file: str, nprobe: int | None = None) -> dict[str, Any]:
    """Run in a fresh process: open the index, time single queries, recall@10, RSS.
    ``nprobe``: lists probed instead of the index's own (the speed/recall trade-off)."""
    import faiss

    from lib.index import open_index

    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    index = open_index(index_dir)
    open_s = time.perf_counter() - t0
    rss_open = _rss_bytes()
    queries = np.load(queries_file)
    times = []
    found = []
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search_vectors(q[None, :], 64, nprobe=nprobe)
        times.append(time.perf_counter() - t)
        found.append(ids[0, :10])
    rss = _rss_bytes()
    anon, mapped = _rss_bytes("RssAnon"), _rss_bytes("RssFile")
    assert index.table is not None
    truth_sims = np.full((len(queries), 10), -np.inf, np.float32)
    truth_ids = np.zeros((len(queries), 10), np.int64)
    for start, block in index.table.blocks(262_144):  # exact brute force, chunk by chunk
        sims = queries @ block.T
        both_s = np.concatenate([truth_sims, sims], axis=1)
        both_i = np.concatenate(
            [truth_ids, np.broadcast_to(np.arange(start, start + len(block)), sims.shape)], axis=1
        )
        top = np.argsort(-both_s, axis=1)[:, :10]
        truth_sims = np.take_along_axis(both_s, top, 1)
        truth_ids = np.take_along_axis(both_i, top, 1)
    recall = float(
        np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth_ids, strict=True)])
    )
    # the baseline: exact IndexFlatIP over every vector, one thread (Replica before);
    # above 2M vectors it would not fit in RAM: a chunked scan of the stored vectors
    flat_times = []
    if len(index.table) <= 2_000_000:
        flat = faiss.IndexFlatIP(index.manifest.dim)
        for _, block in index.table.blocks(262_144):
            flat.add(np.ascontiguousarray(block))
        for q in queries[:50]:
            t = time.perf_counter()
            flat.search(q[None, :], 64)
            flat_times.append(time.perf_counter() - t)
        del flat
    else:
        for q in queries[:3]:
            t = time.perf_counter()
            for _, block in index.table.blocks(262_144):
                np.argpartition(-(block @ q), 64)[:64]
            flat_times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    flat_ms = np.array(flat_times) * 1000
    ann = index.manifest.ann or {}
    return {
        "search": "approximate" if ann else "exact",
        "index": index.manifest.faiss_type,
        "nprobe": nprobe or ann.get("nprobe"),
        "open_s": round(open_s, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "recall_at_10": round(recall, 4),
        "rss_after_open_gb": round(rss_open / 1e9, 2),
        "rss_after_queries_gb": round(rss / 1e9, 2),
        "rss_anon_after_queries_gb": round(anon / 1e9, 2),
        "rss_file_after_queries_gb": round(mapped / 1e9, 2),
        "exact_flat_p50_ms": round(float(np.percentile(flat_ms, 50)), 2),
        "speedup_vs_exact": round(float(np.percentile(flat_ms, 50) / np.percentile(ms, 50)), 1),
    }


def _rss_bytes(kind: str = "VmRSS") -> int:
    """Resident memory from /proc/self/status: VmRSS (all), RssAnon (the process's own
    memory) or RssFile (pages of mapped files, here the index's memory-mapped vectors:
    page cache the kernel can drop at any time)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) * 1024
    return 0


def time_add(index_dir: Path, work: Path, seed: int = 7) -> dict[str, float]:
    """Seconds to add 1,000 images, and how many of them were spent embedding (timed
    inside the add, so that a busy machine slows both alike); the rest is the index's."""
    import lib.index.builder as builder
    from lib.index import add_to_index

    write_photos(work / f"new_photos_{seed}", 1000, seed=seed, quality=85)
    embedding = 0.0
    real = builder.embed_files

    def timed(*args: Any, **kwargs: Any) -> Any:
        nonlocal embedding
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            embedding += time.perf_counter() - t

    builder.embed_files = timed  # type: ignore[assignment]
    try:
        t = time.perf_counter()
        add_to_index(index_dir, work / f"new_photos_{seed}")
        add_s = time.perf_counter() - t
    finally:
        builder.embed_files = real
    return {"add_s": round(add_s, 1), "embed_s": round(embedding, 1),
            "overhead_s": round(add_s - embedding, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--memory", default="4GB")
    parser.add_argument("--add", action="store_true", help="time adding 1,000 images")
    parser.add_argument(
        "--exact-limit", type=int, help="approximate search from this many vectors (measuring it)"
    )
    parser.add_argument("--out", default=str(RESULTS), help="results file")
    parser.add_argument(
        "--add-to", metavar="INDEX", help="only time adding 1,000 images to this index"
    )
    parser.add_argument("--seed", type=int, default=7, help="of the added images")
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    parser.add_argument(
        "--measure", nargs=2, metavar=("INDEX", "QUERIES"),
        help="only measure queries (QUERIES: a .npy kept by --keep) and print the row",
    )  # fmt: skip
    parser.add_argument("--nprobe", type=int, help="with --measure: lists probed")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_queries(*args.measure, nprobe=args.nprobe)))
        return
    if args.add_to:
        from lib.index import open_index

        n = open_index(args.add_to).count
        work = Path(tempfile.mkdtemp(prefix="ann_add_"))
        try:
            row = {"add_1000_images_to": n, **time_add(Path(args.add_to), work, args.seed)}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(row))
        out_file = Path(args.out)
        saved = json.loads(out_file.read_text()) if out_file.exists() else {"rows": []}
        saved["rows"] = [r for r in saved["rows"] if "add_1000_images_to" not in r] + [row]
        out_file.write_text(json.dumps(saved, indent=2) + "\n")
        return

    import lib.index.builder
    from lib.index.importer import import_embeddings

    if args.exact_limit is not None:
        lib.index.builder.EXACT_LIMIT = args.exact_limit

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ann_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in args.sizes:
            emb = work / f"emb_{n}"
            shards = -(-n // SHARD)
            complete = emb / "metadata" / f"metadata_{shards - 1}.parquet"
            if not (complete.exists() and (work / f"queries_{n}.npy").exists()):  # --keep reuse
                shutil.rmtree(emb, ignore_errors=True)
                queries = write_embeddings(emb, n)
                np.save(work / f"queries_{n}.npy", queries)
            out = work / f"index_{n}"
            t = time.perf_counter()
            import_embeddings(emb, out, embedder="sscd", memory=args.memory)
            build_s = time.perf_counter() - t
            shutil.rmtree(emb, ignore_errors=True)
            measured = subprocess.run(
                [sys.executable, __file__, "--measure", str(out), str(work / f"queries_{n}.npy")],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            row = {
                "vectors": n,
                "import_s": round(build_s, 1),
                "disk_gb": round(folder_bytes(out) / 1e9, 2),
                **json.loads(measured.stdout.strip().splitlines()[-1]),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.add:
            largest = work / f"index_{max(args.sizes)}"
            add = time_add(largest, work)
            print(json.dumps({"add_1000_images_to": max(args.sizes), **add}), flush=True)
            rows.append({"add_1000_images_to": max(args.sizes), **add})
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out_file = Path(args.out)
    out_file.parent.mkdir(exist_ok=True)
    out_file.write_text(json.dumps({"memory": args.memory, "rows": rows}, indent=2) + "\n")
    print(f"written: {out_file}")


if __name__ == "__main__":
    main()
