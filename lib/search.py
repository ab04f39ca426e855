"""Search an index: top-k training matches per query, with raw and calibrated scores
and a verdict ("copy", "similar" or "none") derived from the calibrated score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lib.calibration import NEIGHBOURS, Calibration, background
from lib.embedders import Embedder
from lib.embedding import embed_files
from lib.images import ImageLoadError, load_image
from lib.index import ReplicaIndex
from lib.progress import ProgressCallback
from lib.regions import DEFAULT_SHORTLIST

VERDICT_SENTENCES = {
    "copy": "The image stands far above everything else in the index next to this match: "
    "very likely a copy or an edited copy of it.",
    "similar": "The image resembles this match more than unrelated images of the same kind "
    "usually do, but not enough to call it a copy.",
    "none": "No training image stands out: the closest ones are no nearer than unrelated "
    "images of the same kind.",
}


@dataclass(frozen=True)
class Match:
    """One training image retrieved for a query.

    ``score``: raw cosine similarity (-1..1). ``calibrated``: score minus the query's
    background similarity (see :mod:`lib.calibration`).

    Only in a search with ``regions=True`` (see :mod:`lib.regions`): ``global_score`` is
    the whole-image cosine, ``region_score`` the best crop-pair cosine, ``query_box`` and
    ``match_box`` that pair's crops (left, top, right, bottom) in pixels of each image;
    ``score`` is then the larger cosine and ``calibrated`` the combined calibrated score.
    These fields are None otherwise and left out of the JSON.
    """

    rank: int
    id: int
    path: str
    score: float
    calibrated: float
    caption: str = ""
    width: int = 0
    height: int = 0
    global_score: float | None = None
    region_score: float | None = None
    query_box: tuple[int, int, int, int] | None = None
    match_box: tuple[int, int, int, int] | None = None


@dataclass
class QueryResult:
    """The matches and verdict for one query image (or the reason it failed)."""

    query: str
    verdict: str = "none"
    score: float = 0.0
    raw_score: float = 0.0
    background: float = 0.0
    matches: list[Match] = field(default_factory=list)
    error: str | None = None

    @property
    def top(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def explanation(self) -> str:
        """One sentence saying why the verdict is what it is."""
        if self.error:
            return f"Could not read this image: {self.error}."
        return VERDICT_SENTENCES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the CLI's ``search --json``."""
        if self.error is not None:
            return {"query": self.query, "error": self.error, "verdict": None, "matches": []}
        return {
            "query": self.query,
            "verdict": self.verdict,
            "score": round(self.score, 6),
            "raw_score": round(self.raw_score, 6),
            "background": round(self.background, 6),
            "matches": [_match_dict(m) for m in self.matches],
        }


_REGION_FIELDS = ("global_score", "region_score", "query_box", "match_box")


def _match_dict(m: Match) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in asdict(m).items():
        if k in _REGION_FIELDS and v is None:
            continue
        out[k] = round(v, 6) if isinstance(v, float) else (list(v) if isinstance(v, tuple) else v)
    return out


def rank_vectors(
    index: ReplicaIndex,
    vectors: np.ndarray,
    labels: Sequence[str],
    *,
    top_k: int = 5,
    calibration: Calibration | None = None,
) -> list[QueryResult]:
    """Search query vectors (n, dim), float32 L2-normalised, against ``index``."""
    if len(vectors) == 0:
        return []
    cal = calibration or index.calibration
    top_k = max(1, int(top_k))
    k = min(max(top_k, NEIGHBOURS), max(index.count, 1))
    sims, ids = index.search_vectors(vectors, k)
    neighbours = index.get_vectors(ids)
    bg = background(sims, neighbours, cal)
    results = []
    for q, label in enumerate(labels):
        matches = []
        for rank in range(min(top_k, k)):
            row = int(ids[q, rank])
            if row < 0:
                break
            meta = index.metadata.iloc[row]
            raw = float(sims[q, rank])
            matches.append(
                Match(
                    rank=rank + 1,
                    id=int(meta["id"]),
                    path=str(meta["path"]),
                    score=raw,
                    calibrated=raw - float(bg[q]),
                    caption=str(meta["caption"] or ""),
                    width=int(meta["width"]),
                    height=int(meta["height"]),
                )
            )
        top_cal = matches[0].calibrated if matches else 0.0
        results.append(
            QueryResult(
                query=label,
                verdict=cal.verdict(top_cal, matches[0].score) if matches else "none",
                score=top_cal,
                raw_score=matches[0].score if matches else 0.0,
                background=float(bg[q]),
                matches=matches,
            )
        )
    return results


