"""Training state on disk: EMA weights, RNG states and atomic checkpoint files.

A checkpoint holds everything the next step depends on (model, EMA, optimizer, learning-rate
schedule, every random generator, the step and the data position), so that a resumed run
computes exactly the losses an uninterrupted run would have computed.

    RUN_DIR/checkpoints/step-0000250.pt   torch.save of a dict; written to a temporary file,
                                          fsynced and renamed into place
"""

from __future__ import annotations

import logging
import os
import random
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected."""


class EMA:
    """Exponential moving average of a model's weights (float32, on the model's device).

    The decay warms up as ``min(decay, (1 + step) / (10 + step))`` so that early weights
    do not dominate a short run.
    """

    def __init__(self, model: Any, decay: float):
        self.decay = decay
        self.shadow: dict[str, Any] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model: Any, step: int) -> None:
        """Blend the model's current weights into the average after optimizer step ``step``."""
        import torch

        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in model.state_dict().items():
                if name in params and value.is_floating_point():
                    self.shadow[name].lerp_(value, 1.0 - decay)
                else:
                    self.shadow[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


def capture_rng(generator: Any) -> dict[str, Any]:
    """Every random state a training step reads: Python, NumPy, torch (CPU, CUDA) and the
    run's own torch generator (noise, timesteps, flips). Plain types and tensors only."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: Any) -> None:
    """Put back the random states saved by :func:`capture_rng`."""
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"step-{step:07d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in a run folder, oldest first."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``state["step"]`` atomically; keep the newest
    ``keep`` checkpoints and delete older ones. Returns the checkpoint's path."""
    import torch

    path = checkpoint_path(run_dir, int(state["step"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in path.parent.glob(".step-*.pt.tmp-*"):  # left by a killed process
        stale.unlink(missing_ok=True)
    return path


def load_latest(run_dir: Path, device: Any = "cpu") -> dict[str, Any] | None:
    """The newest readable checkpoint of a run (None when there is none); a damaged newest
    file is skipped with a warning in favour of the one before it."""
    import torch

    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            state: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            log.warning("checkpoint %s is unreadable (%s); trying an older one", path, exc)
            continue
        if state.get("format") != CHECKPOINT_FORMAT or int(state.get("step", -1)) != step:
            log.warning("checkpoint %s has an unexpected format; trying an older one", path)
            continue
        return state
    return None


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
