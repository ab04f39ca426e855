"""Reading an index folder's files directly, as a test checking what is on disk does."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def stored_metadata(root: Path) -> pd.DataFrame:
    """The metadata rows of a format-2 index as stored, segments in manifest order."""
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    frames = [
        pd.read_parquet(root / "segments" / s["name"] / "metadata.parquet")
        for s in manifest["segments"]
    ]
    return pd.concat(frames, ignore_index=True)
