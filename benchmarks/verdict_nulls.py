"""Which null keeps the promise? Alternatives for the calibrated score's null, compared on
the verdict benchmark's domains (run ``benchmarks/verdicts.py`` first: it builds the
domain folders and indexes this script reuses).

For the whole-image calibrated score alone (no pixel alignment), each null is fitted on
the domain's index and judged by the false alarms it gives on the unseen, unrelated
images at the promised 0.5 / 2 / 5 / 10% (as a ratio to the promise), and by the edited
copies it flags at 2% with the right top-1:

- ``leave-one-out (v1)``: each sampled indexed image searched without itself and its
  near-duplicates (cosine >= 0.9), Replica's rule before calibration v2 (with v2's
  64-neighbour background, so only the null differs);
- ``family by cosine``: without every indexed image at cosine >= 0.85 to it;
- ``family component (v2)``: without its connected component at cosine >= 0.85
  (variants linked in a chain), 64 neighbours deep: the shipped null.

A raw-cosine threshold set on the unrelated images themselves at 2% is shown for the
separation it gives.

    .venv/bin/python benchmarks/verdict_nulls.py [--domains openmoji,tuxpaint]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._verdict_data import prepare
from lib.bench.domains import DOMAINS
from lib.calibration import Calibration, fit_calibration
from lib.images import load_image
from lib.index import ReplicaIndex, open_index
from lib.search import rank_vectors

RATES = (0.005, 0.02, 0.05, 0.10)


def query_vectors(index: ReplicaIndex, folder: Path, part: str) -> tuple[list[str], np.ndarray]:
    """Embeddings of a benchmark folder's images, cached beside it."""
    cache = folder / f"{part}-vectors.npz"
    files = sorted((folder / part).glob("*.png"))
    if cache.is_file():
        data = np.load(cache)
        return [str(n) for n in data["names"]], data["vectors"]
    model = index.create_embedder()
    vectors = model.embed_images([load_image(p).image for p in files])
    np.savez(cache, names=np.array([p.name for p in files]), vectors=vectors)
    return [p.name for p in files], vectors


def v1_null(index: ReplicaIndex) -> Calibration:
    """Replica's first rule: only near-duplicates (cosine >= 0.9 to the sampled image)
    left out; v2's deeper background (64 neighbours) is kept."""
    base = Calibration(family_cosine=0.9)
    return fit_calibration(index.faiss, index.vectors(), base=base, family_max=1)


def cosine_family_null(index: ReplicaIndex) -> Calibration:
    """Every image at cosine >= 0.85 to the sampled one left out, but no chains."""
    return fit_calibration(index.faiss, index.vectors(), family_max=1)


def evaluate(name: str) -> dict[str, object]:
    folder = prepare(name, 2000, 1000, 50)
    truth = json.loads((folder / "truth.json").read_text())
    index = open_index(folder / "index")
    u_names, u = query_vectors(index, folder, "unrelated")
    c_names, c = query_vectors(index, folder, "copies")
    names = index.metadata["path"].map(lambda p: Path(p).name)
    ids = dict(zip(names, index.metadata["id"], strict=True))
    source = np.array([ids[truth["copies"][n]["source"]] for n in c_names])
    edited = np.array([truth["copies"][n]["kind"] != "composed" for n in c_names])
    nulls = {
        "leave-one-out (v1)": v1_null(index),
        "family by cosine": cosine_family_null(index),
        "family component (v2)": fit_calibration(index.faiss, index.vectors()),
    }
    out: dict[str, object] = {"domain": name}
    for label, null in nulls.items():
        ru = rank_vectors(index, u, u_names, top_k=1, calibration=null)
        rc = rank_vectors(index, c, c_names, top_k=1, calibration=null)
        ratios = []
        for rate in RATES:
            cal = null.with_false_alarm_rate(rate)
            ratios.append(np.mean([cal.verdict(r.score, r.raw_score) == "copy" for r in ru]) / rate)
        cal = null.with_false_alarm_rate(0.02)
        right = np.array([r.matches[0].id for r in rc]) == source
        flagged = np.array([cal.verdict(r.score, r.raw_score) == "copy" for r in rc]) & right
        out[label] = {"ratios": ratios, "edited_flagged": float(flagged[edited].mean())}
    raw_u = np.array([r.raw_score for r in rank_vectors(index, u, u_names, top_k=1)])
    rc = rank_vectors(index, c, c_names, top_k=1)
    right = np.array([r.matches[0].id for r in rc]) == source
    raw_c = np.array([r.raw_score for r in rc])
    out["raw cosine at the unrelated 98th percentile"] = float(
        np.mean((raw_c > np.quantile(raw_u, 0.98)) & right & edited) / edited.mean()
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default=",".join(DOMAINS))
    args = parser.parse_args()
    results = [evaluate(d) for d in args.domains.split(",")]
    out = Path(__file__).resolve().parent / "results" / "verdict_nulls.json"
    out.write_text(json.dumps(results, indent=2))
    labels = ["leave-one-out (v1)", "family by cosine", "family component (v2)"]
    print("| domain | " + " | ".join(labels) + " | raw cosine, 2% set on the unrelated |")
    print("|---|" + "---|" * (len(labels) + 1))
    for r in results:
        cells = []
        for label in labels:
            v = r[label]
            ratios = " / ".join(f"{x:.2f}" for x in v["ratios"])  # type: ignore[index]
            cells.append(f"{ratios}; {v['edited_flagged']:.0%}")  # type: ignore[index]
        raw = r["raw cosine at the unrelated 98th percentile"]
        print(f"| {r['domain']} | " + " | ".join(cells) + f" | {raw:.0%} |")
    print(f"\n(false alarms / promise at 0.5 / 2 / 5 / 10%; edited copies flagged at 2%; {out})")


if __name__ == "__main__":
    main()
