"""The one safe image loader: every decode in Replica goes through :func:`load_image`.

It reads the bytes once (so the sha256 and the decode see the same data), refuses
files that are empty, truncated, not images, or larger than a pixel limit, applies
EXIF orientation, and converts every mode Pillow can produce (palette, alpha,
CMYK, 16-bit, greyscale, animated) to 8-bit RGB. Alpha is composited on white.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
)
"""File suffixes treated as images when a folder is scanned (lower case)."""

DEFAULT_MAX_PIXELS = 80_000_000
"""Refuse images with more pixels than this (width x height), about 9000 x 9000."""

MAX_FILE_BYTES = 256 * 1024 * 1024
"""Refuse files larger than this many bytes before reading them."""


class ImageLoadError(ValueError):
    """An image could not be loaded; ``reason`` is a short human-readable cause."""

    def __init__(self, reason: str, source: str = "") -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image with facts about its file.

    ``width`` and ``height`` are the pixel size of the stored image after EXIF
    orientation, before any draft reduction; ``image`` may be smaller when a
    draft size was asked for.
    """

    image: Image.Image
    source: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a batch, with the reason."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a file for decoding, refusing missing, empty, and oversized files."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError("file not found", str(p))
    if not p.is_file():
        raise ImageLoadError("not a regular file", str(p))
    size = p.stat().st_size
    if size == 0:
        raise ImageLoadError("empty file (0 bytes)", str(p))
    if size > MAX_FILE_BYTES:
        raise ImageLoadError(_file_too_large(size), str(p))
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"cannot read file ({exc.strerror or exc})", str(p)) from exc


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_short_side: int | None = None,
    name: str | None = None,
) -> LoadedImage:
    """Decode an image file or bytes into 8-bit RGB.

    Args:
        source: a path, or the raw bytes of an uploaded file.
        max_pixels: refuse images whose width x height exceeds this, judged from the
            header before any pixel is decoded. Pillow's own decompression-bomb limit
            (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP) still applies above it.
        draft_short_side: for JPEG, let the decoder reduce by a power of two
            (DCT scaling) while keeping the short side at least this many pixels;
            None or 0 decodes at full size.
        name: how to call the source in error messages (default: the path).

    Raises:
        ImageLoadError: with a reason such as "not an image", "truncated", "too large".
        ValueError: ``max_pixels`` is not positive or ``draft_short_side`` is negative.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if draft_short_side is not None and draft_short_side < 0:
        raise ValueError(f"draft_short_side must be >= 0 or None, got {draft_short_side}")
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        label = name or "<upload>"
        if not data:
            raise ImageLoadError("empty file (0 bytes)", label)
        if len(data) > MAX_FILE_BYTES:
            raise ImageLoadError(_file_too_large(len(data)), label)
    else:
        label = name or str(source)
        data = read_bytes(source)
    digest = hashlib.sha256(data).hexdigest()
    image, width, height = _decode(data, label, max_pixels, draft_short_side)
    return LoadedImage(image=image, source=label, sha256=digest, width=width, height=height)


def _file_too_large(size: int) -> str:
    return f"file too large ({size / 1e6:.0f} MB > {MAX_FILE_BYTES / 1e6:.0f} MB)"


def _decode(
    data: bytes, label: str, max_pixels: int, draft_short_side: int | None
) -> tuple[Image.Image, int, int]:
    # No warnings.catch_warnings() here: it swaps process-wide filters and is not
    # thread-safe, and load_image runs in a thread pool. Our own max_pixels check
    # runs on the header; Pillow's DecompressionBombError covers the rest.
    # Decoders fed untrusted bytes raise more than OSError (struct.error, IndexError,
    # TypeError, EOFError, ...); any of them means the file cannot be decoded.
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageLoadError("not an image (unrecognised format)", label) from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"too large: refused as a decompression bomb ({exc})", label) from exc
    except Exception as exc:
        raise ImageLoadError(f"corrupt image header ({exc})", label) from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageLoadError("image has no pixels", label)
    if width * height > max_pixels:
        raise ImageLoadError(
            f"too large: {width}x{height} = {width * height / 1e6:.1f} MP "
            f"(limit {max_pixels / 1e6:.1f} MP)",
            label,
        )
    if draft_short_side and img.format == "JPEG":
        img.draft("RGB", (draft_short_side, draft_short_side))
    try:
        img.seek(0)  # animated: first frame
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"too large: refused as a decompression bomb ({exc})", label) from exc
    except Exception as exc:
        raise ImageLoadError(f"truncated or corrupt image data ({exc})", label) from exc
    oriented, swapped = _apply_exif_orientation(img, label)
    if swapped:
        width, height = height, width
    try:
        return to_rgb(oriented), width, height
    except ImageLoadError as exc:
        raise ImageLoadError(exc.reason, label) from exc


def _apply_exif_orientation(img: Image.Image, label: str) -> tuple[Image.Image, bool]:
    """The image turned upright by its EXIF orientation, and whether its axes swapped.

    The swap is read from the tag, not guessed from the sizes: a JPEG draft can turn a
    1000x999 image into a square one.
    """
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation not in range(2, 9):
            return img, False  # upright already: no copy of the pixels
        return ImageOps.exif_transpose(img) or img, orientation in (5, 6, 7, 8)
    except Exception as exc:
        log.debug("ignoring unreadable EXIF in %s: %s", label, exc)
        return img, False


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white.

    Raises:
        ImageLoadError: the mode cannot be converted to RGB.
    """
    mode = img.mode
    has_transparency = img.info.get("transparency") is not None
    if mode == "RGB" and not has_transparency:
        return img
    try:
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            return _high_bit_depth_to_rgb(img)
        palette_alpha = mode == "P" and img.palette is not None and img.palette.mode == "RGBA"
        if mode == "PA" or palette_alpha or (has_transparency and mode in ("P", "RGB", "L", "1")):
            img = img.convert("RGBA")  # a transparent colour or palette alpha
        if img.mode in ("RGBA", "LA", "La", "RGBa"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"unsupported colour mode {mode} ({exc})") from exc


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    """Scale a 16-bit or 32-bit single-channel image to 8-bit grey, then RGB."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        scaled = arr / 257.0
    else:
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = arr * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = arr
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = arr / 257.0
        else:
            scaled = (arr - lo) * (255.0 / max(hi - lo, 1e-12))
    grey = np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def display_path(path: str | bytes | os.PathLike[str]) -> str:
    """A printable form of a file path, valid Unicode whatever the file system holds.

    A name that is not valid UTF-8 (on POSIX it arrives as a ``str`` with surrogate
    escapes, ``os.fsdecode(b"caf\\xe9.png") == "caf\\udce9.png"``) shows each bad byte as
    ``\\xNN``: ``caf\\xe9.png``. Valid paths are returned unchanged. The display form
    does not open the file; keep ``os.fsencode(path)`` to reach it.
    """
    if isinstance(path, bytes | bytearray):
        raw = bytes(path)
    else:
        text = os.fspath(path)
        if isinstance(text, bytes):
            raw = text
        elif is_displayable(text):
            return text
        else:
            try:
                raw = os.fsencode(text)
            except UnicodeEncodeError:  # a lone surrogate that no file system name made
                raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def is_displayable(text: str) -> bool:
    """True when ``text`` is valid Unicode (encodes to UTF-8; no surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_image_files(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """All files with an image suffix under ``folder``, sorted; hidden files left out.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    pattern = root.rglob("*") if recursive else root.glob("*")
    files = [
        p
        for p in pattern
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files)


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand a mix of files and folders into a list of files, keeping order.

    Folders contribute their image files (sorted); files are kept as given, even
    without an image suffix, so that the loader can say why they are not images.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(list_image_files(p))
        else:
            out.append(p)
    return out


def read_caption(image_path: Path) -> str:
    """The caption stored beside an image as ``<stem>.txt`` (first non-empty line), or ''."""
    sidecar = Path(image_path).with_suffix(".txt")
    if not sidecar.is_file():
        return ""
    try:
        text = sidecar.read_text(encoding="utf-8-sig", errors="replace")  # drops a BOM
    except OSError:
        return ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""
