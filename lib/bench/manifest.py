"""What a benchmark folder holds, as ``manifest.json``.

    BENCH_DIR/
      reference/      the source images, copied byte for byte (captions beside them)
      queries/        edited and object-level copies of references, and distractors
      manifest.json   per query: file, source reference (or null), kind; the parameters

File names in the manifest are relative to the benchmark folder, with "/" separators.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
REFERENCE_DIR = "reference"
QUERY_DIR = "queries"
FORMAT = 1
SEGMIX, CUTMIX, DISTRACTOR = "segmix", "cutmix", "distractor"


class BenchmarkNotFound(FileNotFoundError):
    """The folder is not a benchmark (no readable manifest)."""


@dataclass(frozen=True)
class BenchmarkReference:
    """One reference image: ``file`` in the benchmark, ``original`` where it came from."""

    file: str
    original: str
    caption: str = ""


@dataclass(frozen=True)
class BenchmarkQuery:
    """One query image and its ground truth.

    ``source``: the reference file it copies, or None for a distractor. ``kind``: the edit
    name, "segmix", "cutmix" or "distractor". ``transform``: what was applied (the kind for
    a copy; for a distractor, the edit or composition it went through, so that distractors
    look as edited as copies). ``background``: the image pasted into (segmix, cutmix).
    ``box``: where the object or box landed, (left, top, right, bottom) pixels.
    """

    file: str
    source: str | None
    kind: str
    transform: str
    original: str
    background: str | None = None
    box: tuple[int, int, int, int] | None = None


@dataclass
class BenchmarkManifest:
    """The benchmark: parameters, references and queries with ground truth."""

    params: dict[str, Any]
    references: list[BenchmarkReference] = field(default_factory=list)
    queries: list[BenchmarkQuery] = field(default_factory=list)
    format: int = FORMAT

    def kinds(self) -> list[str]:
        """Query kinds in order of first appearance among copies, then "distractor"."""
        seen = dict.fromkeys(q.kind for q in self.queries if q.source is not None)
        if any(q.source is None for q in self.queries):
            seen[DISTRACTOR] = None
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "params": self.params,
            "references": [asdict(r) for r in self.references],
            "queries": [asdict(q) for q in self.queries],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkManifest:
        queries = []
        for q in data["queries"]:
            box = tuple(q["box"]) if q.get("box") else None
            queries.append(BenchmarkQuery(**{**q, "box": box}))
        return cls(
            params=dict(data["params"]),
            references=[BenchmarkReference(**r) for r in data["references"]],
            queries=queries,
            format=int(data.get("format", FORMAT)),
        )

    def write(self, folder: str | os.PathLike[str]) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def load_manifest(folder: str | os.PathLike[str]) -> BenchmarkManifest:
    """Read ``folder/manifest.json``.

    Raises:
        BenchmarkNotFound: no manifest, or one that cannot be read.
    """
    path = Path(folder).expanduser() / MANIFEST_FILE
    if not path.is_file():
        raise BenchmarkNotFound(
            f"{path.parent} is not a benchmark (no {MANIFEST_FILE}); make one with "
            f"`python -m lib bench make IMAGES_DIR --out {path.parent}`"
        )
    try:
        manifest = BenchmarkManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchmarkNotFound(f"benchmark manifest {path} is damaged: {exc}") from exc
    if manifest.format > FORMAT:
        raise BenchmarkNotFound(f"{path} has format {manifest.format}; upgrade Replica")
    return manifest
