"""The paper's central experiment: does replication fall as the training set grows?

For each bundled model: generate a fixed set of samples, index the model's own training
subset, and measure each sample's top-1 similarity to it (:func:`lib.replication.scan`).
The baseline is the held-out split searched against the same subset: real images the
model never saw.

Resolution. Generations are 32 (or 64) px. Training and held-out images are brought to
the model's size with the training transform (:func:`lib.diffusion.data.prepare_image`)
and all of them are embedded at that size (the embedder upscales them itself; SSCD
bilinearly to 288). Measured on 150 OpenMoji training emoji, 100 held-out ones and 100
noisy copies (Gaussian noise 10/255 and a 1-px shift) with SSCD: copies against held-out
gave an AUC of 0.99 on calibrated scores for this choice, against 0.95 after a bicubic and
0.87 after a nearest-neighbour upscale to 128 px. Raw cosines separate poorly at this size
(AUC 0.71; held-out mean top-1 0.61, 94% above the paper's 0.5), so each row carries raw
and calibrated figures and the share of samples above the held-out 95th percentile.

Everything reusable is cached under ``data/cache/study/``: the prepared images, one index
per training subset and embedder, and the samples per model and sampling setting.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lib.diffusion.data import load_images
from lib.diffusion.export import REPO_ROOT, ModelManifest
from lib.diffusion.pipelines import DEFAULT_MODELS_ROOT, BundledModel, bundled_models
from lib.embedders import Embedder, create_embedder
from lib.images import list_image_files, read_caption
from lib.progress import ProgressCallback, report
from lib.replication import ReplicationStats

DEFAULT_CACHE = REPO_ROOT / "data" / "cache" / "study"
DEFAULT_OUT = REPO_ROOT / "reports" / "study"
DEFAULT_HELDOUT = REPO_ROOT / "data" / "openmoji" / "heldout"


@dataclass
class SetStats:
    """Top-1 similarity statistics of one set of images against a training subset.

    Raw figures are cosines (-1..1); ``copy_rate`` counts calibrated ``copy`` verdicts;
    rates are 0..1.
    """

    n: int
    copy_rate: float
    rate_above_0_5: float
    mean_top1: float
    median_top1: float
    p95_top1: float
    mean_calibrated: float
    p95_calibrated: float

    @classmethod
    def from_stats(cls, s: ReplicationStats) -> SetStats:
        return cls(
            n=s.n,
            copy_rate=s.copy_rate,
            rate_above_0_5=s.rate_above_threshold,
            mean_top1=s.mean_top1,
            median_top1=s.median_top1,
            p95_top1=s.p95_top1,
            mean_calibrated=s.mean_calibrated,
            p95_calibrated=s.p95_calibrated,
        )


@dataclass
class StudyRow:
    """One model's line of the study table.

    ``above_heldout_p95``: share of samples whose calibrated top-1 exceeds the held-out
    set's 95th percentile (5% of real unseen images would). ``files``: index, samples,
    prepared held-out images, histogram and gallery.
    """

    model: str
    n_train: int
    n_indexed: int
    n_samples: int
    copy_rate: float
    rate_above_0_5: float
    mean_top1: float
    median_top1: float
    p95_top1: float
    mean_calibrated: float
    p95_calibrated: float
    above_heldout_p95: float
    heldout: SetStats
    embedder: str
    training_steps: int
    files: dict[str, str] = field(default_factory=dict)
    dataset: str = ""
    """The model's training data (``model.json``'s ``dataset``): one curve per dataset."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_study(
    models_root: str | os.PathLike[str] = DEFAULT_MODELS_ROOT,
    n_samples: int = 64,
    *,
    steps: int = 50,
    sampler: str = "ddim",
    seed: int = 0,
    embedder: str | Embedder = "sscd",
    heldout_dir: str | os.PathLike[str] = DEFAULT_HELDOUT,
    train_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE,
    out_dir: str | os.PathLike[str] | None = DEFAULT_OUT,
    device: str | None = None,
    progress: ProgressCallback | None = None,
) -> list[StudyRow]:
    """Measure replication for every bundled model under ``models_root``.

    Args:
        n_samples: generations per model (image ``i`` from seed ``seed + i``).
        steps, sampler: the sampling setting (see :mod:`lib.diffusion.sample`).
        embedder: registry name or embedder (``sscd``, the paper's; ``pixels`` is fast).
        train_dir: where the training images are, if not where the manifests say.
        out_dir: per-model histogram and gallery, ``study.json`` and ``study.csv``
            (None writes nothing there).

    Raises:
        FileNotFoundError: no bundled model, or a missing held-out or training folder.
        ValueError: ``n_samples`` below 1.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    models = bundled_models(models_root)
    if not models:
        raise FileNotFoundError(
            f"no bundled models under {models_root}; export one with "
            "`python -m lib model export RUN_DIR --out data/models/NAME`"
        )
    model_embedder = create_embedder(embedder) if isinstance(embedder, str) else embedder
    cache = Path(cache_dir)
    out = Path(out_dir) if out_dir is not None else None
    setting = {"n": n_samples, "steps": steps, "sampler": sampler, "seed": seed}
    rows = []
    for i, model in enumerate(models):
        report(progress, i, len(models), model.name)
        rows.append(
            _study_model(
                model,
                setting,
                model_embedder,
                Path(heldout_dir),
                train_dir,
                cache,
                out,
                device,
                _prefixed(progress, model.name),
            )
        )
    report(progress, len(models), len(models), "done")
    if out is not None:
        write_study(rows, out)
    return rows


def _study_model(
    model: BundledModel,
    setting: dict[str, Any],
    embedder: Embedder,
    heldout_dir: Path,
    train_dir: str | os.PathLike[str] | None,
    cache: Path,
    out: Path | None,
    device: str | None,
    progress: ProgressCallback | None,
) -> StudyRow:
    from lib.replication import save_histogram, scan

    m = model.manifest
    index = _subset_index(m, train_dir, embedder, cache, progress)
    heldout = reference_at_size(heldout_dir, m.image_size, cache_dir=cache)
    samples = _samples(model, setting, cache / "samples", device, progress)
    result = scan(index, samples, reference=heldout, embedder=embedder, progress=progress)
    gen, ref = result.generated, result.reference
    p95_ref = float(np.percentile(ref.calibrated, 95)) if ref.calibrated else float("inf")
    files = {"index": str(index.path), "samples": str(samples[0].parent), "heldout": str(heldout)}
    if out is not None:
        from lib.diffusion.gallery import save_gallery

        files["histogram"] = str(out / model.name / "histogram.png")
        files["gallery"] = str(out / model.name / "gallery.png")
        (out / model.name).mkdir(parents=True, exist_ok=True)
        title = f"{model.name}: {m.n_train} training images, {m.steps} steps"
        save_histogram([gen, ref], Path(files["histogram"]), title=title)
        save_gallery(result.results, Path(files["gallery"]))
    return StudyRow(
        model=model.name,
        n_train=m.n_train,
        n_indexed=index.count,
        n_samples=gen.n,
        copy_rate=gen.copy_rate,
        rate_above_0_5=gen.rate_above_threshold,
        mean_top1=gen.mean_top1,
        median_top1=gen.median_top1,
        p95_top1=gen.p95_top1,
        mean_calibrated=gen.mean_calibrated,
        p95_calibrated=gen.p95_calibrated,
        above_heldout_p95=float(np.mean(np.array(gen.calibrated) > p95_ref)),
        heldout=SetStats.from_stats(ref),
        embedder=index.embedder_name,
        training_steps=m.steps,
        files=files,
        dataset=m.dataset,
    )


def _prefixed(progress: ProgressCallback | None, prefix: str) -> ProgressCallback | None:
    if progress is None:
        return None

    def callback(done: int, total: int, message: str = "") -> None:
        progress(done, total, f"{prefix}: {message}" if message else prefix)

    return callback


def _digest(*parts: Any, files: Sequence[Path] = ()) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in files:
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def _prepared(files: list[Path], size: int, root: Path) -> Path:
    """A cached folder of ``files`` at the model's size (PNG, same stems, captions kept)."""
    if not files:
        raise FileNotFoundError(f"no images to prepare under {root}")
    folder = root / f"{size}px-{_digest(size, files=files)}"
    if folder.is_dir():
        return folder
    data, kept, skipped = load_images(files, size)
    if skipped:
        raise ValueError(f"{len(skipped)} image(s) could not be read, e.g. {skipped[0].path}")
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    from PIL import Image

    for array, path in zip(data, kept, strict=True):
        Image.fromarray(array).save(tmp / f"{path.stem}.png")
        caption = read_caption(path)
        if caption:
            (tmp / f"{path.stem}.txt").write_text(caption + "\n", encoding="utf-8")
    _publish(tmp, folder)
    return folder


