"""Search with one upload against the default index, models warm: what the Search page
waits for (decode, embed, search, calibrate, align the shortlist's pixels), against the raw
ONNX call on the same image; for held-out emoji (128 px PNG) and for a 12-megapixel JPEG
photograph (4000 x 3000).

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
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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
    results = {"emoji": _time(index, embedder, uploads)}
    photos = []
    for seed in range(max(3, args.repeats // 5)):
        buf = io.BytesIO()
        _photo(seed).save(buf, format="JPEG", quality=90)
        photos.append((f"photo-{seed}.jpg", buf.getvalue()))
    results["12 MP JPEG"] = _time(index, embedder, photos)
    for name, r in results.items():
        print(
            f"{name}, one upload, warm: p50 {r['p50_s'] * 1000:.0f} ms, "
            f"p95 {r['p95_s'] * 1000:.0f} ms (raw ONNX call p50 "
            f"{r['raw_onnx_p50_s'] * 1000:.0f} ms; ratio {r['ratio']:.2f}; n {r['n']})"
        )
    out = Path(__file__).resolve().parent / "results" / "app_search_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def _photo(seed: int) -> Image.Image:
    """A 4000 x 3000 picture with detail at every scale (smooth noise and shapes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((4000, 3000), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = int(rng.integers(0, 3800)), int(rng.integers(0, 2800))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse(
            (x, y, x + int(rng.integers(50, 600)), y + int(rng.integers(50, 600))), fill=colour
        )
    return image


def _time(index: Any, embedder: Any, uploads: list[tuple[str, bytes]]) -> dict[str, float]:
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
    return {
        "p50_s": p50,
        "p95_s": p95,
        "raw_onnx_p50_s": p50_raw,
        "ratio": p50 / p50_raw,
        "n": len(page),
    }


if __name__ == "__main__":
    main()
