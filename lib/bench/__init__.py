"""Synthetic copies with known sources, for tests, calibration and benchmarks.

- :func:`generate_benchmark` (``lib.bench.generator``): references, edited and object-level
  copies and distractors from a folder of images, with a ``manifest.json`` of the answers.
- :func:`lib.bench.evaluate.evaluate`: run embedders on a benchmark; a
  :class:`~lib.bench.report.BenchReport` with raw and calibrated metrics per query kind.
- :func:`compute_metrics` (``lib.bench.metrics``): mAP, recall@k, MRR, micro-AP, recall
  at 90% precision over ranked lists.

Nothing heavy is imported until a function is used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "generate_benchmark": "lib.bench.generator",
    "compute_metrics": "lib.bench.metrics",
    "load_manifest": "lib.bench.manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lib.bench' has no attribute {name!r}")
