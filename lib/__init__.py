"""Replica: did this generated image copy a training image, and which one?

The public facade. Each capability has one entry point; everything else is private
to its module. Nothing heavy is imported until a function is called.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "create_embedder": "lib.embedders",
    "available_embedders": "lib.embedders",
    "load_image": "lib.images",
    "build_index": "lib.index",
    "add_to_index": "lib.index",
    "compact_index": "lib.index",
    "upgrade_index": "lib.index",
    "import_embeddings": "lib.index.importer",
    "open_index": "lib.index",
    "delete_index": "lib.index",
    "list_indexes": "lib.index",
    "search_files": "lib.search",
    "search_images": "lib.search",
    "scan": "lib.replication",
    "make_finding": "lib.evidence",
    "write_document": "lib.evidence",
    "verify_document": "lib.evidence",
    "find_duplicates": "lib.duplicates",
    "find_contamination": "lib.duplicates",
    "project": "lib.projection",
    "prepare_openmoji": "lib.datasets",
    "prepare_default_data": "lib.defaults",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lib' has no attribute {name!r}")
