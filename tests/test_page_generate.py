"""Generate page (AppTest): a local pipeline folder generates a batch that is searched
against the index and handed to the Distributions page."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.diffusion.config import TrainConfig, build_unet
from lib.index import build_index
from lib.replication import TRAINING_BASELINE_SAMPLE
from tests.synthetic import write_scenes

PAGE = "../pages/generate.py"
DISTRIBUTIONS = "../pages/distributions.py"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    from diffusers import DDPMPipeline, DDPMScheduler

    write_scenes(tmp_path / "train", range(12))
    index = build_index(tmp_path / "train", tmp_path / "idx", embedder="pixels").index.path
    tiny = TrainConfig(image_size=16, block_channels=(8, 16), batch_size=4, steps=1)
    pipe_dir = tmp_path / "roots" / "pipe"
    DDPMPipeline(unet=build_unet(tiny), scheduler=DDPMScheduler()).save_pretrained(pipe_dir)
    config = tmp_path / "replica.toml"
    config.write_text(
        f'image_roots = ["{tmp_path / "roots"}"]\nupload_root = "{tmp_path / "uploads"}"\n'
    )
    monkeypatch.setenv("REPLICA_CONFIG", str(config))
    return index, pipe_dir


def test_local_pipeline_generates_a_searched_batch(
    workspace: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lib.diffusion.pipelines

    monkeypatch.setattr(lib.diffusion.pipelines, "DEFAULT_MODELS_ROOT", tmp_path / "no-models")
    index, pipe_dir = workspace
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(index)
    at.run()
    assert any("No bundled model yet" in i.value for i in at.info)
    at.radio(key="generate_source").set_value("a local diffusers pipeline").run()
    at.text_input(key="generate_pipeline").set_value(str(pipe_dir)).run()
    at.number_input(key="generate_n").set_value(3).run()
    at.number_input(key="generate_steps").set_value(2).run()
    at.button(key="generate_run").click().run()
    assert not at.exception, at.exception
    summary = [m.value for m in at.markdown if "generations" in m.value]
    assert summary and summary[0].startswith("**3 generations**")
    # one vocabulary (VERDICT_BADGES, as on Search), each with the threshold that applies
    verdicts = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(verdicts) == 3
    assert all(any(w in v for w in ("COPY]", "SIMILAR]", "NO CLEAR MATCH]")) for v in verdicts)
    assert all("copy at ≥ " in v for v in verdicts)
    assert not any(str(tmp_path) in m.value for m in [*at.markdown, *at.caption])
    batch = Path(at.session_state["last_generated_batch"])
    assert sorted(p.name for p in batch.glob("*.png")) == [
        "gen_0000.png",
        "gen_0001.png",
        "gen_0002.png",
    ]


def test_pipeline_outside_allowed_roots_is_refused(workspace: tuple[Path, Path]) -> None:
    index, _ = workspace
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["index_path"] = str(index)
    at.run()
    at.radio(key="generate_source").set_value("a local diffusers pipeline").run()
    at.text_input(key="generate_pipeline").set_value("/etc").run()
    assert "outside the allowed folders" in at.error[0].value
    assert at.button(key="generate_run").disabled


def test_a_bundled_model_generates_with_progress(
    workspace: tuple[Path, Path], tmp_path: Path
) -> None:
    from lib.diffusion.pipelines import DEFAULT_MODELS_ROOT, bundled_models

    index, _ = workspace
    models = bundled_models(DEFAULT_MODELS_ROOT)
    assert models, f"no bundled model under {DEFAULT_MODELS_ROOT}"
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(index)
    at.run()
    options = at.selectbox(key="generate_model").options
    assert len(options) == len(models)
    assert f"trained on {models[0].manifest.n_train} images" in options[0]
    at.number_input(key="generate_n").set_value(2).run()
    at.number_input(key="generate_steps").set_value(3).run()
    at.button(key="generate_run").click().run()
    assert not at.exception, at.exception
    batch = Path(at.session_state["last_generated_batch"])
    assert len(list(batch.glob("*.png"))) == 2
    summary = [m.value for m in at.markdown if "generations" in m.value]
    assert summary and summary[0].startswith("**2 generations**")
    n_train = models[0].manifest.n_train
    assert any(
        c.value.startswith("Searched against") and f"own {n_train} training images" in c.value
        for c in at.caption
    )
    # the threshold that applies there, and why it is not the sidebar index's
    note = next(c.value for c in at.caption if "Copy at calibrated ≥" in c.value)
    assert f"{models[0].name}'s own {n_train} training images" in note
    assert "The sidebar index" in note and "measures its own" in note
    assert not any("px-" in c.value for c in at.caption)  # no hash-named cache folders

    # The Distributions page measures that batch where the Generate page searched it: in the
    # model's own training subset, with the held-out baseline brought to the model's size.
    heldout = tmp_path / "roots" / "heldout"
    heldout.mkdir()
    for png in sorted((REPO_ROOT / "data" / "openmoji" / "heldout").glob("*.png"))[:6]:
        shutil.copy(png, heldout / png.name)
    dist = AppTest.from_file(DISTRIBUTIONS, default_timeout=180)
    for key in ("index_path", "last_generated_batch", "last_generated_target"):
        dist.session_state[key] = at.session_state[key]
    dist.run()
    assert dist.radio(key="dist_source").value == "the last batch generated in the app"
    dist.text_input(key="dist_reference").set_value(str(heldout)).run()
    dist.button(key="dist_run").click().run()
    assert not dist.exception, dist.exception
    size = models[0].manifest.image_size
    assert any(
        f"own {n_train} training images" in c.value and f"{size} px" in c.value
        for c in dist.caption
    )
    table = dist.dataframe[0].value
    assert list(table["n"]) == [2, 6, min(n_train, TRAINING_BASELINE_SAMPLE)]


def test_a_text_to_image_pipeline_asks_for_a_prompt_and_uses_it(
    workspace: tuple[Path, Path], tmp_path: Path
) -> None:
    from tests.tiny_pipelines import write_tiny_text_to_image_pipeline

    index, _ = workspace
    folder = write_tiny_text_to_image_pipeline(tmp_path / "roots" / "sd")
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(index)
    at.run()
    at.radio(key="generate_source").set_value("a local diffusers pipeline").run()
    at.text_input(key="generate_pipeline").set_value(str(folder)).run()
    at.number_input(key="generate_n").set_value(2).run()
    at.number_input(key="generate_steps").set_value(2).run()
    at.button(key="generate_run").click().run()
    assert "give a prompt" in at.error[0].value
    assert "last_generated_batch" not in at.session_state
    at.text_input(key="generate_prompt").set_value("a red circle").run()
    at.button(key="generate_run").click().run()
    assert not at.exception, at.exception
    assert not at.error
    batch = Path(at.session_state["last_generated_batch"])
    assert len(list(batch.glob("*.png"))) == 2
    assert at.session_state["last_generated_target"] == {
        "index": str(index),
        "image_size": None,
        "label": "",
    }


def test_progress_moves_while_the_model_loads(
    workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the first denoising step (model loading: about 25 s on a busy machine) the bar
    already moves and says what it is doing."""
    import time

    from streamlit.elements.progress import ProgressMixin

    import lib.diffusion.sample

    index, _ = workspace
    real_load = lib.diffusion.sample.load_model
    updates: list[tuple[float, str]] = []
    real_progress = ProgressMixin.progress

    def slow_load(*args: object, **kwargs: object) -> object:
        time.sleep(1.5)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    def record(self: object, value: float, text: str | None = None, **kw: object) -> object:
        updates.append((float(value), text or ""))
        return real_progress(self, value, text=text, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(lib.diffusion.sample, "load_model", slow_load)
    monkeypatch.setattr(ProgressMixin, "progress", record)
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(index)
    at.run()
    at.radio(key="generate_against_choice").set_value("the index selected in the sidebar").run()
    at.number_input(key="generate_n").set_value(1).run()
    at.number_input(key="generate_steps").set_value(2).run()
    updates.clear()
    at.button(key="generate_run").click().run()
    assert not at.exception, at.exception
    loading = [(v, t) for v, t in updates if t.startswith("Loading the model")]
    assert len(loading) >= 3, updates  # updated several times a second while loading
    values = [v for v, _ in loading]
    assert values[-1] > values[0]
    assert values == sorted(values)
    first_denoising = next(i for i, (_, t) in enumerate(updates) if t.startswith("Denoising"))
    assert first_denoising > len(loading) - 1
    assert updates[-1][0] == pytest.approx(1.0)


def test_measure_this_batch_asks_distributions_to_measure(
    workspace: tuple[Path, Path], tmp_path: Path
) -> None:
    index, _ = workspace
    batch = tmp_path / "uploads" / "generated-x"
    batch.mkdir(parents=True)
    for i in range(2):
        (batch / f"gen_{i:04d}.png").write_bytes(
            (tmp_path / "train" / f"img_{i:04d}.png").read_bytes()
        )
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["index_path"] = str(index)
    at.session_state["last_generated_batch"] = str(batch)
    at.session_state["last_generated_target"] = {"index": str(index), "image_size": None}
    at.run()
    assert not at.exception, at.exception
    at.button(key="generate_to_distributions").click().run()
    # Distributions reads this flag and measures the batch at once (tested there)
    assert at.session_state["measure_batch_now"] is True


def test_the_memorization_check_runs_without_the_training_set(
    workspace: tuple[Path, Path],
) -> None:
    from lib.diffusion.pipelines import DEFAULT_MODELS_ROOT, bundled_models

    index, _ = workspace
    model = bundled_models(DEFAULT_MODELS_ROOT)[0]
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["index_path"] = str(index)
    at.run()
    at.select_slider(key="memorization_n").set_value(16).run()
    at.button(key="memorization_run").click().run()
    assert not at.exception, at.exception
    stated = next(m.value for m in at.markdown if "flagged]" in m.value)
    report = at.session_state["memorization_report"][2]
    assert f"{sum(report.flagged)} of 16 flagged" in stated
    assert "pass for near-identical" in stated, "the measured false-alarm rate is stated"
    labels = {m.label for m in at.metric}
    assert "Copies flagged (recall)" in labels, "the model's training images are here"
    assert report.agreement["copies"] <= 16 and model.manifest.n_train > 0
