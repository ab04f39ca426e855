"""Search with one upload against the default index, models warm: what the Search page
waits for (decode, embed, search, calibrate), against the raw ONNX call on the same image.

    .venv/bin/python benchmarks/app_search_latency.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.defaults import DEFAULT_INDEX, OPENMOJI_DIR
from lib.images import list_image_files, load_image
from lib.index import open_index
from lib.search import search_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    index = open_index(DEFAULT_INDEX)
    embedder = index.create_embedder()
    files = list_image_files(OPENMOJI_DIR / "heldout")[: args.repeats]
    uploads = []
    for f in files:  # what a browser upload delivers: encoded bytes
        buf = io.BytesIO()
        load_image(f).image.save(buf, format="PNG")
        uploads.append((f.name, buf.getvalue()))
    search_images(index, uploads[:1], embedder=embedder)  # warm up
    page, raw = [], []
    for name, data in uploads:
        t0 = time.perf_counter()
        search_images(index, [(name, data)], embedder=embedder, top_k=5)
        page.append(time.perf_counter() - t0)
        prepared = embedder.prepare(load_image(data).image)[None]
        t0 = time.perf_counter()
        embedder.embed_prepared(prepared)
        raw.append(time.perf_counter() - t0)
    p50, p50_raw = statistics.median(page), statistics.median(raw)
    p95 = sorted(page)[int(0.95 * (len(page) - 1))]
    print(
        f"one upload, warm: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
        f"(raw ONNX call p50 {p50_raw * 1000:.0f} ms; ratio {p50 / p50_raw:.2f})"
    )
    out = Path(__file__).resolve().parent / "results" / "app_search_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "p50_s": p50,
                "p95_s": p95,
                "raw_onnx_p50_s": p50_raw,
                "ratio": p50 / p50_raw,
                "n": len(page),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
