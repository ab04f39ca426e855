"""Small diffusion models: data order, resumable training, export, sampling, local pipelines
and the replication study, all on the CPU with a tiny UNet (16x16, blocks (8, 16))."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lib.diffusion.config import TrainConfig
from lib.diffusion.data import batch_indices, openmoji_subset
from lib.images import load_image

TINY = TrainConfig(image_size=16, block_channels=(8, 16), batch_size=4, steps=4, checkpoint_every=2)


class Interrupt(Exception):
    """Raised from a progress callback to simulate a killed run."""


def _shapes(folder: Path, n: int, seed: int) -> Path:
    """``n`` distinct 24-px images (a coloured shape on white) with caption sidecars."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = Image.new("RGB", (24, 24), "white")
        draw = ImageDraw.Draw(image)
        x, y = rng.integers(0, 12, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (int(x), int(y), int(x) + 6 + i, int(y) + 12)
        (draw.ellipse if i % 2 else draw.rectangle)(box, fill=colour)
        image.save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"shape {i}\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models run fastest on one thread, above all on a shared, busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diffusion")
    return {
        "root": root,
        "train": _shapes(root / "train", 8, seed=1),
        "heldout": _shapes(root / "heldout", 5, seed=2),
    }


@pytest.fixture(scope="module")
def run(data: dict[str, Path]) -> Any:
    """An uninterrupted 4-step run with checkpoints at steps 2 and 4."""
    from lib.diffusion.train import train

    return train(data["root"] / "run", TINY, data["train"], dataset="shapes", command="test")


@pytest.fixture(scope="module")
def models_root(data: dict[str, Path], run: Any) -> Path:
    from lib.diffusion.export import export_model

    root = data["root"] / "models"
    export_model(run.run_dir, root / "shapes-8")
    return root


# ---------------------------------------------------------------- data
def test_batch_indices_are_a_seeded_permutation_per_epoch() -> None:
    n, batch = 10, 4
    stream = np.concatenate([batch_indices(s, n, batch, seed=3) for s in range(5)])
    assert sorted(stream[:10]) == list(range(10))  # epoch 0: every image once
    assert sorted(stream[10:20]) == list(range(10))  # epoch 1 (batch 2 spans both)
    assert not np.array_equal(stream[:10], stream[10:20])
    np.testing.assert_array_equal(batch_indices(3, n, batch, 3), stream[12:16])
    assert not np.array_equal(batch_indices(0, n, batch, 4), stream[:4])


def test_openmoji_subsets_are_nested_and_skip_identical_renders(tmp_path: Path) -> None:
    folder = _shapes(tmp_path / "train", 12, seed=5)
    (folder / "zz-copy.png").write_bytes((folder / "img03.png").read_bytes())
    small, large = openmoji_subset(folder, 5, seed=0), openmoji_subset(folder, 12, seed=0)
    assert large[:5] == small
    assert len({p.name for p in large}) == 12 and folder / "zz-copy.png" not in large
    assert openmoji_subset(folder, 5, seed=1) != small
    with pytest.raises(ValueError, match="between 1 and 12"):
        openmoji_subset(folder, 13)


# ---------------------------------------------------------------- training
def test_resumed_run_gives_the_same_losses(data: dict[str, Path], run: Any) -> None:
    from lib.diffusion.checkpoint import list_checkpoints, load_latest
    from lib.diffusion.train import train

    def kill_at_step_3(done: int, total: int, message: str = "") -> None:
        if done == 3:
            raise Interrupt

    out = data["root"] / "interrupted"
    with pytest.raises(Interrupt):
        train(out, TINY, data["train"], progress=kill_at_step_3)
    assert [s for s, _ in list_checkpoints(out)] == [2]
    with pytest.raises(FileExistsError, match="--resume"):
        train(out, TINY, data["train"])
    resumed = train(out, images=data["train"], resume=True)
    assert len(run.losses) == 4 and resumed.step == 4
    np.testing.assert_allclose(resumed.losses, run.losses, rtol=0, atol=1e-6)
    a, b = load_latest(run.run_dir), load_latest(out)
    assert a is not None and b is not None
    for name, value in a["ema"]["shadow"].items():
        np.testing.assert_allclose(b["ema"]["shadow"][name].numpy(), value.numpy(), atol=1e-6)
    assert json.loads((out / "config.json").read_text())["block_channels"] == [8, 16]
    assert (out / "losses.csv").read_text().count("\n") == 5


