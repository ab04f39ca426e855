"""Embedding throughput: the indexing pipeline against the bare ONNX session, same run.

Writes N seeded photo-like JPEGs (640-1600 px, varied aspect ratios, quality 90) to a
temporary folder (or takes the first N images of ``--folder``), then measures, in
interleaved rounds so that other load on the machine hits all three alike:

  raw    the default ``sscd`` embedder's ``embed_prepared`` on pre-decoded, pre-resized
         uint8 batches of exactly the shapes and batch sizes the pipeline produces;
  e2e    ``lib.index.build_index(folder, out)`` with that (warm) embedder: decoding,
         hashing, resizing, inference, calibration and the index write;
  naive  per file: Pillow open (no draft), convert, the embedder's prepare, embed one.

Throughputs are images/s (medians over rounds). The figures to quote are the ratios
e2e/raw and e2e/naive (medians of per-round ratios): absolute speeds on a shared machine
are noise. "cores used" is this process's CPU seconds per wall second; "CPU pressure"
the share of the time some task on the machine waited for a CPU (Linux PSI): near 0 on
an idle machine, near 1 when other work competed throughout.

    .venv/bin/python benchmarks/embed_throughput.py [--quick] [--folder DIR] [--n N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import write_photos

from lib.embedders import Embedder, create_embedder
from lib.images import list_image_files, load_image
from lib.index import build_index

RESULTS = Path(__file__).resolve().parent / "results" / "embed_throughput.json"


def pipeline_batches(paths: list[Path], embedder: Embedder, batch_size: int) -> list[np.ndarray]:
    """The uint8 batches the pipeline feeds the model: decoded with the same draft and
    resize, grouped by shape, at most ``batch_size`` per batch."""
    by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
    for path in paths:
        image = load_image(path, draft_short_side=embedder.draft_short_side).image
        arr = embedder.prepare(image)
        by_shape.setdefault(arr.shape, []).append(arr)
    return [
        np.stack(group[start : start + batch_size])
        for group in by_shape.values()
        for start in range(0, len(group), batch_size)
    ]


def cpu_pressure_us() -> int | None:
    """Microseconds some task on this machine waited for a CPU (Linux PSI), or None."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(line.rsplit("total=", 1)[1])


def timed(work: Callable[[], object]) -> dict[str, float]:
    """Run ``work``: wall seconds, this process's CPU seconds, and the share of the wall
    time in which some task waited for a CPU (1.0: the machine was oversubscribed
    throughout; near 0: measured on an idle machine)."""
    psi0, cpu0, wall0 = cpu_pressure_us(), time.process_time(), time.perf_counter()
    work()
    wall = time.perf_counter() - wall0
    out = {"wall_s": wall, "cpu_s": time.process_time() - cpu0}
    psi1 = cpu_pressure_us()
    if psi0 is not None and psi1 is not None:
        out["cpu_pressure"] = (psi1 - psi0) / 1e6 / wall
    return out


def run_raw(embedder: Embedder, batches: list[np.ndarray]) -> None:
    for batch in batches:
        embedder.embed_prepared(batch)


def run_naive(paths: list[Path], embedder: Embedder) -> None:
    for path in paths:
        with Image.open(path) as image:
            arr = embedder.prepare(image.convert("RGB"))
        embedder.embed_prepared(arr[None])


