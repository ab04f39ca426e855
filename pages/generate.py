# Generate page: make images with a bundled model (trained by this project on OpenMoji
# subsets) or a local diffusers pipeline, see each beside its top-1 training match with a
# verdict, and send the batch to the Distributions page.
from __future__ import annotations

import uuid
from pathlib import Path

import streamlit as st
from PIL import Image

from lib.allowed_paths import OUTSIDE_REASON, app_roots, resolve_inside
from lib.app_config import load_config
from lib.diffusion.memorization import check_model
from lib.diffusion.pipelines import (
    DEFAULT_MODELS_ROOT,
    ONLY_BUNDLED,
    BundledModel,
    bundled_models,
    generate,
    load_pipeline,
)
from lib.diffusion.sample import load_model, sample
from lib.diffusion.study import DEFAULT_HELDOUT, training_subset_index
from lib.embedders import Embedder, create_embedder
from lib.search import QueryResult, ordered_pair, search_files
from lib.st_cache import cached_query_thumbnail, cached_thumbnail
from pages.case_ui import add_files_to_case
from pages.common import (
    GLOSSARY,
    LAST_BATCH_KEY,
    LAST_BATCH_TARGET_KEY,
    MEASURE_BATCH_KEY,
    current_index,
    display_path,
    embedder_at,
    index_at,
    progress_while,
    show_error,
    staged_progress,
    threshold_note,
    verdict_badge,
)

OWN_SUBSET = "this model's own training images, at its size (as the study does)"
# st.session_state: the last memorization check (model name, samples, report, images).
MEMORIZATION_KEY = "memorization_report"


@st.cache_resource(show_spinner=False)
def sscd() -> Embedder:
    """The paper's copy detector, loaded once per process."""
    return create_embedder("sscd")


def memorization_section(model: BundledModel) -> None:
    """Memorized generations found without the training set (lib.diffusion.memorization):
    many seeds, one picture. For a bundled model, also how the flag agrees with the
    training-set verdict."""
    with st.expander("Does this model memorize? Check it without its training set"):
        st.caption(
            "An artist rarely has a model's training set. A model that memorized a picture "
            "draws it again from other seeds, so each generation with a near-identical twin "
            "among the others is flagged. Near-identical is measured against pairs of "
            "different real pictures of this kind, and the page says how often those pass."
        )
        n = int(st.select_slider("Samples", [16, 32, 64, 128], value=64, key="memorization_n"))
        if st.button("Check for memorized generations", key="memorization_run"):
            bar = st.progress(0.0, text="Sampling")
            try:
                report, images = check_model(
                    model.path,
                    n,
                    embedder=sscd(),
                    heldout_dir=DEFAULT_HELDOUT,
                    progress=staged_progress(bar, "Sampling, then checking", 0.0, 1.0),
                )
            except (ValueError, OSError, RuntimeError) as exc:
                bar.empty()
                show_error("The check could not run", exc, "Check that `make setup` ran.")
                return
            bar.empty()
            st.session_state[MEMORIZATION_KEY] = (model.name, n, report, images)
        stored = st.session_state.get(MEMORIZATION_KEY)
        if not stored or stored[0] != model.name:
            return
        _, n, report, images = stored
        badge = "orange" if report.groups else "grey"
        st.markdown(
            f":{badge}-badge[{sum(report.flagged)} of {report.n} flagged] {report.sentence()}"
        )
        if report.agreement:
            a = report.agreement
            cols = st.columns(3)
            cols[0].metric("Copies by the training-set verdict", f"{a['copies']} of {report.n}")
            cols[1].metric(
                "Flagged that are copies (precision)",
                "-" if a["precision"] is None else f"{a['precision']:.0%}",
            )
            cols[2].metric(
                "Copies flagged (recall)", "-" if a["recall"] is None else f"{a['recall']:.0%}"
            )
        for number, group in enumerate(report.groups[:6], start=1):
            st.caption(f"Group {number}: seeds {', '.join(str(i) for i in group)}")
            cols = st.columns(min(len(group), 8))
            for col, i in zip(cols, group[:8], strict=False):
                col.image(images[i].resize((96, 96), Image.Resampling.NEAREST), caption=f"seed {i}")


