"""Sample a small pixel-space model with a fast deterministic scheduler.

Image ``i`` starts from noise seeded with ``seed + i``, and the samplers are deterministic
(DDIM with eta 0, DPM-Solver++), so the same arguments give the same images whatever the
batch size (up to float rounding).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lib.progress import ProgressCallback, report

SAMPLERS = ("ddim", "dpm")
"""``ddim``: DDIMScheduler (eta 0); ``dpm``: DPMSolverMultistepScheduler (DPM-Solver++ 2M).

Both start at the last training timestep (``timestep_spacing="trailing"``). With diffusers'
default "leading" spacing 50 DDIM steps start at t=980, where the cosine schedule still
keeps a visible share of the image, so pure noise there is the wrong starting point and
every sample came out with a tinted, noisy background (seen on the OpenMoji models).
DPM-Solver++ predicts x0 and divides by alpha_t, which is near 0 at the start of the
cosine schedule: without clipping that x0 (``thresholding``) and the lowest log-SNR
(``lambda_min_clipped``, the value diffusers documents for this schedule) it returned
pure noise."""
DEFAULT_SAMPLER = "ddim"
DEFAULT_STEPS = 50


def load_model(model: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(float32 UNet2DModel in eval mode, noise-scheduler config) of a shipped model folder
    (``data/models/NAME``) or of a training run folder (EMA weights of its newest checkpoint).

    Raises:
        FileNotFoundError: ``model`` is neither.
    """
    from lib.diffusion.export import is_model, load_ema_unet
    from lib.diffusion.train import is_run

    path = Path(model).expanduser()
    if is_model(path):
        import torch
        from diffusers import DDPMScheduler, UNet2DModel

        unet = UNet2DModel.from_pretrained(
            path / "unet",
            torch_dtype=torch.float32,
            local_files_only=True,
            low_cpu_mem_usage=has_accelerate(),
        )
        scheduler_config = dict(DDPMScheduler.load_config(path / "scheduler"))
        return unet.to(device).eval(), scheduler_config
    if is_run(path):
        from lib.diffusion.config import build_noise_scheduler

        unet, config = load_ema_unet(path, device)
        return unet, dict(build_noise_scheduler(config).config)
    raise FileNotFoundError(
        f"{path} is neither a Replica model (model.json) nor a training run (run.json)"
    )


def has_accelerate() -> bool:
    """Whether ``accelerate`` is installed (diffusers loads with less memory then)."""
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None


def make_sampler(name: str, scheduler_config: dict[str, Any]) -> Any:
    """A fresh inference scheduler of kind ``name`` built from the training schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(scheduler_config, timestep_spacing="trailing")
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(
            scheduler_config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            thresholding=True,
            sample_max_value=1.0,
            lambda_min_clipped=-5.1,
        )
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def sample(
    model: str | os.PathLike[str],
    n: int,
    *,
    steps: int = DEFAULT_STEPS,
    sampler: str = DEFAULT_SAMPLER,
    seed: int = 0,
    batch_size: int = 64,
    device: str | None = None,
    progress: ProgressCallback | None = None,
) -> list[Image.Image]:
    """Generate ``n`` RGB images at the model's training size.

    Args:
        model: a shipped model folder or a training run folder.
        steps: denoising steps of the sampler.
        seed: image ``i`` starts from noise seeded with ``seed + i``.

    Raises:
        ValueError: ``n``, ``steps`` or ``batch_size`` below 1, or an unknown sampler.
    """
    import torch

    from lib.diffusion.train import default_device

    if n < 1 or steps < 1 or batch_size < 1:
        raise ValueError(
            f"n, steps and batch_size must be at least 1, got {n}, {steps}, {batch_size}"
        )
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    dev = device or default_device()
    unet, scheduler_config = load_model(model, dev)
    size = int(unet.config.sample_size)
    images: list[Image.Image] = []
    batches = range(0, n, batch_size)
    for b, start in enumerate(batches):
        seeds = range(seed + start, seed + min(n, start + batch_size))
        noise = torch.stack(
            [
                torch.randn((3, size, size), generator=torch.Generator().manual_seed(s))
                for s in seeds
            ]
        )
        scheduler = make_sampler(sampler, scheduler_config)
        scheduler.set_timesteps(steps)
        x = noise.to(dev) * scheduler.init_noise_sigma
        with torch.no_grad():
            for k, t in enumerate(scheduler.timesteps):
                eps = unet(scheduler.scale_model_input(x, t), t).sample
                x = scheduler.step(eps, t, x).prev_sample
                report(progress, b * steps + k + 1, len(batches) * steps, f"batch {b + 1}")
        images.extend(to_pil(x))
    return images


def to_pil(batch: Any) -> list[Image.Image]:
    """A (n, 3, h, w) tensor in -1..1 as n RGB images."""
    arr = ((batch.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return [Image.fromarray(np.ascontiguousarray(a.permute(1, 2, 0).numpy())) for a in arr]


def save_images(
    images: list[Image.Image], out_dir: str | os.PathLike[str], prefix: str = "sample"
) -> list[Path]:
    """Write images as ``PREFIX-00000.png`` ... into ``out_dir``; returns the paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}-{i:05d}.png"
        image.save(path)
        paths.append(path)
    return paths
