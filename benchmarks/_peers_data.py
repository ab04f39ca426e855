"""The planted folder of benchmarks/peers.py: originals, edited copies and look-alikes.

One flat folder of anonymous files (``img0000.png`` ..., shuffled, so neither names nor
order give anything away) holding:

- originals: the most photographic Tux Paint stamps (Debian tuxpaint-stamps-default; most
  distinct colours first, short side at least 64 px, flattened onto white, no ``_mirror``
  stamps, one per stamp family) and OpenMoji renders (data/openmoji, seeded sample, one per
  emoji group). An original is refused when its 32x32 thumbnail, as it is or mirrored,
  correlates with one already taken at :data:`STAMP_LOOKALIKE` / :data:`EMOJI_LOOKALIKE` or
  more (:func:`lib.bench.domains.thumbnails`): the folder holds no unplanted near-duplicate
  that would make "any other pair is wrong" unfair;
- one edited copy each of ``n_edited`` originals (half stamps, half emoji), the kinds of
  :data:`KINDS` dealt in turn within each domain;
- look-alikes that are different images and must not be called duplicates
  (:data:`LOOKALIKES`): skin-tone variants of one emoji, hearts of nine colours, and emoji
  drawn as exact mirror images of each other (pointing left / right, walking left /
  right). The mirrored siblings are pixel-for-pixel the ``flip`` edit of each other: a tool
  that finds flipped copies cannot tell them apart, and the table shows both.

The composed copies are pasted onto stamps kept out of the folder (the largest
photographic ones, each used once), so that no copy shares a background with an original
or with another copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lib.bench import edits
from lib.bench.domains import thumbnails
from lib.datasets import list_tuxpaint_stamps, openmoji_group
from lib.defaults import OPENMOJI_DIR

KINDS = ("exact", "jpeg", "crop", "resize", "colour+rot", "flip", "banner", "composed")
"""Edit kinds, in table order."""
STAMP_LOOKALIKE = 0.95
EMOJI_LOOKALIKE = 0.85
"""Thumbnail correlation (as is or mirrored) at which a candidate original is refused."""
MIN_STAMP_SIDE = 64
BACKGROUND_POOL = 80
"""Composed copies take their backgrounds from the largest of this many most-colourful
stamps."""
SKIN_TONES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
LOOKALIKES: dict[str, list[list[str]]] = {
    "skin tone": [[base] + [f"{base}-{t}" for t in SKIN_TONES] for base in ("1F44D", "270C")],
    "recoloured": [
        ["2764", "1F49B", "1F49A", "1F499", "1F49C", "1F5A4", "1F90D", "1F90E", "1F9E1"]
    ],
    "mirrored": [
        ["1F448", "1F449"],
        ["2B05", "27A1"],
        ["2199", "2198"],
        ["1F91B", "1F91C"],
        ["1FAF2", "1FAF1"],
        ["1F6B6", "1F6B6-200D-27A1-FE0F"],
        ["1F3C3", "1F3C3-200D-27A1-FE0F"],
        ["1F9CE", "1F9CE-200D-27A1-FE0F"],
    ],
}
"""Look-alike kind -> groups of OpenMoji hexcodes; every two members of a group are a
look-alike pair."""
DATA_VERSION = 2
"""Bump when the folder's recipe changes: the cache key includes it."""


@dataclass(frozen=True)
class Picture:
    """One image to be written: ``key`` says where it came from."""

    key: str
    domain: str
    image: Image.Image


def _flatten(path: Path) -> Image.Image:
    """A stamp as RGB on white (its alpha composited)."""
    rgba = Image.open(path).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _colours(path: Path) -> int:
    """Distinct colours among the opaque pixels of a stamp (a photograph has thousands)."""
    rgba = np.asarray(Image.open(path).convert("RGBA")).astype(np.int64)
    px = rgba[..., :3][rgba[..., 3] > 128]
    return len(np.unique(px[:, 0] * 65536 + px[:, 1] * 256 + px[:, 2])) if len(px) else 0


def _stamp_family(path: Path) -> str:
    stem = re.sub(r"(_mirror|[-_]?\d+)+$", "", path.stem)
    return f"{path.parent.name}/{stem}"