st.header("Generate: make images and check them against the training set")
index = current_index()
if index is None:
    st.stop()
config = load_config()

models = bundled_models(DEFAULT_MODELS_ROOT)
models_folder = display_path(DEFAULT_MODELS_ROOT)
sources = ["a bundled model", "a local diffusers pipeline"]
source = st.radio("Generate with", sources, horizontal=True, key="generate_source")
model_path: Path | None = None
pipeline_dir: Path | None = None
prompt = ""
if source == "a bundled model":
    if not models:
        st.info(
            f"No bundled model yet under `{models_folder}`: train one with "
            "`python -m lib train ...` and `python -m lib model export ...` (see the README), "
            "or use a local pipeline folder."
        )
    else:
        picked = st.selectbox(
            "Model",
            models,
            key="generate_model",
            format_func=lambda m: f"{m.name} (trained on {m.manifest.n_train} images)",
        )
        model_path = picked.path
        against = st.radio(
            "Search the generations against",
            [OWN_SUBSET, "the index selected in the sidebar"],
            key="generate_against_choice",
            help="A 32 px generation compares fairly only with training images brought to "
            "32 px too; the sidebar index holds the full-size renders of every emoji.",
        )
        memorization_section(picked)
else:
    st.caption(ONLY_BUNDLED + " unless you give a pipeline folder saved with save_pretrained.")
    folder = st.text_input("Pipeline folder (inside an allowed root)", key="generate_pipeline")
    prompt = st.text_input("Prompt (text-to-image pipelines only)", key="generate_prompt")
    if folder:
        try:
            pipeline_dir = config.allowed_image_dir(folder)
        except (PermissionError, FileNotFoundError) as exc:
            show_error("That folder cannot be used", exc, "Pick a folder inside an allowed root.")

cols = st.columns(3)
n = int(cols[0].number_input("Images", 1, 256, 16, key="generate_n"))
seed = int(cols[1].number_input("Seed", 0, 1_000_000, 0, key="generate_seed"))
steps = int(cols[2].number_input("Steps", 1, 1000, 50, key="generate_steps"))
ready = model_path is not None or pipeline_dir is not None
if st.button("Generate", key="generate_run", type="primary", disabled=not ready):
    # one bar from the first second: loading (no progress of its own, so it moves with the
    # seconds spent), the model's training images indexed, then each denoising step
    bar = st.progress(0.0, text="Starting…")
    try:
        against_path, against_size, against_label = str(index.path), None, ""
        if model_path is not None:
            progress_while(
                bar, "Loading the model", lambda: load_model(model_path), 0.0, 0.15, 15.0
            )
            if against == OWN_SUBSET:
                subset = progress_while(
                    bar,
                    "Indexing the model's training images",
                    lambda: training_subset_index(picked),  # built on first use, then cached
                    0.15,
                    0.3,
                    10.0,
                )
                against_path = str(subset.path)
                against_size = picked.manifest.image_size
                against_label = (
                    f"{picked.name}'s own {picked.manifest.n_train} training images "
                    f"at {against_size} px"
                )
            callback = staged_progress(bar, "Denoising", 0.3, 1.0)
            images = sample(model_path, n, steps=steps, seed=seed, progress=callback)
        else:
            pipeline = progress_while(
                bar, "Loading the pipeline", lambda: load_pipeline(pipeline_dir), 0.0, 0.3, 15.0
            )
            images = progress_while(
                bar,
                f"Generating {n} image(s)",
                lambda: generate(pipeline, prompt or None, n, steps=steps, seed=seed),
                0.3,
                1.0,
                max(5.0, n * steps * 0.05),
            )
        bar.empty()
        out = config.upload_root / f"generated-{uuid.uuid4().hex[:8]}"
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            image.save(out / f"gen_{i:04d}.png")
        st.session_state[LAST_BATCH_KEY] = str(out)
        st.session_state[LAST_BATCH_TARGET_KEY] = {
            "index": against_path,
            "image_size": against_size,
            "label": against_label,
        }
    except (ValueError, OSError, RuntimeError) as exc:
        bar.empty()
        show_error("Generation failed", exc, "Check the model folder, the prompt and the steps.")

