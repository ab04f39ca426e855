"""Train a pixel-space DDPM (``diffusers.UNet2DModel``) on a small image set, resumably.

    RUN_DIR/
      config.json    the TrainConfig
      run.json       training images (root and relative paths), dataset, commands, device
      losses.csv     step,loss for every step so far (rewritten at each checkpoint)
      checkpoints/   step-NNNNNNN.pt, the newest ``keep_checkpoints`` of them

:func:`train` starts a run or resumes it from its newest checkpoint; a resumed run gives
the same losses as an uninterrupted one (every random state is in the checkpoint and the
data order is a function of the seed and the step).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lib.diffusion.checkpoint import (
    EMA,
    capture_rng,
    list_checkpoints,
    load_latest,
    restore_rng,
    save_checkpoint,
    write_text_atomic,
)
from lib.diffusion.config import TrainConfig, build_noise_scheduler, build_unet
from lib.diffusion.data import batch_indices, load_images
from lib.images import list_image_files
from lib.progress import ProgressCallback, report

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
LOSSES_FILE = "losses.csv"


@dataclass
class TrainResult:
    """Where a run stands after :func:`train` returns. ``elapsed_s``: training seconds over
    all sessions of the run."""

    run_dir: Path
    step: int
    steps: int
    losses: list[float] = field(repr=False)
    elapsed_s: float
    checkpoint: Path | None
    device: str

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def default_device() -> str:
    """``cuda`` when a GPU is usable, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def is_run(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a training run folder."""
    return (Path(path) / RUN_FILE).is_file() and (Path(path) / CONFIG_FILE).is_file()


def read_run(run_dir: str | os.PathLike[str]) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and run record of a run folder.

    Raises:
        FileNotFoundError: the folder is not a training run.
    """
    root = Path(run_dir)
    if not is_run(root):
        raise FileNotFoundError(
            f"{root} is not a training run (no {RUN_FILE} and {CONFIG_FILE}); start one with "
            f"`python -m lib train --subset N --out {root}`"
        )
    config = TrainConfig.from_dict(json.loads((root / CONFIG_FILE).read_text(encoding="utf-8")))
    record: dict[str, Any] = json.loads((root / RUN_FILE).read_text(encoding="utf-8"))
    return config, record


def run_files(record: dict[str, Any]) -> list[Path]:
    """The training image files a run record lists, in training-row order."""
    root = Path(record["train_root"])
    return [root / rel for rel in record["train_files"]]


def train(
    out_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    images: str | os.PathLike[str] | list[Path] | None = None,
    *,
    resume: bool = False,
    dataset: str = "",
    command: str = "",
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train until ``config.steps``, writing checkpoints into ``out_dir``.

    Args:
        config: the run's config (a new run; default TrainConfig()). On resume the stored
            config is used; ``overrides`` may raise ``steps`` or change checkpointing, and
            any other field that differs is refused.
        images: a folder or a list of image files (a new run). On resume, if given, it
            must be the run's images.
        resume: continue from the newest checkpoint of ``out_dir`` if there is one (a run
            folder without checkpoints starts again from step 0); a missing run is started.
        dataset: a label for the manifest, e.g. ``"openmoji"``.
        command: the command line that started this session (recorded).
        device: ``cuda`` or ``cpu`` (default: cuda when available).

    Raises:
        FileExistsError: ``out_dir`` holds a run and ``resume`` is False.
        ValueError: bad config, no readable image, or a resume that changes the run.
    """
    run_dir = Path(out_dir).expanduser().resolve()
    files = _image_list(images) if images is not None else None
    if is_run(run_dir):
        if not resume:
            raise FileExistsError(
                f"{run_dir} already holds a training run; pass --resume to continue it or "
                "choose another --out"
            )
        stored, record = read_run(run_dir)
        if files is not None and [str(f.resolve()) for f in files] != [
            str(f.resolve()) for f in run_files(record)
        ]:
            raise ValueError(f"the images differ from those of the run in {run_dir}")
        config = stored.resumed_with(
            **{**(config.to_dict() if config else {}), **(overrides or {})}
        )
        record.setdefault("commands", []).append(command)
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise FileExistsError(f"{run_dir} exists and is not a training run; refusing to use it")
        if files is None:
            raise ValueError("a new run needs training images (a folder or a list of files)")
        config = TrainConfig.from_dict({**(config or TrainConfig()).to_dict(), **(overrides or {})})
        record = _new_record(files, dataset, command)
    dev = device or default_device()
    data, kept, skipped = load_images(run_files(record), config.image_size)
    if len(kept) != len(record["train_files"]):
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        raise ValueError(f"{len(skipped)} training image(s) could not be read: {reasons}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG_FILE, config.to_json())
    record["device"] = dev
    record["threads"] = _torch_threads()
    write_text_atomic(run_dir / RUN_FILE, json.dumps(record, indent=2, ensure_ascii=False))
    return _loop(run_dir, config, data, dev, progress)


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _image_list(images: str | os.PathLike[str] | list[Path]) -> list[Path]:
    files = [Path(p) for p in images] if isinstance(images, list) else list_image_files(images)
    if not files:
        raise ValueError(f"no image files in {images}")
    return [f.expanduser().resolve() for f in files]


def _new_record(files: list[Path], dataset: str, command: str) -> dict[str, Any]:
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    return {
        "format": 1,
        "dataset": dataset,
        "train_root": str(root),
        "train_files": [f.relative_to(root).as_posix() for f in files],
        "train_ids": [f.stem for f in files],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "commands": [command],
        "python": sys.version.split()[0],
    }


def _seed_everything(seed: int) -> Any:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _loop(
    run_dir: Path, config: TrainConfig, data: np.ndarray, device: str, progress: Any
) -> TrainResult:
    """The training loop from the newest checkpoint (or step 0) to ``config.steps``."""
    import torch
    import torch.nn.functional as F

    generator = _seed_everything(config.seed)
    model = build_unet(config).to(device)
    noise_scheduler = build_noise_scheduler(config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    warmup = max(1, config.lr_warmup_steps)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    ema = EMA(model, config.ema_decay)
    step, losses, elapsed = 0, [], 0.0
    state = load_latest(run_dir, "cpu")  # RNG states must stay on the CPU
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        restore_rng(state["rng"], generator)
        step, losses, elapsed = int(state["step"]), list(state["losses"]), state["elapsed_s"]
        log.info("resumed %s at step %d", run_dir, step)
    images = torch.from_numpy(data).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
    n, size = len(images), config.image_size
    model.train()
    started = time.monotonic()
    checkpoint: Path | None = list_checkpoints(run_dir)[-1][1] if state is not None else None
    report(progress, step, config.steps, "resumed" if step else "starting")
    while step < config.steps:
        rows = torch.from_numpy(batch_indices(step, n, config.batch_size, config.seed))
        x = images[rows.to(device)]
        flip = torch.rand(config.batch_size, generator=generator) < 0.5
        if config.flip:
            x = torch.where(flip.to(device)[:, None, None, None], x.flip(3), x)
        noise = torch.randn((config.batch_size, 3, size, size), generator=generator).to(device)
        timesteps = torch.randint(
            0, config.num_train_timesteps, (config.batch_size,), generator=generator
        ).to(device)
        noisy = noise_scheduler.add_noise(x, noise, timesteps)
        if config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(x, noise, timesteps)
        else:
            target = noise
        loss = F.mse_loss(model(noisy, timesteps).sample, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        lr_schedule.step()
        ema.update(model, step)
        step += 1
        losses.append(float(loss.item()))
        report(progress, step, config.steps, f"loss {losses[-1]:.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            total = elapsed + time.monotonic() - started
            checkpoint = _checkpoint(
                run_dir, config, step, losses, total, model, ema, optimizer, lr_schedule, generator
            )
    return TrainResult(
        run_dir=run_dir,
        step=step,
        steps=config.steps,
        losses=losses,
        elapsed_s=elapsed + time.monotonic() - started,
        checkpoint=checkpoint,
        device=device,
    )


def _checkpoint(
    run_dir: Path,
    config: TrainConfig,
    step: int,
    losses: list[float],
    elapsed: float,
    model: Any,
    ema: EMA,
    optimizer: Any,
    lr_schedule: Any,
    generator: Any,
) -> Path:
    state = {
        "step": step,
        "data_position": step * config.batch_size,
        "elapsed_s": elapsed,
        "losses": losses,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_schedule": lr_schedule.state_dict(),
        "rng": capture_rng(generator),
    }
    path = save_checkpoint(run_dir, state, config.keep_checkpoints)
    lines = ["step,loss", *(f"{i + 1},{v:.6f}" for i, v in enumerate(losses))]
    write_text_atomic(run_dir / LOSSES_FILE, "\n".join(lines) + "\n")
    return path