def test_resume_refuses_a_changed_config_but_extends_steps() -> None:
    with pytest.raises(ValueError, match="lr"):
        TINY.resumed_with(lr=0.1, steps=8)
    assert TINY.resumed_with(steps=8, lr=TINY.lr).steps == 8
    with pytest.raises(ValueError, match="divisible"):
        TrainConfig(image_size=18, block_channels=(8, 16, 16))
    with pytest.raises(ValueError, match="prediction_type"):
        TrainConfig(prediction_type="sample")


def test_v_target_is_the_image_at_high_noise_and_the_noise_at_low_noise() -> None:
    import torch

    from lib.diffusion.config import build_noise_scheduler

    scheduler = build_noise_scheduler(TINY)
    assert scheduler.config.prediction_type == "v_prediction"
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    noise = torch.randn(2, 3, 16, 16)
    high = scheduler.get_velocity(image, noise, torch.tensor([999, 999]))
    low = scheduler.get_velocity(image, noise, torch.tensor([0, 0]))
    torch.testing.assert_close(high, -image, atol=0.02, rtol=0)
    torch.testing.assert_close(low, noise, atol=0.05, rtol=0)


# ---------------------------------------------------------------- export and sampling
def test_export_writes_fp16_weights_and_a_manifest(models_root: Path, run: Any) -> None:
    from safetensors import safe_open

    from lib.diffusion.export import read_manifest

    folder = models_root / "shapes-8"
    manifest = read_manifest(folder)
    assert manifest.n_train == 8 and manifest.steps == 4 and manifest.seed == TINY.seed
    assert manifest.train_ids == [f"img{i:02d}" for i in range(8)]
    assert manifest.command == "test" and manifest.wall_time_s >= 0
    with safe_open(folder / "unet" / "diffusion_pytorch_model.safetensors", "pt") as fh:
        dtypes = {str(fh.get_tensor(k).dtype) for k in fh.keys()}  # noqa: SIM118
    assert dtypes == {"torch.float16"}
    assert (folder / "model_index.json").is_file()
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == TINY.prediction_type == "v_prediction"


def test_sampling_is_seeded_and_independent_of_batch_size(
    models_root: Path, run: Any, tmp_path: Path
) -> None:
    from lib.diffusion.sample import sample, save_images

    model = models_root / "shapes-8"
    a = sample(model, 3, steps=3, seed=7, batch_size=2)
    b = sample(model, 3, steps=3, seed=7, batch_size=3)
    c = sample(run.run_dir, 3, steps=3, seed=7, sampler="dpm")
    assert [im.size for im in a] == [(16, 16)] * 3 and len(c) == 3
    for x, y in zip(a, b, strict=True):
        assert np.abs(np.asarray(x, int) - np.asarray(y, int)).max() <= 1
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))
    paths = save_images(a, tmp_path / "out")
    assert [p.name for p in paths] == ["sample-00000.png", "sample-00001.png", "sample-00002.png"]


# ---------------------------------------------------------------- local pipelines
def test_a_local_pipeline_folder_loads_and_generates(tmp_path: Path, models_root: Path) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler

    from lib.diffusion.config import build_unet
    from lib.diffusion.pipelines import (
        ONLY_BUNDLED,
        NotAPipeline,
        bundled_models,
        generate,
        load_pipeline,
        models_message,
    )

    DDPMPipeline(unet=build_unet(TINY), scheduler=DDPMScheduler()).save_pretrained(tmp_path / "p")
    pipeline = load_pipeline(tmp_path / "p", device="cpu")
    images = generate(pipeline, n=2, steps=2, seed=0)
    assert [im.size for im in images] == [(16, 16)] * 2
    with pytest.raises(ValueError, match="unconditional"):
        generate(pipeline, "a red circle")
    with pytest.raises(NotAPipeline, match=r"model_index\.json"):
        load_pipeline(tmp_path)
    assert [m.name for m in bundled_models(models_root)] == ["shapes-8"]
    assert models_message(None, models_root).startswith(ONLY_BUNDLED)
    assert bundled_models(tmp_path / "missing") == []


