"""Tests for lib.datasets: OpenMoji rendering and split, Fashion-MNIST and Tux Paint readers."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.datasets import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    OPENMOJI_ATTRIBUTION,
    OPENMOJI_LICENCE,
    TUXPAINT_STAMPS_DIR,
    OpenMojiSplit,
    is_heldout,
    list_tuxpaint_stamps,
    load_fashion_mnist,
    openmoji_caption,
    openmoji_group,
    prepare_openmoji,
)
from lib.progress import Cancelled

LIMIT = 40


@pytest.fixture(scope="module")
def openmoji(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OpenMojiSplit]:
    root = tmp_path_factory.mktemp("om") / "openmoji"
    return root, prepare_openmoji(root, size=128, limit=LIMIT)


def _split_names(split: OpenMojiSplit) -> tuple[set[str], set[str]]:
    train = {p.stem for p in split.train_dir.glob("*.png")}
    heldout = {p.stem for p in split.heldout_dir.glob("*.png")}
    return train, heldout


def test_registry_and_licence() -> None:
    assert set(DATASETS) == {"openmoji", "fashion-mnist", "tuxpaint-stamps"}
    assert OPENMOJI_LICENCE == "CC BY-SA 4.0"
    assert "https://openmoji.org" in OPENMOJI_ATTRIBUTION
    assert DATASETS["fashion-mnist"].licence == "MIT"
    assert DATASETS["tuxpaint-stamps"].licence == "GPL-2+"


def test_openmoji_pngs_are_rgb_on_white(openmoji: tuple[Path, OpenMojiSplit]) -> None:
    root, split = openmoji
    train, heldout = _split_names(split)
    assert split.n_train == len(train) and split.n_heldout == len(heldout)
    assert split.n_train + split.n_heldout == LIMIT
    assert not train & heldout
    for png in [*split.train_dir.glob("*.png"), *split.heldout_dir.glob("*.png")]:
        with Image.open(png) as image:
            assert image.mode == "RGB" and image.size == (128, 128)
            pixels = np.asarray(image)
        corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners == 255).all(), png.name
        assert (pixels < 250).any(), f"{png.name} is blank"
    assert (root / "LICENSE.txt").read_text().strip() == OPENMOJI_ATTRIBUTION
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["licence"] == OPENMOJI_LICENCE and manifest["size"] == 128


def test_openmoji_captions(openmoji: tuple[Path, OpenMojiSplit]) -> None:
    _, split = openmoji
    for png in [*split.train_dir.glob("*.png"), *split.heldout_dir.glob("*.png")]:
        lines = png.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 and lines[0].strip(), png.name
        assert any(ch.isalpha() for ch in lines[0]), (png.name, lines[0])


def test_caption_names() -> None:
    assert openmoji_caption("1F44D") == "thumbs up"
    assert openmoji_caption("1F44D-1F3FD") == "thumbs up medium skin tone"
    assert openmoji_caption("2654") == "white chess king"
    assert openmoji_caption("E000") == "E000"  # private-use OpenMoji extra


def test_split_is_deterministic(openmoji: tuple[Path, OpenMojiSplit], tmp_path: Path) -> None:
    _, first = openmoji
    second = prepare_openmoji(tmp_path / "again", size=128, limit=LIMIT)
    assert _split_names(first) == _split_names(second)


def test_split_is_pinned(openmoji: tuple[Path, OpenMojiSplit]) -> None:
    """The sha256 split must not depend on the process (a planted answer, not ``hash()``)."""
    _, split = openmoji
    by_hash = {"0035-FE0F-20E3", "0039-FE0F-20E3", "1F10F", "1F12F", "1F191", "1F193"}
    by_hash |= {"1F199", "1F19A"}
    assert {h for h in _all_names(split) if is_heldout(h)} == by_hash
    # keycaps 5 and 9 are drawn like the training keycaps: moved to training as look-alikes
    assert _split_names(split)[1] == by_hash - {"0035-FE0F-20E3", "0039-FE0F-20E3"}


def _all_names(split: OpenMojiSplit) -> set[str]:
    train, heldout = _split_names(split)
    return train | heldout


def test_skin_tone_variants_share_a_side() -> None:
    tones = ["1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"]
    families = {
        "1F44D": [f"1F44D-{t}" for t in tones],
        "261D": ["261D-FE0F", *(f"261D-{t}" for t in tones)],
        "1F9D1-200D-1F91D-200D-1F9D1": [
            f"1F9D1-{a}-200D-1F91D-200D-1F9D1-{b}" for a in tones for b in tones
        ],
    }
    for base, variants in families.items():
        assert all(openmoji_group(v) == openmoji_group(base) for v in variants)
        for fraction in (0.1, 0.5, 0.9):
            sides = {is_heldout(h, fraction) for h in [base, *variants]}
            assert len(sides) == 1, (base, fraction)
    assert openmoji_group("1F44D") != openmoji_group("1F44E")


def test_heldout_fraction_is_about_right() -> None:
    groups = [f"{c:X}" for c in range(0x1F300, 0x1F300 + 2000)]
    share = np.mean([is_heldout(g, 0.1) for g in groups])
    assert 0.07 < share < 0.13
    assert not any(is_heldout(g, 0.0) for g in groups)


def test_second_call_does_not_rerender(openmoji: tuple[Path, OpenMojiSplit]) -> None:
    root, first = openmoji
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    second = prepare_openmoji(root, size=128, limit=LIMIT)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes


def test_changed_size_rerenders_and_leaves_no_partial(tmp_path: Path) -> None:
    root = tmp_path / "om"
    prepare_openmoji(root, size=128, limit=3)
    split = prepare_openmoji(root, size=32, limit=3)
    with Image.open(next(split.train_dir.glob("*.png"))) as image:
        assert image.size == (32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["om"]


def test_cancelled_run_leaves_nothing(tmp_path: Path) -> None:
    def cancel(done: int, total: int, message: str = "") -> None:
        if done > 0:
            raise Cancelled

    with pytest.raises(Cancelled):
        prepare_openmoji(tmp_path / "om", limit=30, progress=cancel)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "om").mkdir()
    (tmp_path / "om" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        prepare_openmoji(tmp_path / "om", limit=2)
    assert (tmp_path / "om" / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"heldout_fraction": 1.5}, {"limit": 0}])
def test_prepare_rejects_bad_args(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        prepare_openmoji(tmp_path / "om", **kwargs)  # type: ignore[arg-type]


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_on_planted_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    got_images, got_labels = load_fashion_mnist("test", limit=3, root=tmp_path)
    np.testing.assert_array_equal(got_images, images[:3])
    np.testing.assert_array_equal(got_labels, labels[:3])
    assert got_labels.dtype == np.int64
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError):
        load_fashion_mnist("validation", root=tmp_path)


def test_fashion_mnist_debian_package() -> None:
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(len(FASHION_MNIST_CLASSES)))
    small, small_labels = load_fashion_mnist("train", limit=7)
    assert small.shape == (7, 28, 28) and small_labels.shape == (7,)


def test_tuxpaint_stamps() -> None:
    if not TUXPAINT_STAMPS_DIR.is_dir():
        pytest.skip("Debian package tuxpaint-stamps-default is not installed")
    stamps = list_tuxpaint_stamps()
    assert len(stamps) > 100
    assert [p for p, _ in stamps] == sorted(p for p, _ in stamps)
    for png, caption in stamps:
        assert png.suffix == ".png" and caption.strip(), png


def test_tuxpaint_missing_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tuxpaint-stamps-default"):
        list_tuxpaint_stamps(tmp_path / "absent")


def test_dangling_svg_marker_still_renders() -> None:
    """OpenMoji 17 has an SVG whose marker-end points at a missing id; cairosvg would crash."""
    from lib.datasets import _render_png

    svg = (
        b'<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">'
        b'<path stroke="#000" stroke-width="8" d="M10 36h52" marker-end="url(#Dot)"/></svg>'
    )
    with Image.open(io.BytesIO(_render_png(svg, 64))) as image:
        pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels[32, 32].max() < 50 and pixels[0, 0].min() == 255