batch = st.session_state.get(LAST_BATCH_KEY)
if not batch or not Path(batch).is_dir():
    st.stop()
files = sorted(Path(batch).glob("*.png"))
target = st.session_state.get(LAST_BATCH_TARGET_KEY) or {}
searched_in = target.get("index", str(index.path))
sidebar_index = index
label = ""
if searched_in != str(index.path):
    model_index = index_at(searched_in)
    if model_index is None:
        st.stop()
    index = model_index
    label = target.get("label") or f"the model's own {model_index.count} training images"
    st.caption(f"Searched against {label}.")
embedder = embedder_at(index.path)
if embedder is None:
    st.stop()
with st.spinner("Searching the training set…"):
    results = search_files(index, files, embedder=embedder, top_k=1)
copies = sum(r.verdict == "copy" for r in results)
st.markdown(f"**{len(results)} generations**, {copies} flagged as copies")
note = threshold_note(index, label)
if index is not sidebar_index:
    other = sidebar_index.calibration.copy_threshold
    note += (
        f" The sidebar index ({sidebar_index.count:,} full-size images) measures its own: copy at "
        f"≥ {other:+.3f}. How far an unrelated image's best match stands above its next ones "
        "depends on the images' kind, size and number, so each index sets its own bar."
    )
st.caption(note)


def measure_on_distributions() -> None:
    """on_click: ask the Distributions page to measure this batch as soon as it opens."""
    st.session_state[MEASURE_BATCH_KEY] = True


if st.button(
    "Measure this batch on the Distributions page",
    key="generate_to_distributions",
    on_click=measure_on_distributions,
):
    st.switch_page("pages/distributions.py")
if st.button("Add these generations to the case", key="generate_to_case"):
    add_files_to_case(index, files, embedder, index.calibration.false_alarm_rate)
per_row = 4
copy_at = index.calibration.copy_threshold


# The numbers beside a badge, led by the rule that decided it: pixels that line up,
# near-identical fingerprints, or the calibrated score (never a calibrated score under its
# threshold beside a COPY without saying what else fired).
def decided_by(result: QueryResult, copy_at: float) -> str:
    score, needed = ordered_pair(result.score, copy_at, sign=True)
    numbers = f"raw {result.raw_score:.3f} · calibrated {score} (copy at ≥ {needed})"
    if result.verdict == "copy" and result.rule == "alignment" and result.alignment is not None:
        aligned, at = ordered_pair(result.alignment, result.alignment_threshold or 0.0)
        return f"pixels line up at {aligned} (copy at ≥ {at}) · {numbers}"
    if result.verdict == "copy" and result.rule == "identical":
        return f"near-identical: raw {result.raw_score:.3f} ≥ {result.identical_threshold:.2f}"
    return numbers


for start in range(0, len(results), per_row):
    cols = st.columns(per_row)
    for col, result in zip(cols, results[start : start + per_row], strict=False):
        with col.container(border=True):
            pair = st.columns(2)
            generated = cached_query_thumbnail(result.query, 110)
            if generated is not None:
                pair[0].image(generated, caption=Path(result.query).stem.replace("_", " "))
            top = result.top
            if top is not None:
                match = cached_thumbnail(top.path, 110)
                if match is not None:
                    pair[1].image(match, caption=top.caption or Path(top.path).name)
                elif resolve_inside(top.path, app_roots()) is None:
                    pair[1].caption(f"({OUTSIDE_REASON})")
            if result.error:
                st.caption(f"Could not be read: {result.error}")
                continue
            st.markdown(
                f"{verdict_badge(result.verdict)}  \n{decided_by(result, copy_at)}",
                help=GLOSSARY["calibrated score"],
            )
