"""Benchmark generator: roles, manifest, pasted objects, reproducibility, refusals."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lib.bench.compose import object_cutout
from lib.bench.generator import NotEnoughImages, default_kinds, generate_benchmark
from lib.bench.manifest import DISTRACTOR, load_manifest
from lib.cli import main
from lib.images import load_image
from tests.synthetic import scene, write_scenes

COLOURS = [(255, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _disk_stamps(folder: Path, n: int) -> list[Path]:
    """RGBA sources: an opaque disk of one colour on a transparent background (with noise
    under the transparency, which must not show)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        rgba = np.zeros((120, 140, 4), np.uint8)
        rgba[..., :3] = rng.integers(0, 256, (120, 140, 3))
        image = Image.fromarray(rgba, "RGBA")
        ImageDraw.Draw(image).ellipse((20, 15, 120, 105), fill=(*COLOURS[i], 255))
        paths.append(folder / f"stamp_{i}.png")
        image.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_scenes(folder, range(16))
    return folder


@pytest.fixture(scope="module")
def bench(scenes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "b"
    generate_benchmark(scenes_dir, out, n_sources=6, n_distractors=4, seed=3)
    return out


def test_manifest_records_every_query_with_its_source_and_kind(bench: Path) -> None:
    m = load_manifest(bench)
    assert m.params["n_sources"] == 6 and m.params["seed"] == 3
    assert m.params["copies_per_source"] == len(default_kinds())
    assert len(m.references) == 6
    assert len(m.queries) == 6 * len(default_kinds()) + 4
    copies = [q for q in m.queries if q.source is not None]
    # one copy of each kind per source
    assert Counter(q.kind for q in copies) == {k: 6 for k in default_kinds()}
    ref_by_file = {r.file: r for r in m.references}
    for q in copies:
        assert q.original == ref_by_file[q.source].original
        assert q.transform == q.kind
    distractors = [q for q in m.queries if q.source is None]
    assert len(distractors) == 4 and {q.kind for q in distractors} == {DISTRACTOR}
    originals = {r.original for r in m.references}
    assert not originals & {q.original for q in distractors}
    used = originals | {q.original for q in distractors}
    backgrounds = {q.background for q in m.queries if q.background}
    assert backgrounds and not backgrounds & used
    assert m.kinds() == [*m.kinds()[:-1], DISTRACTOR]


def test_files_are_readable_and_references_are_exact_copies(bench: Path) -> None:
    m = load_manifest(bench)
    for r in m.references:
        assert _sha(bench / r.file) == _sha(Path(r.original))
    for q in m.queries:
        image = load_image(bench / q.file).image
        if q.box is not None:
            left, top, right, bottom = q.box
            assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height
            assert q.kind in ("segmix", "cutmix") or q.transform in ("segmix", "cutmix")


def test_same_seed_same_bytes_other_seed_differs(scenes_dir: Path, tmp_path: Path) -> None:
    kwargs = {"n_sources": 4, "n_distractors": 2, "kinds": ["crop", "segmix", "cutmix"]}
    a = generate_benchmark(scenes_dir, tmp_path / "a", seed=7, **kwargs)  # type: ignore[arg-type]
    b = generate_benchmark(scenes_dir, tmp_path / "b", seed=7, **kwargs)  # type: ignore[arg-type]
    c = generate_benchmark(scenes_dir, tmp_path / "c", seed=8, **kwargs)  # type: ignore[arg-type]
    assert a.queries == b.queries and a.references == b.references
    for q in a.queries:
        assert _sha(tmp_path / "a" / q.file) == _sha(tmp_path / "b" / q.file)
    assert [r.original for r in c.references] != [r.original for r in a.references]


def test_segmix_query_contains_the_pasted_object(tmp_path: Path) -> None:
    _disk_stamps(tmp_path / "stamps", 6)
    write_scenes(tmp_path / "backgrounds", range(100, 104))
    m = generate_benchmark(
        tmp_path / "stamps",
        tmp_path / "b",
        n_sources=4,
        copies_per_source=2,
        n_distractors=0,
        kinds=["segmix"],
        backgrounds_dir=tmp_path / "backgrounds",
    )
    colour_of = {r.file: COLOURS[int(Path(r.original).stem[-1])] for r in m.references}
    assert len(m.queries) == 8
    for q in m.queries:
        assert q.source is not None and q.box is not None and q.background
        pixels = np.asarray(load_image(tmp_path / "b" / q.file).image, dtype=int)
        match = np.abs(pixels - colour_of[q.source]).max(axis=2) <= 8
        left, top, right, bottom = q.box
        inside = match[top:bottom, left:right]
        # the rotated disk fills at least ~40% of its box and nothing of it lies outside
        assert inside.mean() > 0.3
        assert match.sum() - inside.sum() <= 0.01 * match.size
        width = right - left
        assert 0.3 * 384 * 0.9 <= width <= 384  # 30-60% of the canvas, grown by rotation


def test_object_cutout_prefers_alpha_then_border_then_centre() -> None:
    alpha = Image.new("L", (50, 40), 0)
    ImageDraw.Draw(alpha).rectangle((10, 5, 29, 24), fill=255)
    cut = object_cutout(scene(1, (50, 40)), alpha)
    assert cut.method == "alpha" and cut.image.size == (20, 20)
    plain = Image.new("RGB", (60, 60), (250, 250, 250))
    ImageDraw.Draw(plain).ellipse((20, 10, 39, 49), fill=(20, 40, 200))
    cut = object_cutout(plain)
    assert cut.method == "border" and cut.image.size == (20, 40)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    assert object_cutout(noise).method == "centre"


def test_mirror_variants_and_duplicates_count_once(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    paths = write_scenes(folder, range(3))
    for p in paths:
        Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            p.with_name(p.stem + "_mirror.png")
        )
    (folder / "copy_of_0.png").write_bytes(paths[0].read_bytes())
    generate_benchmark(folder, tmp_path / "ok", n_sources=3, n_distractors=0, kinds=["jpeg"])
    with pytest.raises(NotEnoughImages, match="3 usable"):
        generate_benchmark(folder, tmp_path / "no", n_sources=4, n_distractors=0, kinds=["jpeg"])


def test_refusals(scenes_dir: Path, tmp_path: Path, bench: Path) -> None:
    with pytest.raises(NotEnoughImages):
        generate_benchmark(scenes_dir, tmp_path / "x", n_sources=10, n_distractors=10)
    with pytest.raises(NotEnoughImages, match="background"):
        generate_benchmark(scenes_dir, tmp_path / "y", n_sources=10, n_distractors=6)
    with pytest.raises(FileExistsError):
        generate_benchmark(scenes_dir, bench, n_sources=2, n_distractors=0)
    with pytest.raises(ValueError, match="unknown kind"):
        generate_benchmark(scenes_dir, tmp_path / "z", n_sources=2, n_distractors=0, kinds=["x"])
    # small images are left out
    write_scenes(tmp_path / "small", range(4))
    with pytest.raises(NotEnoughImages, match="short side >= 200"):
        generate_benchmark(tmp_path / "small", tmp_path / "w", n_sources=1, n_distractors=0,
                           min_size=200)  # fmt: skip
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.tmp-*"))


def test_cli_make_and_its_exit_codes(
    scenes_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    args = ["-q", "bench", "make", str(scenes_dir), "--out", str(out), "--n-sources", "4"]
    assert main([*args, "--n-distractors", "2", "--kinds", "jpeg,segmix"]) == 0
    assert "4 references, 8 copies (2 kinds), 2 distractors" in capsys.readouterr().out
    assert len(load_manifest(out).queries) == 10
    assert main([*args, "--n-distractors", "2"]) == 2  # exists, no --force
    assert main([*args, "--n-distractors", "2", "--force", "--kinds", "flip"]) == 0
    assert main([*args, "--n-distractors", "20", "--force"]) == 2
    assert main([*args, "--n-distractors", "2", "--kinds", "nope"]) == 2
    assert main(["-q", "bench", "make", str(tmp_path / "missing"), "--out", str(out)]) == 2