def search_files(
    index: ReplicaIndex,
    paths: Sequence[str | Path],
    *,
    embedder: Embedder | None = None,
    top_k: int = 5,
    calibration: Calibration | None = None,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
    regions: bool = False,
    shortlist: int = DEFAULT_SHORTLIST,
) -> list[QueryResult]:
    """Search image files; unreadable files get a result with ``error`` set.

    Results are in the order of ``paths``; labels are absolute paths. ``regions``:
    re-rank the first ``shortlist`` global matches by crop pairs (:mod:`lib.regions`);
    it costs about (1 + shortlist) x 10 crop embeddings per query.
    """
    model = embedder or index.create_embedder()
    index.check_embedder(model)
    files = [Path(p).expanduser().resolve() for p in paths]
    embedded = embed_files(files, model, batch_size=batch_size, dedupe=False, progress=progress)
    found = {r.path: i for i, r in enumerate(embedded.records)}
    ranked = rank_vectors(
        index,
        embedded.vectors,
        [r.path for r in embedded.records],
        top_k=max(top_k, shortlist) if regions else top_k,
        calibration=calibration,
    )
    if regions:
        ranked = rerank_results(
            index,
            model,
            ranked,
            None,
            top_k=top_k,
            shortlist=shortlist,
            calibration=calibration,
        )
    errors = {s.path: s.reason for s in embedded.skipped}
    out = []
    for f in files:
        key = str(f)
        if key in found:
            out.append(ranked[found[key]])
        else:
            out.append(QueryResult(query=key, error=errors.get(key, "could not be read")))
    return out


def search_images(
    index: ReplicaIndex,
    images: Sequence[tuple[str, bytes | Image.Image]],
    *,
    embedder: Embedder | None = None,
    top_k: int = 5,
    calibration: Calibration | None = None,
    regions: bool = False,
    shortlist: int = DEFAULT_SHORTLIST,
) -> list[QueryResult]:
    """Search uploaded images given as (label, raw bytes or a Pillow image) pairs;
    ``regions`` and ``shortlist`` as in :func:`search_files`."""
    model = embedder or index.create_embedder()
    index.check_embedder(model)
    good: list[int] = []
    decoded: list[Image.Image] = []
    prepared: list[np.ndarray] = []
    errors: dict[int, str] = {}
    for position, (label, item) in enumerate(images):
        try:
            if isinstance(item, Image.Image):
                from lib.images import to_rgb

                image = to_rgb(item)
            else:
                # full size with regions, so that boxes are in the image's own pixels
                draft = None if regions else model.draft_short_side
                image = load_image(item, name=label, draft_short_side=draft).image
        except ImageLoadError as exc:
            errors[position] = exc.reason
            continue
        good.append(position)
        if regions:
            decoded.append(image)
        prepared.append(model.prepare(image))
    vectors = model.embed_arrays(prepared) if prepared else np.zeros((0, model.dim), np.float32)
    labels = [images[p][0] for p in good]
    k = max(top_k, shortlist) if regions else top_k
    results = rank_vectors(index, vectors, labels, top_k=k, calibration=calibration)
    if regions:
        results = rerank_results(
            index,
            model,
            results,
            decoded,
            top_k=top_k,
            shortlist=shortlist,
            calibration=calibration,
        )
    ranked = dict(zip(good, results, strict=True))
    return [
        ranked[p] if p in ranked else QueryResult(query=label, error=errors[p])
        for p, (label, _) in enumerate(images)
    ]


def rerank_results(
    index: ReplicaIndex,
    embedder: Embedder,
    results: Sequence[QueryResult],
    images: Sequence[Image.Image] | None,
    *,
    top_k: int = 5,
    shortlist: int = DEFAULT_SHORTLIST,
    calibration: Calibration | None = None,
) -> list[QueryResult]:
    """Re-rank global results by region scores (:func:`lib.regions.rerank`), keep
    ``top_k`` matches and re-derive verdict and score from the new top match.

    ``images``: the query images in the order of ``results``, or None to read each
    query back from its label (a path). Candidate regions are cached for
    the call, so a training image shortlisted by many queries is embedded once.
    """
    from lib.regions import RegionCache, rerank

    cal = calibration or index.calibration
    cache: RegionCache = {}
    out = []
    for i, result in enumerate(results):
        if result.error is not None or not result.matches:
            out.append(result)
            continue
        if images is None:
            try:
                image = load_image(result.query).image
            except ImageLoadError as exc:
                out.append(QueryResult(query=result.query, error=exc.reason))
                continue
        else:
            image = images[i]
        matches = rerank(index, embedder, image, result, shortlist=shortlist, cache=cache)
        matches = matches[:top_k]
        top = matches[0]
        out.append(
            replace(
                result,
                verdict=cal.verdict(top.calibrated, top.score),
                score=top.calibrated,
                raw_score=top.score,
                matches=matches,
            )
        )
    return out
