"""Ship a trained run: fp16 EMA weights as a diffusers ``DDPMPipeline`` folder plus a manifest.

    data/models/NAME/
      model_index.json   DDPMPipeline: any diffusers install can load the folder
      unet/              config.json, diffusion_pytorch_model.safetensors (fp16 EMA weights)
      scheduler/         the DDPM noise schedule the model was trained with
      model.json         ModelManifest: training images, command, seed, steps, wall time

The folder is written beside its destination and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lib.diffusion.checkpoint import CheckpointError, load_latest
from lib.diffusion.config import TrainConfig, build_noise_scheduler, build_unet
from lib.diffusion.train import read_run
from lib.folders import swap_into_place

MODEL_FILE = "model.json"
MODEL_FORMAT = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
OPENMOJI_NOTE = (
    "Trained on OpenMoji emoji (CC BY-SA 4.0, https://openmoji.org); samples can reproduce "
    "them and carry that licence."
)
FASHION_NOTE = (
    "Trained on Fashion-MNIST (Zalando Research, MIT License; Debian dataset-fashion-mnist); "
    "samples can reproduce its images."
)
LICENCE_NOTES = {"openmoji": OPENMOJI_NOTE, "fashion-mnist": FASHION_NOTE}
"""The licence line of a model's samples, by the dataset it was trained on."""


@dataclass
class ModelManifest:
    """What a shipped model is and what it was trained on (``model.json``).

    ``train_root`` is relative to the repository when the images were inside it;
    ``train_files`` are relative to ``train_root``; ``train_ids`` are their file stems.
    ``wall_time_s``: training seconds over all sessions.
    """

    name: str
    image_size: int
    n_train: int
    train_ids: list[str]
    train_files: list[str]
    train_root: str
    dataset: str
    seed: int
    steps: int
    wall_time_s: float
    command: str
    commands: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    threads: int = 0
    """CPU threads torch used (the last session's; 0: not recorded)."""
    final_loss: float = float("nan")
    created: str = ""
    licence_note: str = ""
    format: int = MODEL_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def train_paths(self, train_dir: str | os.PathLike[str] | None = None) -> list[Path]:
        """The training image files, under ``train_dir`` if given (e.g. another checkout)."""
        root = Path(train_dir) if train_dir is not None else Path(self.train_root)
        if not root.is_absolute():
            root = REPO_ROOT / root
        return [root / rel for rel in self.train_files]


def is_model(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a shipped model folder."""
    return (Path(path) / MODEL_FILE).is_file()


def read_manifest(model_dir: str | os.PathLike[str]) -> ModelManifest:
    """The manifest of a shipped model. Raises FileNotFoundError when there is none."""
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a Replica model (no {MODEL_FILE})")
    return ModelManifest.from_json(path.read_text(encoding="utf-8"))


def load_ema_unet(run_dir: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, Any]:
    """(UNet2DModel with the EMA weights of the newest checkpoint, its TrainConfig) of a run.

    Raises:
        CheckpointError: the run has no readable checkpoint yet.
    """
    config, _ = read_run(run_dir)
    state = load_latest(Path(run_dir), "cpu")
    if state is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; train it for a while first")
    unet = build_unet(config)
    unet.load_state_dict(state["ema"]["shadow"])
    return unet.to(device).eval(), config


def export_model(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, name: str | None = None
) -> ModelManifest:
    """Write the newest checkpoint's EMA weights (fp16) and a manifest to ``out``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run. CheckpointError: it has no checkpoint.
        FileExistsError: ``out`` exists and is not a model folder.
    """
    from diffusers import DDPMPipeline

    run = Path(run_dir).expanduser().resolve()
    dest = Path(out).expanduser().resolve()
    if dest.exists() and not is_model(dest) and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not a Replica model; refusing to replace it")
    config, record = read_run(run)
    state = load_latest(run, "cpu")
    if state is None:
        raise CheckpointError(f"{run} has no checkpoint yet; train it for a while first")
    unet = build_unet(config)
    unet.load_state_dict(state["ema"]["shadow"])
    manifest = _manifest(name or dest.name, config, record, state)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pipeline: Any = DDPMPipeline(unet=unet.half(), scheduler=build_noise_scheduler(config))
        pipeline.save_pretrained(tmp, safe_serialization=True)
        (tmp / MODEL_FILE).write_text(manifest.to_json(), encoding="utf-8")
        swap_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _manifest(
    name: str, config: TrainConfig, record: dict[str, Any], state: dict[str, Any]
) -> ModelManifest:
    root = Path(record["train_root"])
    if root.is_relative_to(REPO_ROOT):
        root = root.relative_to(REPO_ROOT)
    commands = [c for c in record.get("commands", []) if c]
    losses = state["losses"]
    return ModelManifest(
        name=name,
        image_size=config.image_size,
        n_train=len(record["train_files"]),
        train_ids=list(record["train_ids"]),
        train_files=list(record["train_files"]),
        train_root=root.as_posix(),
        dataset=record.get("dataset", ""),
        seed=config.seed,
        steps=int(state["step"]),
        wall_time_s=round(float(state["elapsed_s"]), 1),
        command=commands[0] if commands else "",
        commands=commands,
        config=config.to_dict(),
        device=record.get("device", ""),
        threads=int(record.get("threads", 0)),
        final_loss=float(sum(losses[-100:]) / max(1, len(losses[-100:]))),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        licence_note=LICENCE_NOTES.get(str(record.get("dataset", "")), ""),
    )
