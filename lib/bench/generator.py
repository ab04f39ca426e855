"""Make a copy-detection benchmark with known answers from a folder of images.

The folder's images are shuffled with the seed and split into disjoint roles:
``n_sources`` references, ``n_distractors`` distractor sources (look-alikes from the same
domain whose queries have no source in the reference set) and, unless a backgrounds
folder is given, the rest as backgrounds for object-level copies. Each reference gets
``copies_per_source`` copies whose kinds cycle through every edit of
:data:`lib.bench.edits.EDITS`, "segmix" and "cutmix" (see :mod:`lib.bench.compose`), so
that every kind is equally represented. Each distractor query goes through one of the
same transforms, so that "edited-looking" does not give a copy away.

A file and its ``*_mirror`` variant (Tux Paint's convention) count as one image, and
exact duplicates (same sha256) are used once, so that no distractor or background is a
copy of a reference. Images whose short side is below ``min_size`` are left out.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lib.bench.compose import cutmix, object_cutout, segmix
from lib.bench.edits import EDITS
from lib.bench.manifest import (
    CUTMIX,
    DISTRACTOR,
    QUERY_DIR,
    REFERENCE_DIR,
    SEGMIX,
    BenchmarkManifest,
    BenchmarkQuery,
    BenchmarkReference,
)
from lib.folders import swap_into_place
from lib.images import ImageLoadError, list_image_files, load_image, read_bytes, read_caption
from lib.progress import ProgressCallback, report

DEFAULT_MIN_SIZE = 64


class NotEnoughImages(ValueError):
    """The folder has too few usable images for the roles asked for."""


def default_kinds() -> list[str]:
    """Every edit of :data:`EDITS`, then "segmix" and "cutmix"."""
    return [*EDITS, SEGMIX, CUTMIX]


@dataclass(frozen=True)
class _Source:
    """A usable image: its file, RGB pixels (alpha on white) and alpha if it has one."""

    path: Path
    image: Image.Image
    alpha: Image.Image | None
    sha256: str


def _load(path: Path, min_size: int) -> _Source | None:
    """Load through :func:`load_image`; None when unreadable or too small.

    ``load_image`` composites transparency on white, so the alpha channel (needed to cut
    an object out) is read afterwards from the same, already validated, bytes.
    """
    try:
        data = read_bytes(path)
        loaded = load_image(data, name=str(path))
    except ImageLoadError:
        return None
    if min(loaded.image.size) < min_size:
        return None
    return _Source(path, loaded.image, _alpha(data, loaded.image.size), loaded.sha256)


def _alpha(data: bytes, size: tuple[int, int]) -> Image.Image | None:
    with Image.open(io.BytesIO(data)) as raw:
        if raw.mode not in ("RGBA", "LA", "PA") and "transparency" not in raw.info:
            return None
        upright = ImageOps.exif_transpose(raw) or raw
        alpha = upright.convert("RGBA").getchannel("A")
    return alpha if alpha.size == size else None


def _family(path: Path) -> tuple[str, str]:
    return str(path.parent), path.stem.lower().removesuffix("_mirror")


def _candidates(source: str | os.PathLike[str] | list[Path]) -> list[Path]:
    """Image files, sorted, one per family (an image and its ``_mirror`` variant)."""
    if isinstance(source, list):
        files = sorted({Path(p).expanduser().resolve() for p in source})
    else:
        files = [p.resolve() for p in list_image_files(Path(source).expanduser())]
    families: dict[tuple[str, str], Path] = {}
    for f in files:
        families.setdefault(_family(f), f)
    return list(families.values())


class _Backgrounds:
    """Background images drawn at random, loaded on demand; unusable ones are dropped."""

    def __init__(self, paths: list[Path], min_size: int):
        self.paths = list(paths)
        self.min_size = min_size

    def draw(self, rng: np.random.Generator) -> _Source:
        while self.paths:
            i = int(rng.integers(0, len(self.paths)))
            loaded = _load(self.paths[i], self.min_size)
            if loaded is not None:
                return loaded
            self.paths.pop(i)
        raise NotEnoughImages("no usable background image left")


def _assign_roles(
    files: list[Path], n_sources: int, n_distractors: int, min_size: int, seed: int
) -> tuple[list[_Source], list[_Source], list[Path]]:
    """References and distractors (loaded) and the unused files, in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(files))
    sources: list[_Source] = []
    seen: set[str] = set()
    rest: list[Path] = []
    wanted = n_sources + n_distractors
    for i in order:
        if len(sources) == wanted:
            rest.append(files[i])
            continue
        loaded = _load(files[i], min_size)
        if loaded is None or loaded.sha256 in seen:
            continue
        seen.add(loaded.sha256)
        sources.append(loaded)
    if len(sources) < wanted:
        raise NotEnoughImages(
            f"found {len(sources)} usable image(s) (readable, short side >= {min_size} px, "
            f"distinct) among {len(files)}; {n_sources} sources + {n_distractors} distractors "
            "need more: lower --n-sources / --n-distractors or add images"
        )
    return sources[:n_sources], sources[n_sources:], rest


