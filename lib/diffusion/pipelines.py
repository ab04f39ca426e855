"""Models to generate with: the bundled small models and any local diffusers pipeline.

Nothing is ever downloaded: a pipeline is a folder on disk written by ``save_pretrained``
(for example a copy of Stable Diffusion), loaded with ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``. Without such a folder only the bundled models are available.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from lib.diffusion.export import REPO_ROOT, ModelManifest, is_model, read_manifest

log = logging.getLogger(__name__)

DEFAULT_MODELS_ROOT = REPO_ROOT / "data" / "models"
PIPELINE_FILE = "model_index.json"
ONLY_BUNDLED = (
    "no local diffusers pipeline given: only the bundled models are available "
    "(give a folder saved with save_pretrained, e.g. a local Stable Diffusion copy, to use it)"
)


class NotAPipeline(ValueError):
    """The folder is not a loadable diffusers pipeline."""


@dataclass(frozen=True)
class BundledModel:
    """A shipped model folder and its manifest."""

    name: str
    path: Path
    manifest: ModelManifest


def bundled_models(root: str | os.PathLike[str] = DEFAULT_MODELS_ROOT) -> list[BundledModel]:
    """The shipped models under ``root``, smallest training set first; [] if root is missing.

    Folders whose ``model.json`` cannot be read are left out with a warning.
    """
    base = Path(root)
    if not base.is_dir():
        return []
    found = []
    for path in sorted(base.iterdir()):
        if path.name.startswith(".") or not is_model(path):
            continue
        try:
            manifest = read_manifest(path)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("skipping model %s: unreadable model.json (%s)", path, exc)
            continue
        found.append(BundledModel(path.name, path, manifest))
    return sorted(found, key=lambda m: (m.manifest.n_train, m.name))


def models_message(
    local_pipeline: str | os.PathLike[str] | None,
    root: str | os.PathLike[str] = DEFAULT_MODELS_ROOT,
) -> str:
    """One line saying what can generate here: the bundled models, plus the local pipeline."""
    names = ", ".join(m.name for m in bundled_models(root)) or f"none under {root}"
    if local_pipeline is None:
        return f"{ONLY_BUNDLED}. Bundled: {names}"
    return f"local pipeline {local_pipeline}; bundled: {names}"


def is_pipeline(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder with a diffusers ``model_index.json``."""
    return (Path(path) / PIPELINE_FILE).is_file()


def load_pipeline(path: str | os.PathLike[str], device: str | None = None) -> Any:
    """Load a local diffusers pipeline folder (fp16 on CUDA, fp32 on the CPU), offline.

    Raises:
        NotAPipeline: ``path`` is not a pipeline folder or its files cannot be loaded.
    """
    folder = Path(path).expanduser()
    if not is_pipeline(folder):
        raise NotAPipeline(
            f"{folder} is not a diffusers pipeline folder (no {PIPELINE_FILE}); give a folder "
            "written by save_pretrained, e.g. a local copy of Stable Diffusion. Nothing is "
            "downloaded"
        )
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from diffusers import DiffusionPipeline

    from lib.diffusion.sample import has_accelerate
    from lib.diffusion.train import default_device

    dev = device or default_device()
    dtype = torch.float16 if dev.startswith("cuda") else torch.float32
    try:
        pipeline = DiffusionPipeline.from_pretrained(
            folder,
            local_files_only=True,
            dtype=dtype,
            low_cpu_mem_usage=has_accelerate(),
        )
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise NotAPipeline(f"could not load the pipeline in {folder}: {exc}") from exc
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(dev)


def is_text_conditional(pipeline: Any) -> bool:
    """Whether the pipeline's ``__call__`` takes a ``prompt``."""
    return "prompt" in inspect.signature(pipeline.__call__).parameters


def generate(
    pipeline: Any,
    prompt: str | None = None,
    n: int = 1,
    *,
    steps: int | None = None,
    seed: int = 0,
) -> list[Image.Image]:
    """Generate ``n`` images with a loaded pipeline (``prompt`` for text-to-image ones).

    Args:
        pipeline: a pipeline from :func:`load_pipeline` (or a folder, loaded here).
        steps: inference steps (default: the pipeline's own).
        seed: seeds one CPU generator for the whole call.

    Raises:
        ValueError: a text-to-image pipeline without a prompt, a prompt for an
            unconditional pipeline, or ``n`` below 1.
    """
    import torch

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if isinstance(pipeline, str | os.PathLike):
        pipeline = load_pipeline(pipeline)
    kwargs: dict[str, Any] = {
        "generator": torch.Generator().manual_seed(seed),
        "output_type": "pil",
    }
    if steps is not None:
        kwargs["num_inference_steps"] = steps
    if is_text_conditional(pipeline):
        if not prompt:
            raise ValueError(f"{type(pipeline).__name__} is text-to-image: give a prompt")
        kwargs.update(prompt=prompt, num_images_per_prompt=n)
    else:
        if prompt:
            raise ValueError(f"{type(pipeline).__name__} is unconditional: leave out the prompt")
        kwargs["batch_size"] = n
    images: list[Image.Image] = list(pipeline(**kwargs).images)
    return [im.convert("RGB") for im in images]