def collect_images(args: argparse.Namespace, workdir: Path) -> tuple[Path, list[Path], str]:
    """(folder to index, its files, a description): synthetic JPEGs unless --folder."""
    if args.folder:
        files = list_image_files(args.folder)[: args.n]
        folder = workdir / "images"
        folder.mkdir()
        for i, f in enumerate(files):  # links keep build_index on exactly these N files
            (folder / f"{i:05d}_{f.name}").symlink_to(f.resolve())
        return folder, sorted(folder.iterdir()), f"first {len(files)} images of {args.folder}"
    folder = workdir / "images"
    start = time.perf_counter()
    files = write_photos(folder, args.n, seed=args.seed)
    mean_kb = np.mean([f.stat().st_size for f in files]) / 1e3
    log(f"wrote {len(files)} JPEGs ({mean_kb:.0f} kB mean) in {time.perf_counter() - start:.0f} s")
    return folder, files, f"{len(files)} synthetic JPEGs, 640-1600 px, q90, seed {args.seed}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=48, 2 rounds")
    parser.add_argument("--n", type=int, help="number of images (default 192, quick 48)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument("--folder", type=Path, help="use the first N images of this folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.n = args.n or (48 if args.quick else 192)
    rounds = args.rounds or (2 if args.quick else 3)

    embedder = create_embedder("sscd")
    with tempfile.TemporaryDirectory(prefix="replica-bench-") as tmp:
        workdir = Path(tmp)
        folder, files, described = collect_images(args, workdir)
        batches = pipeline_batches(files, embedder, args.batch_size)
        shapes = sorted({tuple(b.shape[1:3]) for b in batches})
        log(f"{len(batches)} batches over {len(shapes)} input shapes")
        embedder.embed_prepared(batches[0][:2])  # session creation and first-run setup
        n = len(files)
        bs = args.batch_size
        runs: list[dict[str, float]] = []
        for r in range(rounds):
            out = workdir / f"index-{r}"
            m = {
                "raw": timed(partial(run_raw, embedder, batches)),
                "e2e": timed(partial(build_index, folder, out, embedder=embedder, batch_size=bs)),
                "naive": timed(partial(run_naive, files, embedder)),
            }
            run = {f"{k}_images_per_s": n / v["wall_s"] for k, v in m.items()}
            run["e2e_over_raw"] = m["raw"]["wall_s"] / m["e2e"]["wall_s"]
            run["e2e_over_naive"] = m["naive"]["wall_s"] / m["e2e"]["wall_s"]
            run["e2e_over_raw_cpu"] = m["raw"]["cpu_s"] / m["e2e"]["cpu_s"]
            for k, v in m.items():
                run[f"{k}_cores_used"] = v["cpu_s"] / v["wall_s"]
                if "cpu_pressure" in v:
                    run[f"{k}_cpu_pressure"] = v["cpu_pressure"]
            runs.append(run)
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v:.2f}" for k, v in run.items()))

    median = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
    result = {
        "images": described,
        "n": n,
        "batch_size": args.batch_size,
        "input_shapes": [list(s) for s in shapes],
        "batch_sizes": [len(b) for b in batches],
        "rounds": runs,
        "median": median,
        "target_e2e_over_raw": 0.85,
        "machine": {
            "cpu_count": os.cpu_count(),
            "ort_threads": getattr(embedder, "threads", None),
            "REPLICA_THREADS": os.environ.get("REPLICA_THREADS"),
            "python": platform.python_version(),
            "loadavg_end": os.getloadavg(),
        },
    }
    print(f"\n{described}; {len(batches)} batches, {len(shapes)} shapes, {rounds} rounds")
    ratio = {"raw": median["e2e_over_raw"], "e2e": 1.0, "naive": median["e2e_over_naive"]}
    print("| measure | images/s | e2e / this | cores used | CPU pressure |")
    print("|---|---|---|---|---|")
    for key in ("raw", "e2e", "naive"):
        pressure = median.get(f"{key}_cpu_pressure", float("nan"))
        print(
            f"| {key} | {median[f'{key}_images_per_s']:.1f} | {ratio[key]:.2f} "
            f"| {median[f'{key}_cores_used']:.2f} | {pressure:.2f} |"
        )
    print(
        f"e2e / raw = {median['e2e_over_raw']:.2f} (target >= 0.85; per round: "
        + ", ".join(f"{run['e2e_over_raw']:.2f}" for run in runs)
        + f"), e2e / naive = {median['e2e_over_naive']:.2f}. Ratios are medians of "
        "per-round ratios, rates medians of rates."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