def _transform(
    kind: str, src: _Source, backgrounds: _Backgrounds, rng: np.random.Generator
) -> tuple[Image.Image, str | None, tuple[int, int, int, int] | None]:
    """Apply one kind to a source: the image, the background used and the pasted box."""
    if kind in (SEGMIX, CUTMIX):
        bg = backgrounds.draw(rng)
        if kind == SEGMIX:
            image, box = segmix(object_cutout(src.image, src.alpha), bg.image, rng)
        else:
            image, box = cutmix(src.image, bg.image, rng)
        return image, str(bg.path), box
    return EDITS[kind](src.image, rng).convert("RGB"), None, None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "image"


def _validate(
    n_sources: int, copies_per_source: int, n_distractors: int, kinds: list[str], min_size: int
) -> None:
    if n_sources < 1:
        raise ValueError(f"n_sources must be at least 1, got {n_sources}")
    if copies_per_source < 1:
        raise ValueError(f"copies_per_source must be at least 1, got {copies_per_source}")
    if n_distractors < 0:
        raise ValueError(f"n_distractors must be 0 or more, got {n_distractors}")
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    unknown = [k for k in kinds if k not in default_kinds()]
    if unknown or not kinds:
        raise ValueError(
            f"unknown kind(s) {unknown or '(none given)'}; choose from {', '.join(default_kinds())}"
        )


