"""Calibrated verdicts on look-alike domains: false alarms, recall of edited copies, top-1.

Domains: Fashion-MNIST (Debian dataset-fashion-mnist; 2,000 training images upscaled to
112 px, 400 unrelated held-out images, 300 edited copies) and OpenMoji (the default
index, its held-out split, 400 edited copies). For each, the calibrated verdict at the
index's default operating point is compared with a raw-cosine threshold set to give the
same false-alarm rate on the unrelated images.

    .venv/bin/python benchmarks/calibration_lookalikes.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.bench.edits import EDITS
from lib.datasets import load_fashion_mnist
from lib.defaults import DEFAULT_INDEX, OPENMOJI_DIR
from lib.images import list_image_files, load_image
from lib.index import ReplicaIndex, build_index, open_index
from lib.search import rank_vectors


def evaluate(
    index: ReplicaIndex, unrelated: list[Image.Image], sources: list[int], seed: int
) -> dict[str, object]:
    """False alarms on ``unrelated``, recall and top-1 on edited copies of ``sources`` rows."""
    embedder = index.create_embedder()
    rng = np.random.default_rng(seed)
    names = list(EDITS)
    kinds = [names[j % len(names)] for j in range(len(sources))]
    copies = [
        EDITS[k](load_image(index.metadata["path"].iloc[r]).image, rng)
        for k, r in zip(kinds, sources, strict=True)
    ]
    h = rank_vectors(index, embedder.embed_images(unrelated), ["u"] * len(unrelated), top_k=1)
    c = rank_vectors(index, embedder.embed_images(copies), ["c"] * len(copies), top_k=1)
    flagged = np.array([r.verdict == "copy" for r in c])
    fa = float(np.mean([r.verdict == "copy" for r in h]))
    raw_h = np.array([r.raw_score for r in h])
    raw_c = np.array([r.raw_score for r in c])
    raw_thr = float(np.quantile(raw_h, 1 - max(fa, 1.0 / len(raw_h))))
    top = np.array([r.matches[0].id for r in c])
    same = np.einsum("nd,nd->n", index.get_vectors(top), index.get_vectors(np.array(sources)))
    return {
        "n_unrelated": len(unrelated),
        "n_copies": len(copies),
        "false_alarms": fa,
        "recall": float(flagged.mean()),
        "raw_recall_same_false_alarms": float(np.mean(raw_c > raw_thr)),
        "top1_exact": float(np.mean(top == np.array(sources))),
        "top1_or_identical_variant": float(np.mean((top == np.array(sources)) | (same >= 0.9))),
        "per_edit_recall": {
            k: float(flagged[[i for i, x in enumerate(kinds) if x == k]].mean()) for k in names
        },
        "copy_threshold": index.calibration.copy_threshold,
    }


def fashion_mnist(
    n_train: int, n_unrelated: int, n_copies: int, workdir: Path
) -> dict[str, object]:
    images, _ = load_fashion_mnist("test", limit=n_train + n_unrelated)
    order = np.random.default_rng(0).permutation(len(images))

    def render(i: int) -> Image.Image:
        return Image.fromarray(255 - images[i]).convert("RGB").resize((112, 112))

    train = workdir / "fmnist"
    train.mkdir()
    for n, i in enumerate(order[:n_train]):
        render(int(i)).save(train / f"{n:05d}.png")
    index = build_index(train, workdir / "fmnist-idx", embedder="sscd").index
    unrelated = [render(int(i)) for i in order[n_train : n_train + n_unrelated]]
    sources = np.random.default_rng(1).choice(n_train, n_copies, replace=False).tolist()
    return evaluate(index, unrelated, sources, seed=2)


def openmoji(n_copies: int) -> dict[str, object]:
    index = open_index(DEFAULT_INDEX)
    unrelated = [load_image(p).image for p in list_image_files(OPENMOJI_DIR / "heldout")]
    sources = np.random.default_rng(1).choice(index.count, n_copies, replace=False).tolist()
    return evaluate(index, unrelated, sources, seed=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "fashion-mnist": fashion_mnist(2000 // scale, 400 // scale, 300 // scale, Path(tmp)),
            "openmoji": openmoji(400 // scale),
        }
    print(
        f"{'domain':14s} {'false alarms':>12s} {'recall':>7s} {'raw recall':>10s} "
        f"{'top-1':>6s} {'top-1 var':>9s}"
    )
    for name, r in results.items():
        print(
            f"{name:14s} {r['false_alarms']:12.1%} {r['recall']:7.1%} "
            f"{r['raw_recall_same_false_alarms']:10.1%} {r['top1_exact']:6.1%} "
            f"{r['top1_or_identical_variant']:9.1%}"
        )
    for name, r in results.items():
        edits = ", ".join(f"{k} {v:.0%}" for k, v in r["per_edit_recall"].items())  # type: ignore[attr-defined]
        print(f"{name} recall per edit: {edits}")
    out = Path(__file__).resolve().parent / "results" / "calibration_lookalikes.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
