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
from lib.verification import (
    SHORTLIST,
    THUMB_SIDE,
    GreyThumb,
    ThumbCache,
    align_shortlist,
    grey_thumb,
)


@dataclass(frozen=True)
class Match:
    """One training image retrieved for a query.

    ``score``: raw cosine similarity (-1..1). ``calibrated``: score minus the query's
    background similarity (see :mod:`lib.calibration`).

    Only in a search with ``regions=True`` (see :mod:`lib.regions`): ``global_score`` is
    the whole-image cosine (the same as ``score``), ``region_score`` the best crop-pair
    cosine, ``query_box`` and ``match_box`` that pair's crops (left, top, right, bottom)
    in pixels of each image, and ``combined`` the score the shortlist is ordered by.
    These fields are None otherwise and left out of the JSON. ``alignment``: how well
    the pixels line up (:mod:`lib.verification`, -1..1), for the shortlisted matches of a
    search from images (None for a search from vectors or an unreadable file).
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
    combined: float | None = None
    alignment: float | None = None


@dataclass
class QueryResult:
    """The matches and verdict for one query image (or the reason it failed).

    ``score``: the top match's calibrated score; ``raw_score`` its cosine;
    ``null_percentile``: the share (0..100) of the index's null sample (indexed images
    searched as unrelated queries, :mod:`lib.calibration`) with weaker evidence, None
    when the index is too small to calibrate; ``rule``: what made a ``copy`` verdict,
    "calibrated", "alignment" (the pixels line up, :mod:`lib.verification`) or
    "identical" (raw cosine >= ``identical_threshold``); ``alignment``: the top match's
    alignment, with ``alignment_threshold`` when the index's null measured it.
    """

    query: str
    verdict: str = "none"
    score: float = 0.0
    raw_score: float = 0.0
    background: float = 0.0
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    null_percentile: float | None = None
    rule: str | None = None
    alignment: float | None = None
    alignment_threshold: float | None = None
    copy_threshold: float = 0.0
    similar_threshold: float = 0.0
    identical_threshold: float = 0.97
    false_alarm_rate: float = 0.02
    null_size: int = 0

    @property
    def top(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def explanation(self) -> str:
        """Sentences saying why the verdict is what it is, with the numbers that decided
        it (the rule that fired, the threshold and the percentile among unrelated images)."""
        if self.error:
            return f"Could not read this image: {self.error}."
        if not self.matches:
            return "The index is empty: there is nothing to compare with."
        score, thr = ordered_pair(self.score, self.copy_threshold, sign=True)
        if self.null_percentile is None:
            among = (
                " This index is too small to calibrate (fewer than 20 images), so the "
                "thresholds are defaults, not measured on this collection."
            )
        elif self.null_percentile >= 100.0:
            among = (
                f" None of {self.null_size:,} unrelated images of this collection scores as high."
            )
        else:
            among = (
                f" Of {self.null_size:,} unrelated images of this collection, "
                f"{self.null_percentile:.1f}% score lower."
            )
        if self.rule == "alignment" and self.alignment is not None:
            aligned, needed = ordered_pair(self.alignment, self.alignment_threshold or 0.0)
            return (
                f"The pixels of this image line up with the top match at {aligned} "
                f"(normalised cross-correlation, 1 = identical), at or above the {needed} "
                f"that calls a copy; its score above the neighbourhood is {score} (copy at "
                f"{thr})." + among
            )
        if self.rule == "identical":
            return (
                f"The top match has a raw cosine of {self.raw_score:.3f}, at or above "
                f"{self.identical_threshold:.2f}: the two images are near-identical. "
                f"(Its score above the neighbourhood, {score}, is under the {thr} copy "
                f"threshold because the collection holds close look-alikes of it.)" + among
            )
        lead = f"The top match scores {score} above this image's neighbourhood"
        if self.verdict == "copy":
            return f"{lead}, at or above the {thr} that calls a copy." + among
        if self.verdict == "similar":
            return (
                f"{lead}: more than most unrelated images of this collection, but under "
                f"the {thr} that calls a copy." + among
            )
        return f"{lead}, under the {thr} that calls a copy: nothing stands out." + among

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
            "null_percentile": (
                None if self.null_percentile is None else round(self.null_percentile, 2)
            ),
            "rule": self.rule,
            "alignment": None if self.alignment is None else round(self.alignment, 6),
            "copy_threshold": round(self.copy_threshold, 6),
            "alignment_threshold": (
                None if self.alignment_threshold is None else round(self.alignment_threshold, 6)
            ),
            "false_alarm_rate": self.false_alarm_rate,
            "explanation": self.explanation(),
            "matches": [_match_dict(m) for m in self.matches],
        }


def ordered_pair(value: float, threshold: float, *, sign: bool = False) -> tuple[str, str]:
    """A score and its threshold as text, with as many decimals (2 to 6) as it takes for
    the text to keep their order: never "+0.25, under the +0.25"."""
    for decimals in range(2, 7):
        spec = f"{'+' if sign else ''}.{decimals}f"
        a, b = format(value, spec), format(threshold, spec)
        if (float(a) >= float(b)) == (value >= threshold):
            return a, b
    return a, b


_REGION_FIELDS = (
    "global_score",
    "region_score",
    "query_box",
    "match_box",
    "combined",
    "alignment",
)


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
        results.append(judge(QueryResult(query=label, background=float(bg[q])), matches, cal))
    return results


def judge(result: QueryResult, matches: list[Match], calibration: Calibration) -> QueryResult:
    """``result`` with ``matches`` (best first) and the verdict, score, percentile, rule
    and thresholds that the top match earns under ``calibration``."""
    top = matches[0] if matches else None
    score = top.calibrated if top else 0.0
    raw = top.score if top else 0.0
    aligned = top.alignment if top else None
    cal = calibration
    return replace(
        result,
        matches=matches,
        verdict=cal.verdict(score, raw, aligned) if top else "none",
        rule=cal.rule(score, raw, aligned) if top else None,
        score=score,
        raw_score=raw,
        alignment=aligned,
        alignment_threshold=cal.alignment_threshold if cal.uses_alignment else None,
        null_percentile=cal.null_percentile(score, aligned) if top else None,
        copy_threshold=cal.copy_threshold,
        similar_threshold=cal.similar_threshold,
        identical_threshold=cal.identical_threshold,
        false_alarm_rate=cal.false_alarm_rate,
        null_size=cal.null_sample,
    )


def align_results(
    results: Sequence[QueryResult],
    queries: Sequence[GreyThumb | None],
    calibration: Calibration,
    *,
    top_k: int,
    cache: ThumbCache | None = None,
) -> list[QueryResult]:
    """Align each query's shortlist (:data:`lib.verification.SHORTLIST` matches) with
    its pixels, keep ``top_k`` matches and judge the top match. The global order stays
    (so the top match is the highest cosine, the paper's top-1) unless a shortlisted
    image whose pixels line up well enough to call a copy (the "alignment" rule) is
    not first: that one then leads. ``queries``: each result's query as a grey
    thumbnail (None: no alignment, only cut to ``top_k``)."""
    cache = {} if cache is None else cache
    out = []
    for result, query in zip(results, queries, strict=True):
        if result.error is not None or not result.matches or query is None:
            out.append(judge(result, result.matches[:top_k], calibration))
            continue
        short, rest = result.matches[:SHORTLIST], result.matches[SHORTLIST:]
        values = align_shortlist(query, [m.path for m in short], cache)
        matches = [
            replace(m, alignment=float(v) if np.isfinite(v) else None)
            for m, v in zip(short, values, strict=True)
        ] + rest
        evidence = [calibration.evidence(m.calibrated, m.alignment) for m in matches[:SHORTLIST]]
        best = max(range(len(evidence)), key=lambda i: (evidence[i], -i))
        lead = matches[best]
        if best and calibration.rule(lead.calibrated, lead.score, lead.alignment) == "alignment":
            matches = [lead, *matches[:best], *matches[best + 1 :]]
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
    ranked = align_results(ranked, thumbs, cal, top_k=k)
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
    thumbs: list[GreyThumb | None] = []
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
        thumbs.append(grey_thumb(image))
        prepared.append(model.prepare(image))
    vectors = model.embed_arrays(prepared) if prepared else np.zeros((0, model.dim), np.float32)
    labels = [images[p][0] for p in good]
    cal = calibration or index.calibration
    k = max(top_k, shortlist) if regions else top_k
    results = rank_vectors(index, vectors, labels, top_k=max(k, SHORTLIST), calibration=cal)
    results = align_results(results, thumbs, cal, top_k=k)
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
        out.append(judge(result, matches[:top_k], cal))
    return out
