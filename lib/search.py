"""Search an index: top-k training matches per query, with raw and calibrated scores
and a verdict ("copy", "similar" or "none") derived from the calibrated score.

The result types live in :mod:`lib.results` (imported by this module and by
:mod:`lib.regions`, which this module uses for re-ranking); they stay importable from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from lib.allowed_paths import index_roots
from lib.calibration import NEIGHBOURS, Calibration, background
from lib.embedders import Embedder
from lib.embedding import embed_files
from lib.images import ImageLoadError, load_image
from lib.index import ReplicaIndex
from lib.progress import ProgressCallback
from lib.regions import DEFAULT_SHORTLIST, RegionCache, rerank
from lib.results import Match, QueryResult, judge, leading, ordered_pair
from lib.verification import (
    SHORTLIST,
    THUMB_SIDE,
    GreyThumb,
    ThumbCache,
    align_shortlist,
    grey_thumb,
)

__all__ = [
    "Match",
    "QueryResult",
    "align_results",
    "judge",
    "ordered_pair",
    "rank_vectors",
    "rerank_results",
    "search_files",
    "search_images",
]


MIN_QUERY_SIDE = 8
"""Pixels: a query narrower or lower than this carries too little picture to compare (a
1 x 1 image would otherwise get a full verdict); it gets a result with ``error`` set."""


def too_small(width: int, height: int) -> str | None:
    """Why a query of this size is not judged, or None when it is large enough."""
    if min(width, height) >= MIN_QUERY_SIDE:
        return None
    return (
        f"the image is {width} x {height} pixels: too small to compare with a training image "
        f"(at least {MIN_QUERY_SIDE} pixels a side)"
    )


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
        results.append(judge(QueryResult(query=label, background=float(bg[q])), matches, cal))
    return results


def align_results(
    results: Sequence[QueryResult],
    queries: Sequence[GreyThumb | None],
    calibration: Calibration,
    *,
    top_k: int,
    cache: ThumbCache | None = None,
    roots: Iterable[Path] | None = None,
) -> list[QueryResult]:
    """Align each query's shortlist (:data:`lib.verification.SHORTLIST` matches) with
    its pixels, keep ``top_k`` matches and judge the top match. The global order stays
    (so the top match is the highest cosine, the paper's top-1) unless a shortlisted
    image whose pixels line up well enough to call a copy (the "alignment" rule) is
    not first: that one then leads. ``queries``: each result's query as a grey
    thumbnail (None: no alignment, only cut to ``top_k``). ``roots``: the folders the
    training files may be read from (:func:`lib.allowed_paths.index_roots`); a match
    outside them is not opened and keeps no alignment, so its verdict rests on the
    embedding evidence (None: the caller vouches for every path)."""
    cache = {} if cache is None else cache
    allowed = None if roots is None else tuple(roots)
    out = []
    for result, query in zip(results, queries, strict=True):
        if result.error is not None or not result.matches or query is None:
            out.append(judge(result, result.matches[:top_k], calibration))
            continue
        short, rest = result.matches[:SHORTLIST], result.matches[SHORTLIST:]
        values = align_shortlist(query, [m.path for m in short], cache, allowed)
        matches = [
            replace(m, alignment=float(v) if np.isfinite(v) else None)
            for m, v in zip(short, values, strict=True)
        ] + rest
        best = leading([(m.score, m.calibrated, m.alignment) for m in matches[:SHORTLIST]],
                       calibration)  # fmt: skip
        if best:
            matches = [matches[best], *matches[:best], *matches[best + 1 :]]
        matches = [replace(m, rank=r) for r, m in enumerate(matches, start=1)]
        out.append(judge(result, matches[:top_k], calibration))
    return out


def _query_thumb(path: str) -> GreyThumb | None:
    try:
        return grey_thumb(load_image(path, draft_short_side=THUMB_SIDE).image)
    except ImageLoadError:
        return None


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
    cal = calibration or index.calibration
    k = max(top_k, shortlist) if regions else top_k
    ranked = rank_vectors(
        index,
        embedded.vectors,
        [r.path for r in embedded.records],
        top_k=max(k, SHORTLIST),
        calibration=cal,
    )
    thumbs = [_query_thumb(r.path) for r in embedded.records]
    ranked = align_results(ranked, thumbs, cal, top_k=k, roots=index_roots(index))
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
    for r in embedded.records:
        small = too_small(r.width, r.height)
        if small is not None:
            found.pop(r.path, None)
            errors[r.path] = small
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
    thumbs: list[GreyThumb | None] = []
    prepared: list[np.ndarray] = []
    errors: dict[int, str] = {}
    for position, (label, item) in enumerate(images):
        try:
            if isinstance(item, Image.Image):
                from lib.images import to_rgb

                image = to_rgb(item)
                small = too_small(*image.size)
                if small is not None:
                    raise ImageLoadError(small, label)
            else:
                # full size with regions, so that boxes are in the image's own pixels
                draft = None if regions else model.draft_short_side
                loaded = load_image(item, name=label, draft_short_side=draft)
                image = loaded.image
                small = too_small(loaded.width, loaded.height)
                if small is not None:
                    raise ImageLoadError(small, label)
        except ImageLoadError as exc:
            errors[position] = exc.reason
            continue
        good.append(position)
        if regions:
            decoded.append(image)
        thumbs.append(grey_thumb(image))
        prepared.append(model.prepare(image))
    vectors = model.embed_arrays(prepared) if prepared else np.zeros((0, model.dim), np.float32)
    labels = [images[p][0] for p in good]
    cal = calibration or index.calibration
    k = max(top_k, shortlist) if regions else top_k
    results = rank_vectors(index, vectors, labels, top_k=max(k, SHORTLIST), calibration=cal)
    results = align_results(results, thumbs, cal, top_k=k, roots=index_roots(index))
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
        out.append(judge(result, matches[:top_k], cal))
    return out