def reference_at_size(
    folder: str | os.PathLike[str], size: int, *, cache_dir: str | os.PathLike[str] = DEFAULT_CACHE
) -> Path:
    """A cached copy of the images in ``folder`` brought to ``size`` x ``size`` px (PNG).

    A model's 32 px generations compare fairly with a held-out reference only when the
    reference went through the same downsizing as the training subset they are searched in.

    Raises:
        FileNotFoundError: ``folder`` holds no image. ValueError: an image cannot be read.
    """
    files = list_image_files(folder)
    if not files:
        raise FileNotFoundError(f"no image in {folder}")
    return _prepared(files, size, Path(cache_dir) / "heldout")


def training_subset_index(
    model: BundledModel,
    embedder: str | Embedder = "sscd",
    *,
    train_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE,
    progress: ProgressCallback | None = None,
) -> Any:
    """The index of ``model``'s own training images at its size, the one ``study`` scans
    against (a ``ReplicaIndex``; built and cached on first use).

    Raises:
        FileNotFoundError: training images are missing (run ``python -m lib data prepare``).
    """
    emb = create_embedder(embedder) if isinstance(embedder, str) else embedder
    return _subset_index(model.manifest, train_dir, emb, Path(cache_dir), progress)


def _subset_index(
    m: ModelManifest,
    train_dir: str | os.PathLike[str] | None,
    embedder: Embedder,
    cache: Path,
    progress: ProgressCallback | None,
) -> Any:
    """The cached index of a model's training subset at its size (built on first use)."""
    from lib.index import build_index, is_index, open_index

    files = m.train_paths(train_dir)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} training image(s) of model {m.name} are missing, e.g. {missing[0]}; "
            "run `python -m lib data prepare` or pass the training folder"
        )
    folder = _prepared(files, m.image_size, cache / "subsets")
    path = cache / "indexes" / f"{folder.name}-{embedder.name}"
    if is_index(path):
        index = open_index(path)
        index.check_embedder(embedder)
        return index
    from lib.verdict.sensitivity import learn_after_write

    built = build_index(
        folder, path, embedder=embedder, source=f"{m.name} training subset", progress=progress
    )
    return learn_after_write(built, progress).index