def test_a_local_text_to_image_pipeline_generates_from_a_prompt(tmp_path: Path) -> None:
    from lib.cli import main
    from lib.diffusion.pipelines import generate, is_text_conditional, load_pipeline
    from tests.tiny_pipelines import write_tiny_text_to_image_pipeline

    folder = write_tiny_text_to_image_pipeline(tmp_path / "sd")
    pipeline = load_pipeline(folder, device="cpu")
    assert type(pipeline).__name__ == "StableDiffusionPipeline"
    assert is_text_conditional(pipeline)
    first = generate(pipeline, "a red circle", n=2, steps=2, seed=3)
    again = generate(pipeline, "a red circle", n=2, steps=2, seed=3)
    other = generate(pipeline, "a red circle", n=2, steps=2, seed=4)
    assert [im.size for im in first] == [(16, 16)] * 2
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again, strict=True)
    )
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))
    with pytest.raises(ValueError, match="give a prompt"):
        generate(pipeline, None, n=1, steps=2)
    out = tmp_path / "out"
    argv = ["-q", "sample", str(folder), "--n", "2", "--steps", "2", "--prompt", "a cat"]
    assert main([*argv, "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 2


# ---------------------------------------------------------------- the study
def test_study_end_to_end_matches_a_direct_computation(
    data: dict[str, Path], models_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lib.cli import main
    from lib.embedders import create_embedder
    from lib.images import list_image_files
    from lib.index import open_index

    out, cache = data["root"] / "study", data["root"] / "cache"
    argv = ["-q", "study", "--models", str(models_root), "--samples", "4", "--steps", "2"]
    argv += ["--embedder", "pixels", "--heldout", str(data["heldout"])]
    argv += ["--out", str(out), "--cache", str(cache), "--json"]
    assert main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["model"], row["n_train"], row["n_samples"]) == ("shapes-8", 8, 4)
    index = open_index(row["files"]["index"])
    assert index.count == 8
    embedder = create_embedder("pixels")
    train = index.vectors()

    def top1(folder: str) -> np.ndarray:
        images = [load_image(p).image for p in list_image_files(folder)]
        return (embedder.embed_images(images) @ train.T).max(axis=1)

    gen, held = top1(row["files"]["samples"]), top1(row["files"]["heldout"])
    assert len(gen) == 4 and len(held) == 5
    for stats, sims in ((row, gen), (row["heldout"], held)):
        assert stats["mean_top1"] == pytest.approx(sims.mean(), abs=1e-5)
        assert stats["p95_top1"] == pytest.approx(np.percentile(sims, 95), abs=1e-5)
        assert stats["rate_above_0_5"] == pytest.approx(np.mean(sims > 0.5))
    # the index holds the training images at the model's 16 px: each finds itself at cosine 1
    subset = Path(index.metadata["path"][0]).parent
    np.testing.assert_allclose(top1(str(subset)), 1.0, atol=1e-5)
    assert (out / "shapes-8" / "histogram.png").is_file()
    assert (out / "shapes-8" / "gallery.png").is_file()
    assert (out / "study.csv").read_text().count("\n") == 2
    assert (out / "curve.png").is_file()
    mtime = (Path(row["files"]["index"]) / "manifest.json").stat().st_mtime_ns
    assert main(argv[:-1]) == 0  # the table; the index and samples come from the cache
    assert "shapes-8" in capsys.readouterr().out
    assert (Path(row["files"]["index"]) / "manifest.json").stat().st_mtime_ns == mtime


def test_the_study_curve_plots_each_dataset_against_its_sizes(tmp_path: Path) -> None:
    from lib.diffusion.study import SetStats, StudyRow, curve_points, save_curve

    def row(model: str, n: int, dataset: str, copies: float) -> StudyRow:
        held = SetStats(n=50, copy_rate=0.01, rate_above_0_5=0.9, mean_top1=0.6,
                        median_top1=0.6, p95_top1=0.8, mean_calibrated=0.03 * n / 100,
                        p95_calibrated=0.1)  # fmt: skip
        return StudyRow(model=model, n_train=n, n_indexed=n, n_samples=64, copy_rate=copies,
                        rate_above_0_5=0.9, mean_top1=0.7, median_top1=0.7, p95_top1=0.9,
                        mean_calibrated=copies / 2, p95_calibrated=0.2,
                        above_heldout_p95=copies + 0.05, heldout=held, embedder="sscd",
                        training_steps=8000, dataset=dataset)  # fmt: skip

    rows = [
        row("openmoji-1000", 1000, "openmoji", 0.0),
        row("fm-300", 300, "fashion-mnist (Debian dataset-fashion-mnist)", 0.2),
        row("openmoji-100", 100, "openmoji", 0.45),
        row("openmoji-30", 30, "openmoji", 0.8),
    ]
    points = curve_points(rows)
    assert list(points) == ["fashion-mnist", "openmoji"]
    assert points["openmoji"]["copy_rate"] == [(30, 0.8), (100, 0.45), (1000, 0.0)]
    above = points["openmoji"]["above_heldout_p95"]
    assert np.allclose(above, [(30, 0.85), (100, 0.5), (1000, 0.05)])
    held = points["openmoji"]["heldout_mean_calibrated"]
    assert np.allclose(held, [(30, 0.009), (100, 0.03), (1000, 0.3)])
    assert points["fashion-mnist"]["copy_rate"] == [(300, 0.2)]
    save_curve(rows, tmp_path / "curve.png")
    assert Image.open(tmp_path / "curve.png").size[0] > 1000


def test_fashion_mnist_subsets_are_nested_and_train_records_dataset_and_threads(
    tmp_path: Path,
) -> None:
    """The study's second domain: `train --dataset fashion-mnist --subset N` trains on the
    first N of one seeded permutation of Fashion-MNIST's training split (Debian package),
    and the exported model.json records the subset, threads and licence."""
    from lib.datasets import load_fashion_mnist
    from lib.diffusion.data import fashion_mnist_subset
    from lib.diffusion.export import export_model
    from tests.cli_runner import run_cli

    folder = tmp_path / "fashion"
    small, large = fashion_mnist_subset(folder, 3), fashion_mnist_subset(folder, 30)
    assert large[:3] == small and len(set(large)) == 30
    pixels, labels = load_fashion_mnist("train")
    row = int(small[0].name.split("-")[0])
    np.testing.assert_array_equal(np.asarray(Image.open(small[0])), pixels[row])
    from lib.datasets import FASHION_MNIST_CLASSES

    class_name = FASHION_MNIST_CLASSES[int(labels[row])].lower().replace("/", "-")
    assert small[0].stem.split("-", 1)[1] == class_name.replace(" ", "-")
    with pytest.raises(ValueError, match="between 1 and 60000"):
        fashion_mnist_subset(folder, 60_001)

    run_dir = tmp_path / "run"
    result = run_cli(
        "-q", "train", "--dataset", "fashion-mnist", "--subset", "3", "--fashion-dir",
        str(folder), "--out", str(run_dir), "--steps", "2", "--image-size", "16",
        "--blocks", "8,16", "--batch-size", "4", "--checkpoint-every", "2", "--threads", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = export_model(run_dir, tmp_path / "models" / "fashion-3")
    assert manifest.dataset == "fashion-mnist" and manifest.n_train == 3
    assert manifest.train_ids == [p.stem for p in small]
    assert manifest.threads == 1 and manifest.steps == 2
    assert "Fashion-MNIST" in manifest.licence_note


def test_two_trainings_can_export_fashion_mnist_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `train --dataset fashion-mnist` runs started together both write the split's
    PNGs into one folder: each must rename its own temporary files (one run failed with
    "No such file or directory: .00784-sandal.png.tmp" when they shared the names)."""
    import multiprocessing

    import lib.datasets
    from lib.diffusion.data import write_fashion_mnist

    n = 3000
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    monkeypatch.setattr(lib.datasets, "load_fashion_mnist", lambda split: (images, labels))
    monkeypatch.setitem(lib.diffusion.data.FASHION_SPLIT_FILES, "train", n)
    out = tmp_path / "train"
    context = multiprocessing.get_context("fork")  # the patches above go with the children
    workers = [context.Process(target=write_fashion_mnist, args=(out,)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(list(out.glob("*.png"))) == n
    assert not list(out.glob(".*.tmp")), "no temporary file is left"