class _Distinct:
    """Accepts images whose thumbnail, as is or mirrored, stays below ``limit`` against all
    accepted so far."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.thumbs = np.zeros((0, 3072), np.float32)

    def accept(self, image: Image.Image) -> bool:
        t = thumbnails([image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
        if len(self.thumbs) and float((t @ self.thumbs.T).max()) >= self.limit:
            return False
        self.thumbs = np.concatenate([self.thumbs, t[:1]])
        return True


def photo_stamps(n: int, n_backgrounds: int) -> tuple[list[Picture], list[Image.Image]]:
    """``n`` photographic stamps (most colours first) and ``n_backgrounds`` backgrounds for
    composed copies (the largest of the :data:`BACKGROUND_POOL` most colourful), apart."""
    stamps = [p for p, _ in list_tuxpaint_stamps() if "_mirror" not in p.stem]
    sized = [p for p in stamps if min(Image.open(p).size) >= MIN_STAMP_SIDE]
    ranked = sorted(sized, key=lambda p: (-_colours(p), str(p)))
    pool = ranked[:BACKGROUND_POOL]
    bg_paths = sorted(pool, key=lambda p: (-np.prod(Image.open(p).size), str(p)))
    bg_paths = bg_paths[:n_backgrounds]
    distinct = _Distinct(STAMP_LOOKALIKE)
    families = set()
    for p in bg_paths:
        distinct.accept(_flatten(p))
        families.add(_stamp_family(p))
    out: list[Picture] = []
    for p in ranked:
        if len(out) >= n:
            break
        if p in bg_paths or _stamp_family(p) in families:
            continue
        image = _flatten(p)
        if distinct.accept(image):
            families.add(_stamp_family(p))
            out.append(Picture(f"tuxpaint/{p.parent.name}/{p.name}", "photo", image))
    return out, [_flatten(p) for p in bg_paths]


def _emoji_path(hexcode: str, root: Path) -> Path:
    for side in ("train", "heldout"):
        path = root / side / f"{hexcode}.png"
        if path.is_file():
            return path
    raise FileNotFoundError(f"OpenMoji {hexcode} not rendered under {root}: run `make setup`")


def lookalike_pictures(
    root: Path = OPENMOJI_DIR,
) -> tuple[list[Picture], list[tuple[str, str, str]]]:
    """The look-alike emoji and their pairs (hexcode a, hexcode b, look-alike kind)."""
    pictures, pairs = [], []
    for kind, groups in LOOKALIKES.items():
        for group in groups:
            for code in group:
                image = Image.open(_emoji_path(code, root)).convert("RGB")
                pictures.append(Picture(f"openmoji/{code}", "emoji", image))
            pairs += [(a, b, kind) for i, a in enumerate(group) for b in group[i + 1 :]]
    return pictures, pairs


def emoji_originals(
    n: int, seed: int, avoid: list[Picture], root: Path = OPENMOJI_DIR
) -> list[Picture]:
    """``n`` OpenMoji renders, a seeded sample, one per emoji group, none a look-alike of
    another or of ``avoid``."""
    files = sorted((root / "train").glob("*.png")) + sorted((root / "heldout").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no OpenMoji renders under {root}: run `make setup`")
    order = np.random.default_rng(seed).permutation(len(files))
    distinct = _Distinct(EMOJI_LOOKALIKE)
    groups = {openmoji_group(p.key.split("/")[-1]) for p in avoid}
    for p in avoid:
        distinct.accept(p.image)
    out: list[Picture] = []
    for i in order:
        if len(out) >= n:
            break
        path = files[int(i)]
        if openmoji_group(path.stem) in groups:
            continue
        image = Image.open(path).convert("RGB")
        if float(np.asarray(image.convert("L"), np.float32).std()) < 2.0:
            continue  # blank render
        if distinct.accept(image):
            groups.add(openmoji_group(path.stem))
            out.append(Picture(f"openmoji/{path.stem}", "emoji", image))
    return out


def downscale3(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Shrink to a third of each side, then scale back up (bilinear both ways)."""
    w, h = image.size
    small = image.resize((max(1, w // 3), max(1, h // 3)), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


EDIT_FUNCTIONS = {
    "crop": edits.crop70,
    "resize": downscale3,
    "colour+rot": edits.colour_rotate,
    "flip": edits.flip,
    "banner": edits.banner,
}
"""Edit kind -> function; ``exact`` and ``jpeg`` are made when saving (:func:`_save`;
quality 25 as :func:`lib.bench.edits.jpeg25`) and ``composed`` needs a background
(:func:`lib.bench.edits.composed`)."""


def plan_edits(originals: list[Picture], n_edited: int, seed: int) -> list[tuple[int, str]]:
    """(position in ``originals``, kind): ``n_edited`` distinct originals, half from each
    domain, the kinds dealt in turn within each domain so each kind gets both; each domain
    starts at another kind, so 200 edits give 25 of every kind (13 + 12)."""
    rng = np.random.default_rng(seed + 1)
    plan: list[tuple[int, str]] = []
    domains = sorted({p.domain for p in originals})
    for d, domain in enumerate(domains):
        positions = [i for i, p in enumerate(originals) if p.domain == domain]
        share = n_edited // len(domains) + (1 if d < n_edited % len(domains) else 0)
        chosen = rng.choice(positions, size=min(share, len(positions)), replace=False)
        start = d * len(KINDS) // len(domains)  # the kinds a domain gets once more differ
        plan += [(int(i), KINDS[(start + j) % len(KINDS)]) for j, i in enumerate(chosen)]
    return plan


def cache_key(n_photos: int, n_emoji: int, n_edited: int, seed: int) -> str:
    """A folder name that changes with every parameter of the recipe."""
    text = f"v{DATA_VERSION}-{n_photos}-{n_emoji}-{n_edited}-{seed}"
    return f"{text}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def build_collection(root: Path, n_photos: int, n_emoji: int, n_edited: int, seed: int = 0) -> Path:
    """Write the planted folder under ``root``/KEY/images with ``truth.json`` beside it
    (reused when it exists); returns the truth file's path.

    ``truth.json``: ``files`` (name -> source key, domain and role), ``planted``
    ([original, copy, kind]), ``lookalikes`` ([a, b, kind]), ``kinds``.
    """
    folder = root / cache_key(n_photos, n_emoji, n_edited, seed)
    truth_path = folder / "truth.json"
    if truth_path.is_file():
        return truth_path
    if folder.exists():
        shutil.rmtree(folder)
    stamps, backgrounds = photo_stamps(n_photos, n_edited // len(KINDS) + 2)
    looks, look_pairs = lookalike_pictures()
    originals = stamps + emoji_originals(n_emoji, seed, looks)
    plan = plan_edits(originals, n_edited, seed)
    composed = [k == "composed" for _, k in plan]
    copies = [
        _edit(originals[i], kind, j, seed, backgrounds[sum(composed[:j]) % len(backgrounds)])
        for j, (i, kind) in enumerate(plan)
    ]
    pictures = originals + looks + copies
    order = np.random.default_rng(seed + 2).permutation(len(pictures))
    names = [""] * len(pictures)
    for rank, i in enumerate(order.tolist()):
        jpeg = pictures[i].key.endswith("#jpeg")
        names[i] = f"img{rank:04d}" + (".jpg" if jpeg else ".png")
    images = folder / "images"
    images.mkdir(parents=True)
    for picture, name in zip(pictures, names, strict=True):
        _save(picture, images / name)
    first_copy = len(originals) + len(looks)
    for j, (i, kind) in enumerate(plan):
        if kind == "exact":  # the same bytes, not merely the same pixels
            shutil.copyfile(images / names[i], images / names[first_copy + j])
    by_key = {p.key: names[i] for i, p in enumerate(pictures)}
    roles = ["original"] * len(originals) + ["look-alike"] * len(looks) + ["copy"] * len(copies)
    truth = {
        "kinds": list(KINDS),
        "files": {
            names[i]: {"key": p.key, "domain": p.domain, "role": roles[i]}
            for i, p in enumerate(pictures)
        },
        "planted": [[names[i], names[first_copy + j], kind] for j, (i, kind) in enumerate(plan)],
        "lookalikes": [
            [by_key[f"openmoji/{a}"], by_key[f"openmoji/{b}"], kind] for a, b, kind in look_pairs
        ],
    }
    truth_path.write_text(json.dumps(truth, indent=1), encoding="utf-8")  # marks it complete
    return truth_path


def _edit(source: Picture, kind: str, j: int, seed: int, background: Image.Image) -> Picture:
    """The ``j``-th planted copy: ``exact`` and ``jpeg`` keep the pixels (the file's bytes
    are copied, or encoded at quality 25 by :func:`_save`); ``composed`` pastes onto
    ``background``."""
    rng = np.random.default_rng([seed, j])
    if kind in ("exact", "jpeg"):
        image = source.image
    elif kind == "composed":
        image = edits.composed(source.image, rng, background=background)
    else:
        image = EDIT_FUNCTIONS[kind](source.image, rng)
    return Picture(f"{source.key}#{kind}", source.domain, image)


def _save(picture: Picture, path: Path) -> None:
    """PNG, or JPEG at quality 25 for a ``jpeg`` copy."""
    if path.suffix == ".jpg":
        picture.image.save(path, format="JPEG", quality=25)
    else:
        picture.image.save(path, format="PNG")
