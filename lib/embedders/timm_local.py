"""Any timm model, with weights from a local file only (nothing is downloaded).

Use ``create_embedder("timm:<model-name>", weights="/path/to/weights.safetensors")``.
Features are the model's pooled pre-classifier output, L2-normalised.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lib.embedders.base import (
    Embedder,
    EmbedderConfig,
    EmbedderUnavailable,
    Preprocessing,
    l2_normalise,
)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _file_digest(path: Path, limit: int = 1 << 20) -> str:
    """sha256 of the first MiB and the size: enough to tell weight files apart cheaply."""
    with path.open("rb") as fh:
        head = fh.read(limit)
    return hashlib.sha256(head + str(path.stat().st_size).encode()).hexdigest()[:16]


class TimmEmbedder(Embedder):
    """A timm backbone loaded from a local weights file."""

    def __init__(self, model_name: str, weights: str | None, threads: int | None = None):
        os.environ["HF_HUB_OFFLINE"] = "1"
        if not weights:
            raise EmbedderUnavailable(
                f"timm:{model_name} needs a local weights file (--weights PATH, "
                f"one of {', '.join(WEIGHT_SUFFIXES)}); Replica never downloads weights"
            )
        path = Path(weights).expanduser().resolve()
        if not path.is_file():
            raise EmbedderUnavailable(f"weights file not found: {path}")
        try:
            import timm
            import torch
        except ImportError as exc:
            raise EmbedderUnavailable(
                "timm and torch are needed: pip install -r requirements.txt"
            ) from exc
        if model_name not in timm.list_models(pretrained=False):
            raise EmbedderUnavailable(f"unknown timm model {model_name!r}; see timm.list_models()")
        if threads:
            torch.set_num_threads(threads)
        try:
            model = timm.create_model(
                model_name,
                pretrained=True,
                num_classes=0,
                pretrained_cfg_overlay={"file": str(path)},
            )
        except Exception as exc:
            raise EmbedderUnavailable(
                f"could not load {path} into timm:{model_name}: {exc}"
            ) from exc
        model.eval()
        data_cfg = timm.data.resolve_data_config(model=model)
        size = int(data_cfg["input_size"][-1])
        interpolation = str(data_cfg.get("interpolation", "bilinear"))
        self._model: Any = model
        self._torch: Any = torch
        self._mean = np.asarray(data_cfg["mean"], dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(data_cfg["std"], dtype=np.float32).reshape(3, 1, 1)
        self.config = EmbedderConfig(
            name=f"timm:{model_name}",
            dim=int(model.num_features),  # type: ignore[arg-type]
            preprocessing=Preprocessing(
                size=size,
                mode="square",
                interpolation=interpolation
                if interpolation in ("bilinear", "bicubic")
                else "bilinear",
            ),
            description=f"timm {model_name} from local weights {path.name}",
            weights=f"{path}#{_file_digest(path)}",
        )

    def prepare(self, image: Image.Image) -> np.ndarray:
        """(3, size, size) float32, normalised with the model's mean and std."""
        small = self.config.preprocessing.resize(image.convert("RGB"))
        chw = np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (chw - self._mean) / self._std

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            features = self._model(torch.from_numpy(np.ascontiguousarray(batch)))
        return l2_normalise(features.float().numpy())
