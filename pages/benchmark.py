"""Benchmark page: which detector to trust. Run a synthetic-copy benchmark (or load a saved
result) and see the metrics table, precision-recall curves and the hardest failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import streamlit as st

from lib.app_config import load_config
from lib.bench.evaluate import evaluate
from lib.bench.generator import generate_benchmark
from lib.bench.manifest import BenchmarkNotFound
from lib.defaults import DATA_DIR
from lib.embedders import EMBEDDERS, EmbedderUnavailable
from lib.st_cache import cached_thumbnail
from pages.common import (
    GLOSSARY,
    MIN_CALIBRATION_IMAGES,
    VERDICT_BADGES,
    leave_folder_mode,
    show_error,
    streamlit_progress,
    verdict_badge,
)

BENCH_ROOT = DATA_DIR / "cache"
REPORT_ROOT = DATA_DIR.parent / "reports"
RESULT_KEY = "bench_result_dir"

leave_folder_mode()
st.header("Benchmark: which detector to trust?")
st.caption(
    "Synthetic copies with known sources (edits, pasted objects, cut-mix boxes) and "
    "look-alike distractors; every embedder is scored on the same queries."
)
config = load_config()


def saved_results() -> list[Path]:
    """Folders holding a results.json written by a benchmark run."""
    roots = [REPORT_ROOT, BENCH_ROOT]
    found = [p.parent for r in roots if r.is_dir() for p in r.glob("*/results.json")]
    return sorted(set(found))


def benchmarks() -> list[Path]:
    """Benchmark folders (with a manifest.json and queries/) under data/cache."""
    if not BENCH_ROOT.is_dir():
        return []
    return sorted(
        p.parent for p in BENCH_ROOT.glob("*/manifest.json") if (p.parent / "queries").is_dir()
    )


run_tab, make_tab = st.tabs(["Run or load", "Make a benchmark"])
with make_tab:
    folder = st.text_input(
        "Images to build it from (an allowed folder)",
        key="bench_source",
        value="/usr/share/tuxpaint/stamps",
    )
    name = st.text_input("Benchmark name", value="bench-tuxpaint", key="bench_name")
    cols = st.columns(3)
    n_sources = cols[0].number_input("Sources", 4, 500, 60, key="bench_n_sources")
    n_distractors = cols[1].number_input("Distractors", 0, 500, 60, key="bench_n_distractors")
    seed = cols[2].number_input("Seed", 0, 10_000, 0, key="bench_seed")
    if st.button("Make benchmark", key="bench_make"):
        try:
            source = config.allowed_image_dir(folder)
            callback, bar = streamlit_progress("Writing copies")
            manifest = generate_benchmark(
                source,
                BENCH_ROOT / name,
                n_sources=int(n_sources),
                n_distractors=int(n_distractors),
                seed=int(seed),
                overwrite=True,
                progress=callback,
            )
            bar.empty()
            st.success(
                f"Made **{name}**: {len(manifest.references)} references, "
                f"{len(manifest.queries)} queries."
            )
        except (PermissionError, FileNotFoundError, ValueError, OSError) as exc:
            show_error("The benchmark could not be made", exc, "Pick another folder or name.")

with run_tab:
    mode = st.radio(
        "Mode",
        ["Load a saved result", "Run a benchmark"],
        horizontal=True,
        key="bench_mode",
        label_visibility="collapsed",
    )
    if mode == "Load a saved result":
        options = [str(p) for p in saved_results()]
        if not options:
            st.info("No saved result yet: run a benchmark first.")
        else:
            st.session_state.setdefault(RESULT_KEY, options[0])
            picked = st.selectbox(
                "Result", options, key="bench_saved", format_func=lambda p: Path(p).name
            )
            if st.button("Load", key="bench_load"):
                st.session_state[RESULT_KEY] = picked
    else:
        available = [str(p) for p in benchmarks()]
        if not available:
            st.info("No benchmark yet: make one in the other tab.")
        else:
            bench = st.selectbox(
                "Benchmark", available, key="bench_pick", format_func=lambda p: Path(p).name
            )
            chosen = st.multiselect(
                "Embedders", list(EMBEDDERS), default=["sscd", "pixels"], key="bench_embedders"
            )
            if st.button("Run", key="bench_run", type="primary", disabled=not chosen):
                try:
                    callback, bar = streamlit_progress("Embedding references and queries")
                    report = evaluate(bench, chosen, progress=callback)
                    bar.empty()
                    out = REPORT_ROOT / Path(bench).name
                    report.write(out)
                    st.session_state[RESULT_KEY] = str(out)
                except (BenchmarkNotFound, EmbedderUnavailable, ValueError, OSError) as exc:
                    show_error("The benchmark could not run", exc)

result_dir = st.session_state.get(RESULT_KEY)
if not result_dir or not (Path(result_dir) / "results.json").is_file():
    st.stop()
result_path = Path(result_dir)
results = json.loads((result_path / "results.json").read_text(encoding="utf-8"))
bench_dir = Path(results["benchmark"])

st.subheader(f"Results: {result_path.name}")
st.markdown((result_path / "table.md").read_text(encoding="utf-8"))
with st.expander("What the columns mean"):
    for term in ("uAP", "mAP", "recall@P90", "recall@k", "calibrated score", "raw cosine"):
        st.markdown(f"**{term}**: {GLOSSARY[term]}")
    st.markdown(
        "**copy verdicts / distractors flagged**: the share of copies called COPY, and of "
        "look-alike distractors wrongly called COPY, at the index's own threshold (about 2% "
        "false alarms when the references are enough to calibrate)."
    )
for entry in results.get("embedders", []):
    cal = entry.get("calibration", {})
    measured = cal.get("null_sample")
    too_small = measured == 0 or (
        measured is None and entry.get("n_references", 0) < MIN_CALIBRATION_IMAGES
    )
    if too_small:
        st.warning(
            f"**`{entry['name']}`: {entry.get('n_references', 0)} references are too few to "
            "calibrate.** With fewer than "
            f"{MIN_CALIBRATION_IMAGES} images the index cannot measure how unrelated images "
            "score, so its verdicts rest on default thresholds (copy at calibrated ≥ "
            f"{cal.get('copy_threshold', 0.0):+.3f}) that were not measured on these images: "
            "its copy verdicts and distractors flagged do not hold the advertised "
            f"{cal.get('false_alarm_rate', 0.02):.0%} false-alarm rate. Make the benchmark with "
            "more sources to calibrate it; the ranking metrics (uAP, mAP, recall) do not "
            "depend on it.",
            icon=":material/warning:",
        )
for name, reason in results.get("unavailable", {}).items():
    st.warning(f"`{name}` could not run here: {reason}")

curves = sorted(result_path.glob("pr_*.png"))
if curves:
    st.subheader("Precision-recall curves")
    cols = st.columns(2)
    for i, png in enumerate(curves):
        cols[i % 2].image(str(png), caption=png.stem)

st.subheader("Hardest failures")
rows = list(csv.DictReader((result_path / "per_query.csv").open(encoding="utf-8")))
names = sorted({r["embedder"] for r in rows})
who = st.selectbox("Embedder", names, key="bench_failures_embedder")
missed = [r for r in rows if r["embedder"] == who and r["source"] and r["source_rank"] != "1"]
false_alarms = [
    r for r in rows if r["embedder"] == who and not r["source"] and r["verdict"] == "copy"
]
copy_at = next(
    (
        e.get("calibration", {}).get("copy_threshold")
        for e in results.get("embedders", [])
        if e.get("name") == who
    ),
    None,
)
missed.sort(key=lambda r: float(r["top1_calibrated"] or 0), reverse=True)
false_alarms.sort(key=lambda r: float(r["top1_calibrated"] or 0), reverse=True)
st.caption(
    f"{len(missed)} copies whose source was not ranked first; "
    f"{len(false_alarms)} distractors called copies."
)
for title, group in (
    ("Missed copies (query, wrong top match, true source)", missed),
    ("False alarms (distractor, its top match)", false_alarms),
):
    st.markdown(f"**{title}**")
    for r in group[:6]:
        cols = st.columns([1, 1, 1, 2])
        for col, rel in zip(cols[:3], (r["query"], r["top1"], r["source"]), strict=True):
            if rel:
                thumb = cached_thumbnail(str(bench_dir / rel), 120)
                if thumb is not None:
                    col.image(thumb, caption=Path(rel).name)
        cols[3].markdown(
            f"`{r['kind']}` · top-1 raw {float(r['top1_raw']):.3f} · calibrated "
            f"{float(r['top1_calibrated']):+.3f} · "
            + (verdict_badge(r["verdict"]) if r["verdict"] in VERDICT_BADGES else r["verdict"])
            + (f" (copy at ≥ {copy_at:+.3f})" if copy_at is not None else "")
            + (f" · source rank {r['source_rank'] or '>k'}" if r["source"] else "")
        )
