"""The pictures a report shows, as PNG bytes (base64 in a finding): the query and its match
at the same height, a strip of the next matches, the difference image, the matching regions
(when region matching was used) and the index's null with the score marked.

Pure Pillow/matplotlib: the same pictures the Search page draws (:mod:`lib.compare`,
:mod:`lib.regions`).
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

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


def _training_image(path: str) -> Image.Image | None:
    try:
        return load_image(path).image
    except ImageLoadError:
        return None


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


def null_histogram(finding: Finding) -> Image.Image:
    """The index's null (calibrated scores of unrelated images) with this finding's score
    and the copy threshold marked, as a 900 x 330 picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    null, match = finding.null, finding.match
    fig, ax = plt.subplots(figsize=(7.5, 2.75), dpi=120)
    if null.size:
        widths = [b - a for a, b in zip(null.edges[:-1], null.edges[1:], strict=True)]
        ax.bar(null.edges[:-1], null.counts, width=widths, align="edge", color="#9aa5b1")
    threshold = float(finding.result.get("copy_threshold", 0.0))
    ax.axvline(threshold, color="#444444", linestyle="--", linewidth=1, label="copy threshold")
    percentile = (
        "" if match.null_percentile is None else f" ({match.null_percentile:.1f}% score lower)"
    )
    ax.axvline(match.calibrated, color="#c0392b", linewidth=2.5, label=f"this match{percentile}")
    ax.set_xlabel("calibrated score of unrelated images of this collection")
    ax.set_ylabel("images")
    ax.set_title(f"{null.size:,} unrelated images (the index's null)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
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
    and ``null``. A training file that cannot be read is drawn as a grey box."""
    query = load_image(finding.query.data()).image
    match = _training_image(result.matches[0].path)
    out = {
        "query": b64png(fit_height(query, PAIR_HEIGHT)),
        "match": b64png(
            fit_height(match, PAIR_HEIGHT) if match else placeholder("file absent", PAIR_HEIGHT)
        ),
        "null": b64png(null_histogram(finding)),
    }
    others = [_training_image(m.path) for m in result.matches[1:]]
    out["strip"] = b64png(strip([im or placeholder("absent", STRIP_HEIGHT) for im in others]))
    if match is not None:
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
