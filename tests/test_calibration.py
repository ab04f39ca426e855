"""Calibrated verdicts on look-alike data: few false alarms, most edited copies flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.bench.edits import EDITS
from lib.calibration import Calibration, background
from lib.defaults import DEFAULT_INDEX, OPENMOJI_DIR
from lib.images import list_image_files, load_image
from lib.index import build_index, is_index, open_index
from lib.search import search_images


def test_background_ignores_near_duplicates_of_the_top_match() -> None:
    # top match and two near-duplicates of it, then two ordinary neighbours
    base = np.eye(4, dtype=np.float32)
    top = base[0]
    dup = (top + 0.05 * base[1]) / np.linalg.norm(top + 0.05 * base[1])
    other1 = (base[1] + 0.2 * base[0]) / np.linalg.norm(base[1] + 0.2 * base[0])
    other2 = base[2]
    vectors = np.stack([top, dup, dup, other1, other2])[None]
    sims = np.array([[0.9, 0.89, 0.88, 0.4, 0.2]], dtype=np.float32)
    bg = background(sims, vectors, Calibration(bg_rank=1, bg_width=2, dup_cosine=0.9))
    assert bg[0] == pytest.approx(0.3)  # mean of 0.4 and 0.2: duplicates skipped


def test_verdicts_follow_thresholds() -> None:
    cal = Calibration(copy_threshold=0.2, similar_threshold=0.1)
    assert [cal.verdict(x) for x in (0.25, 0.2, 0.15, 0.05)] == ["copy", "copy", "similar", "none"]
    stricter = Calibration(
        copy_threshold=0.2, null_quantiles={"0.9": 0.1, "0.98": 0.2, "0.99": 0.3}
    ).with_false_alarm_rate(0.01)
    assert stricter.copy_threshold == pytest.approx(0.3)


def _edited_copies(sources: list[Image.Image], seed: int) -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(seed)
    names = list(EDITS)
    copies, kinds = [], []
    for j, image in enumerate(sources):
        kind = names[j % len(names)]
        copies.append(EDITS[kind](image, rng))
        kinds.append(kind)
    return copies, kinds


def _rates(index, embedder, unrelated, copies, sources_rows):  # type: ignore[no-untyped-def]
    # the default search path: calibrated score and pixel alignment of the shortlist
    h = search_images(index, [(f"h{i}", im) for i, im in enumerate(unrelated)], embedder=embedder)
    c = search_images(index, [(f"c{i}", im) for i, im in enumerate(copies)], embedder=embedder)
    false_alarms = np.mean([r.verdict == "copy" for r in h])
    recall = np.mean([r.verdict == "copy" for r in c])
    top1 = np.array([r.matches[0].id for r in c])
    return false_alarms, recall, top1, h, c


def _not_lookalikes(images: list[Image.Image], index) -> list[Image.Image]:  # type: ignore[no-untyped-def]
    """The images that are not a look-alike of an indexed one by the verdict benchmark's
    rule for drawings (:func:`lib.bench.domains.split_domain`)."""
    from lib.bench.domains import DRAWN_LOOKALIKE, thumbnails

    train = thumbnails([load_image(p).image for p in index.metadata["path"]])
    as_is = thumbnails(images) @ train.T
    mirrored = (
        thumbnails([im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images]) @ train.T
    )
    keep = np.maximum(as_is.max(1), mirrored.max(1)) < DRAWN_LOOKALIKE
    return [im for im, k in zip(images, keep, strict=True) if k]


@pytest.mark.slow
def test_fashion_mnist_lookalikes(tmp_path: Path) -> None:
    from lib.datasets import load_fashion_mnist

    try:
        images, _ = load_fashion_mnist("test", limit=1500)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))

    def render(i: int) -> Image.Image:
        return Image.fromarray(255 - images[i]).convert("RGB").resize((112, 112))

    train_dir = tmp_path / "train"
    train_dir.mkdir()
    train_ids = order[:1100]
    for n, i in enumerate(train_ids):
        render(int(i)).save(train_dir / f"{n:05d}.png")
    index = build_index(train_dir, tmp_path / "idx", embedder="sscd").index
    embedder = index.create_embedder()
    unrelated = [render(int(i)) for i in order[1100:1400]]
    source_rows = rng.choice(1100, 150, replace=False)
    copies, _ = _edited_copies([render(int(train_ids[r])) for r in source_rows], seed=1)
    false_alarms, recall, top1, _, _ = _rates(index, embedder, unrelated, copies, source_rows)
    assert false_alarms <= 0.03, f"false alarms {false_alarms:.3f} on unrelated look-alikes"
    assert recall >= 0.78, f"only {recall:.2f} of edited copies flagged"
    assert np.mean(top1 == source_rows) >= 0.95


@pytest.mark.slow
def test_openmoji_lookalikes_on_the_default_index() -> None:
    if not is_index(DEFAULT_INDEX):
        pytest.skip("default index not built: run make setup")
    index = open_index(DEFAULT_INDEX)
    embedder = index.create_embedder()
    heldout = [load_image(p).image for p in list_image_files(OPENMOJI_DIR / "heldout")]
    # a held-out emoji drawn as a training emoji mirrored or with a badge (a third of
    # them: "facing right" variants) is a copy of it, not an unrelated image
    heldout = _not_lookalikes(heldout, index)
    assert len(heldout) > 200
    rng = np.random.default_rng(2)
    source_rows = rng.choice(index.count, 120, replace=False)
    sources = [load_image(index.metadata["path"].iloc[r]).image for r in source_rows]
    copies, _ = _edited_copies(sources, seed=3)
    false_alarms, recall, top1, h, c = _rates(index, embedder, heldout, copies, source_rows)
    assert false_alarms <= 0.03, f"false alarms {false_alarms:.3f} on held-out emoji"
    # top-1 is the source or a visually identical variant of it (skin tones, genders)
    vec = index.get_vectors
    same = np.einsum("nd,nd->n", vec(top1), vec(source_rows)) >= 0.9
    assert np.mean(same) >= 0.95
    # calibration beats a raw threshold at the same false-alarm rate on held-out emoji
    raw_threshold = np.quantile([r.raw_score for r in h], 1 - max(false_alarms, 1e-9))
    raw_recall = np.mean([r.raw_score > raw_threshold for r in c])
    assert recall > raw_recall
