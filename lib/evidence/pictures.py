"""The pictures a report shows, as PNG bytes (base64 in a finding): the query and its match
at the same height, a strip of the next matches, the difference image, the matching regions
(when region matching was used) and the index's null with the score marked.

Pure Pillow/matplotlib: the same pictures the Search page draws (:mod:`lib.compare`,
:mod:`lib.regions`).
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from lib.allowed_paths import OutsideAllowedFolders, index_roots, load_inside
from lib.compare import difference, fit_height
from lib.embedders import Embedder
from lib.images import ImageLoadError, load_image
from lib.index import ReplicaIndex
from lib.search import QueryResult

if TYPE_CHECKING:
    from lib.evidence.finding import Finding

PAIR_HEIGHT = 320
"""Pixels: the query and its match are drawn at this height."""
STRIP_HEIGHT = 120
"""Pixels: the next matches' height in the strip."""


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def b64png(image: Image.Image) -> str:
    return base64.b64encode(png(image)).decode("ascii")


def placeholder(text: str, height: int) -> Image.Image:
    """A grey box saying why a picture is missing."""
    image = Image.new("RGB", (height, height), (235, 235, 235))
    ImageDraw.Draw(image).text((8, height // 2 - 6), text, fill=(90, 90, 90))
    return image


ABSENT = "file absent"
"""The placeholder's words for a training file that cannot be read."""
NOT_INCLUDED = "not included: outside the allowed folders"
"""The placeholder's words for a training file outside the folders the index may read."""


def _training_image(path: str, roots: Iterable[Path]) -> Image.Image | str:
    """The training picture at ``path``, or the placeholder's words saying why not (it
    is opened only inside ``roots``, :mod:`lib.allowed_paths`)."""
    try:
        return load_inside(path, roots).image
    except OutsideAllowedFolders:
        return NOT_INCLUDED
    except ImageLoadError:
        return ABSENT


def _short_placeholder(words: str) -> Image.Image:
    """A strip-sized grey box: "absent" or "not included" (the first words)."""
    return placeholder("not included" if words == NOT_INCLUDED else "absent", STRIP_HEIGHT)


def strip(images: list[Image.Image], height: int = STRIP_HEIGHT, gap: int = 8) -> Image.Image:
    """Images side by side at ``height`` pixels on white, ``gap`` pixels apart."""
    scaled = [fit_height(im, height) for im in images] or [placeholder("none", height)]
    width = sum(im.width for im in scaled) + gap * (len(scaled) - 1)
    out = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for im in scaled:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def _panel(
    ax: Any,
    edges: list[float],
    counts: list[int],
    value: float | None,
    threshold: float | None,
    xlabel: str,
) -> None:
    if counts:
        widths = [b - a for a, b in itertools.pairwise(edges)]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color="#9aa5b1")
    if threshold is not None and threshold <= 1.0:
        ax.axvline(threshold, color="#444444", linestyle="--", linewidth=1, label="copy threshold")
    if value is not None:
        ax.axvline(value, color="#c0392b", linewidth=2.5, label="this match")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("images", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper right")


def null_histogram(finding: Finding) -> Image.Image:
    """The index's null (unrelated images of this collection) with this finding's scores
    and the copy thresholds marked: the calibrated score, and beside it the pixel alignment
    when the index measured its null. About 900 x 330 pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    null, match, result = finding.null, finding.match, finding.result
    aligned = bool(null.alignment_counts) and match.alignment is not None
    fig, axes = plt.subplots(1, 2 if aligned else 1, figsize=(7.5, 2.75), dpi=120, squeeze=False)
    _panel(
        axes[0][0],
        null.edges,
        null.counts,
        match.calibrated,
        float(result.get("copy_threshold", 0.0)),
        "calibrated score",
    )
    if aligned:
        needed = result.get("alignment_threshold")
        _panel(
            axes[0][1],
            null.alignment_edges,
            null.alignment_counts,
            match.alignment,
            None if needed is None else float(needed),
            "pixel alignment",
        )
    among = (
        ""
        if match.null_percentile is None
        else f": {match.null_percentile:.1f}% have weaker evidence than this match"
    )
    fig.suptitle(f"{null.size:,} unrelated images of this collection{among}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def finding_pictures(
    finding: Finding, index: ReplicaIndex, result: QueryResult, embedder: Embedder
) -> dict[str, str]:
    """Every picture of a finding's report, base64 PNG by name: ``query``, ``match``,
    ``strip`` (the next matches), ``difference``, ``regions`` (only with region matching)
    and ``null``. A training file that cannot be read, or that lies outside the folders
    ``index`` may read (:func:`lib.allowed_paths.index_roots`; it is then never opened),
    is drawn as a grey box saying so, and the pictures made from it are left out."""
    roots = index_roots(index)
    query = load_image(finding.query.data()).image
    match = _training_image(result.matches[0].path, roots)
    out = {
        "query": b64png(fit_height(query, PAIR_HEIGHT)),
        "match": b64png(
            placeholder(match, PAIR_HEIGHT)
            if isinstance(match, str)
            else fit_height(match, PAIR_HEIGHT)
        ),
        "null": b64png(null_histogram(finding)),
    }
    others = [_training_image(m.path, roots) for m in result.matches[1:]]
    out["strip"] = b64png(
        strip([_short_placeholder(im) if isinstance(im, str) else im for im in others])
    )
    if not isinstance(match, str):
        out["difference"] = b64png(difference(query, match, PAIR_HEIGHT))
        if finding.settings.get("regions"):
            from lib.regions import compare_regions, region_heatmap

            marked_q, marked_m = region_heatmap(
                query, match, compare_regions(embedder, query, match)
            )
            out["regions"] = b64png(
                strip([marked_q, marked_m], height=PAIR_HEIGHT // 2 + 80, gap=16)
            )
    return out