def _samples(
    model: BundledModel,
    setting: dict[str, Any],
    root: Path,
    device: str | None,
    progress: ProgressCallback | None,
) -> list[Path]:
    """The cached samples of a model for one sampling setting (generated on first use)."""
    from lib.diffusion.sample import sample, save_images

    weights = sorted((model.path / "unet").glob("*.safetensors"))
    folder = root / f"{model.name}-{_digest(setting, files=weights)}"
    if not folder.is_dir():
        images = sample(
            model.path,
            setting["n"],
            steps=setting["steps"],
            sampler=setting["sampler"],
            seed=setting["seed"],
            device=device,
            progress=progress,
        )
        tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
        save_images(images, tmp)
        (tmp / "setting.json").write_text(json.dumps(setting), encoding="utf-8")
        _publish(tmp, folder)
    return list_image_files(folder)


def _publish(tmp: Path, folder: Path) -> None:
    """Rename a finished temporary folder into place (another writer may have won)."""
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():
            raise


def write_study(rows: list[StudyRow], out: Path) -> None:
    """``study.json`` (all fields) and ``study.csv`` (one line per model) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(
        json.dumps([r.to_dict() for r in rows], indent=2), encoding="utf-8"
    )
    columns = [
        "model", "n_train", "n_samples", "copy_rate", "rate_above_0_5", "mean_top1",
        "p95_top1", "mean_calibrated", "p95_calibrated", "above_heldout_p95",
    ]  # fmt: skip
    lines = [",".join([*columns, *(f"heldout_{c}" for c in columns[3:9])])]
    for r in rows:
        d = r.to_dict()
        values = [d[c] for c in columns] + [d["heldout"][c] for c in columns[3:9]]
        lines.append(",".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in values))
    (out / "study.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    save_curve(rows, out / "curve.png")


CURVE_MEASURES = {
    "copy_rate": "copy rate (calibrated verdicts)",
    "above_heldout_p95": "share above the held-out 95th percentile",
    "mean_calibrated": "mean calibrated top-1 score",
}
"""What the study curve plots against training-set size, one panel each."""


def save_curve(rows: Sequence[StudyRow], path: Path) -> None:
    """The paper's curve as a PNG: each measure of :data:`CURVE_MEASURES` against the
    number of training images (log scale), one line per dataset, with the held-out
    baseline (real images the model never saw, against the same subset) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_MEASURES), figsize=(12, 3.8), dpi=120)
    points = curve_points(rows)
    for ax, (key, label) in zip(axes, CURVE_MEASURES.items(), strict=True):
        for name, curves in points.items():
            sizes, values = zip(*curves[key], strict=True)
            (line,) = ax.plot(sizes, values, marker="o", label=name)
            if f"heldout_{key}" in curves:
                held_sizes, held = zip(*curves[f"heldout_{key}"], strict=True)
                ax.plot(held_sizes, held, linestyle="--", color=line.get_color(),
                        label=f"{name}: held-out images")  # fmt: skip
        if key == "above_heldout_p95":
            ax.axhline(
                0.05, color="grey", linestyle="--", label="held-out images (5% by definition)"
            )
        ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Replication against training-set size (bundled models, generations vs training)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curve_points(rows: Sequence[StudyRow]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """What :func:`save_curve` plots: per dataset, per measure of :data:`CURVE_MEASURES`
    (and ``heldout_<measure>`` for the held-out baseline of the copy rate and the mean
    calibrated score), (training images, value) points in order of size."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in sorted(rows, key=lambda r: r.n_train):
        curves = out.setdefault(_dataset_label(row), {})
        for key in CURVE_MEASURES:
            curves.setdefault(key, []).append((row.n_train, float(getattr(row, key))))
            if key != "above_heldout_p95":  # held-out images: 5% by definition
                held = float(getattr(row.heldout, key))
                curves.setdefault(f"heldout_{key}", []).append((row.n_train, held))
    return dict(sorted(out.items()))


def _dataset_label(row: StudyRow) -> str:
    text = row.dataset.lower()
    for name in ("openmoji", "fashion-mnist"):
        if name in text or row.model.lower().startswith(name):
            return name
    return row.dataset or row.model.rsplit("-", 1)[0]