def generate_benchmark(
    source_dir_or_files: str | os.PathLike[str] | list[Path],
    out_dir: str | os.PathLike[str],
    *,
    n_sources: int,
    copies_per_source: int | None = None,
    n_distractors: int,
    backgrounds_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    kinds: list[str] | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> BenchmarkManifest:
    """Write a benchmark folder (see :mod:`lib.bench.manifest`) and return its manifest.

    Args:
        source_dir_or_files: a folder (searched recursively) or a list of image files.
        out_dir: the benchmark folder; written beside it, then renamed into place.
        n_sources: references (each copied ``copies_per_source`` times).
        copies_per_source: copies per reference (default: one of each kind).
        n_distractors: queries made from images that are not references.
        backgrounds_dir: images to paste objects into (default: the folder's unused images).
        seed: the same seed and inputs give byte-identical queries.
        kinds: a subset of :func:`default_kinds` (default: all).
        min_size: leave out images whose short side is below this (pixels).
        overwrite: replace an existing folder at ``out_dir``.

    Raises:
        NotEnoughImages: too few usable images for the roles.
        FileExistsError: ``out_dir`` exists, is not empty and ``overwrite`` is False.
        ValueError: a bad count or kind.
    """
    kinds = list(kinds or default_kinds())
    copies = copies_per_source or len(kinds)
    _validate(n_sources, copies, n_distractors, kinds, min_size)
    dest = Path(out_dir).expanduser().resolve()
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise FileExistsError(f"{dest} exists and is not empty; choose another --out or --force")
    files = _candidates(source_dir_or_files)
    refs, distractors, rest = _assign_roles(files, n_sources, n_distractors, min_size, seed)
    bg_files = list_image_files(Path(backgrounds_dir).expanduser()) if backgrounds_dir else rest
    needs_bg = SEGMIX in kinds or CUTMIX in kinds
    if needs_bg and not bg_files:
        raise NotEnoughImages(
            "segmix and cutmix need background images: pass --backgrounds DIR or give a "
            f"folder with more than {n_sources + n_distractors} usable images"
        )
    jobs = _jobs(refs, distractors, kinds, copies, seed)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        (tmp / REFERENCE_DIR).mkdir(parents=True)
        (tmp / QUERY_DIR).mkdir()
        total = len(refs) + len(jobs)
        references = _write_references(tmp, refs, progress, total)
        ref_files = {r.path: ref.file for r, ref in zip(refs, references, strict=True)}
        backgrounds = _Backgrounds([Path(p) for p in bg_files], min_size)
        queries = []
        for n, job in enumerate(jobs):
            queries.append(_write_query(tmp, n, job, ref_files, backgrounds, seed))
            report(progress, len(refs) + n + 1, total, "queries")
        params = {
            "source": _describe(source_dir_or_files),
            "backgrounds": _describe(backgrounds_dir) if backgrounds_dir else None,
            "n_sources": n_sources,
            "copies_per_source": copies,
            "n_distractors": n_distractors,
            "kinds": kinds,
            "seed": seed,
            "min_size": min_size,
            "candidate_images": len(files),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        manifest = BenchmarkManifest(params=params, references=references, queries=queries)
        manifest.write(tmp)
        swap_into_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


@dataclass(frozen=True)
class _Job:
    source: _Source
    kind: str
    is_copy: bool


def _jobs(
    refs: list[_Source], distractors: list[_Source], kinds: list[str], copies: int, seed: int
) -> list[_Job]:
    """Every query to make, in a seeded random order (file names give nothing away).

    Copies cycle through the kinds across references, so kinds stay balanced whatever
    ``copies`` is; distractors cycle through them too.
    """
    jobs = [
        _Job(r, kinds[(i * copies + j) % len(kinds)], True)
        for i, r in enumerate(refs)
        for j in range(copies)
    ]
    jobs += [_Job(d, kinds[j % len(kinds)], False) for j, d in enumerate(distractors)]
    order = np.random.default_rng([seed, 1]).permutation(len(jobs))
    return [jobs[i] for i in order]


def _write_query(
    folder: Path,
    n: int,
    job: _Job,
    ref_files: dict[Path, str],
    backgrounds: _Backgrounds,
    seed: int,
) -> BenchmarkQuery:
    rng = np.random.default_rng([seed, 2, n])
    image, background, box = _transform(job.kind, job.source, backgrounds, rng)
    file = f"{QUERY_DIR}/q_{n:05d}.png"
    image.save(folder / file, format="PNG")
    return BenchmarkQuery(
        file=file,
        source=ref_files[job.source.path] if job.is_copy else None,
        kind=job.kind if job.is_copy else DISTRACTOR,
        transform=job.kind,
        original=str(job.source.path),
        background=background,
        box=box,
    )


def _describe(source: str | os.PathLike[str] | list[Path]) -> str:
    return "files" if isinstance(source, list) else str(Path(source).expanduser().resolve())


def _write_references(
    folder: Path, refs: list[_Source], progress: ProgressCallback | None, total: int
) -> list[BenchmarkReference]:
    out = []
    for i, r in enumerate(refs):
        file = f"{REFERENCE_DIR}/r_{i:04d}_{_slug(r.path.stem)}{r.path.suffix.lower()}"
        shutil.copyfile(r.path, folder / file)
        caption = read_caption(r.path)
        if caption:
            (folder / file).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        out.append(BenchmarkReference(file=file, original=str(r.path), caption=caption))
        report(progress, i + 1, total, "references")
    return out
