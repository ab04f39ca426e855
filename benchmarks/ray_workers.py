"""The Ray engine with 1 and 2 workers on this machine, and the local engine beside them.

Embeds the same N images (the first N of data/openmoji/train, or of ``--folder``) with
``lib.index.ray_engine.embed_files_ray`` on one local Ray (started once, 2 CPUs) using an
actor pool of 1 and then 2 workers (one ONNX session, one inference thread and one
decoding thread each), and with the local engine (``lib.embedding.embed_files``, every
core) for reference, in interleaved rounds so that other load on the machine hits all
alike. Each Ray run includes starting its job and actor pool (as a build does), not
starting Ray; a run of one image per actor right after it measures that fixed start, and
"after start" is the rate without it: (N - workers) / (run - start).

The figures to quote are the ratios of 2 workers to 1 (medians of per-round ratios,
measured in the same run): absolute speeds on a shared machine are noise. "CPU pressure" is the
share of the time some task on the machine waited for a CPU (Linux PSI): near 0 on an
idle machine, near 1 when other work competed throughout.

    .venv/bin/python benchmarks/ray_workers.py [--n 600] [--rounds 3] [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.embedders import create_embedder
from lib.embedding import embed_files
from lib.images import list_image_files
from lib.index.ray_engine import embed_files_ray

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "ray_workers.json"


def cpu_pressure() -> float | None:
    """Seconds some task has waited for a CPU since boot (Linux PSI), or None."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(line.split("total=")[1]) / 1e6


def timed(run: Callable[[], np.ndarray]) -> tuple[float, float | None, np.ndarray]:
    """(wall seconds, CPU pressure over the run, vectors)."""
    p0, t0 = cpu_pressure(), time.perf_counter()
    vectors = run()
    wall = time.perf_counter() - t0
    p1 = cpu_pressure()
    return wall, (p1 - p0) / wall if p0 is not None and p1 is not None else None, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folder", type=Path, default=REPO / "data" / "openmoji" / "train")
    args = parser.parse_args()
    paths = list_image_files(args.folder)[: args.n]
    if len(paths) < args.n:
        sys.exit(f"{args.folder} has {len(paths)} images, fewer than --n {args.n}")

    import ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - t0

    def ray_run(workers: int, files: list[Path] = paths) -> np.ndarray:
        stream = embed_files_ray(files, "sscd", batch_size=args.batch_size, workers=workers)
        return np.concatenate([r.vectors for r in stream])

    def fixed_cost(workers: int) -> float:
        """Seconds for one image per actor: starting the job and its actor pool."""
        t = time.perf_counter()
        ray_run(workers, paths[:workers])
        return time.perf_counter() - t

    local_embedder = create_embedder("sscd")
    runs: dict[str, Callable[[], np.ndarray]] = {
        "local": lambda: (
            embed_files(paths, local_embedder, batch_size=args.batch_size, dedupe=False).vectors
        ),
        "ray_1_worker": lambda: ray_run(1),
        "ray_2_workers": lambda: ray_run(2),
    }
    rounds: list[dict[str, dict[str, float | None]]] = []
    reference: np.ndarray | None = None
    min_cosine = 1.0
    for r in range(args.rounds):
        row: dict[str, dict[str, float | None]] = {}
        for name, run in runs.items():
            wall, pressure, vectors = timed(run)
            if reference is None:
                reference = vectors
            min_cosine = min(min_cosine, float(np.sum(vectors * reference, axis=1).min()))
            row[name] = {
                "seconds": wall,
                "images_per_s": len(paths) / wall,
                "cpu_pressure": pressure,
            }
            if name.startswith("ray_"):
                workers = 1 if name == "ray_1_worker" else 2
                start = fixed_cost(workers)
                row[name]["pool_start_s"] = start
                row[name]["after_start_images_per_s"] = (len(paths) - workers) / (wall - start)
            print(
                f"round {r + 1} {name:14s} {len(paths) / wall:6.1f} images/s ({wall:.1f} s, "
                f"CPU pressure {pressure if pressure is not None else float('nan'):.2f}, "
                f"{row[name].get('after_start_images_per_s') or float('nan'):.1f} after the "
                f"{row[name].get('pool_start_s') or float('nan'):.1f} s start)"
            )
        rounds.append(row)
    ray.shutdown()

    def median(name: str, key: str = "images_per_s") -> float:
        return statistics.median(float(row[name][key] or 0) for row in rounds)

    def ratio(a: str, b: str, key: str = "images_per_s") -> float:
        """Median over rounds of a's rate over b's (each round's pair ran back to back)."""
        return statistics.median(
            float(row[a][key] or 0) / float(row[b][key] or 1) for row in rounds
        )

    result = {
        "images": f"first {len(paths)} images of {os.path.relpath(args.folder, REPO)}",
        "n": len(paths),
        "batch_size": args.batch_size,
        "command": "python benchmarks/ray_workers.py " + " ".join(sys.argv[1:]),
        "ray_version": ray.__version__,
        "ray_start_s": ray_start_s,
        "rounds": rounds,
        "median_images_per_s": {name: median(name) for name in runs},
        "median_after_start_images_per_s": {
            name: median(name, "after_start_images_per_s") for name in list(runs)[1:]
        },
        "median_cpu_pressure": statistics.median(
            float(v["cpu_pressure"] or 0) for row in rounds for v in row.values()
        ),
        "ratio_2_over_1_workers": ratio("ray_2_workers", "ray_1_worker"),
        "ratio_2_over_1_workers_after_start": ratio(
            "ray_2_workers", "ray_1_worker", "after_start_images_per_s"
        ),
        "ratio_2_workers_over_local": ratio("ray_2_workers", "local"),
        "min_cosine_vs_first_run": min_cosine,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_end": list(os.getloadavg()),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"median images/s: local {median('local'):.1f}, Ray 1 worker "
        f"{median('ray_1_worker'):.1f}, Ray 2 workers {median('ray_2_workers'):.1f}; "
        f"2 workers / 1 worker = {result['ratio_2_over_1_workers']:.2f}x "
        f"({result['ratio_2_over_1_workers_after_start']:.2f}x after the pool's start) "
        f"(min cosine between runs {min_cosine:.6f}); written to {RESULTS.relative_to(REPO)}"
    )


if __name__ == "__main__":
    main()
