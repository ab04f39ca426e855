"""The one safe image loader: every decode in Replica goes through :func:`load_image`.

It reads the bytes once (so the sha256 and the decode see the same data), refuses
files that are empty, truncated, not images, larger than a pixel limit, or whose decode
would need more memory than a byte limit (judged from the header, before any pixel is
decoded), applies EXIF orientation, and converts every mode Pillow can produce (palette,
alpha, CMYK, 16-bit, float, greyscale, animated) to 8-bit RGB. Alpha is composited on
white. Only raster formats Pillow decodes itself are opened (:func:`decodable_formats`);
PostScript, which Pillow hands to Ghostscript, never is.

Which files under a folder are images is decided by :mod:`lib.image_files`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {
        *(".apng", ".avif", ".avifs", ".blp", ".bmp", ".bw", ".cur", ".dcx", ".dds", ".dib"),
        *(".fit", ".fits", ".flc", ".fli", ".ftc", ".ftu", ".gbr", ".gif", ".icb", ".icns"),
        *(".ico", ".im", ".j2c", ".j2k", ".jfif", ".jp2", ".jpc", ".jpe", ".jpeg", ".jpf"),
        *(".jpg", ".jpx", ".mpo", ".msp", ".pbm", ".pcd", ".pcx", ".pfm", ".pgm", ".png"),
        *(".pnm", ".ppm", ".psd", ".pxr", ".qoi", ".ras", ".rgb", ".rgba", ".sgi", ".tga"),
        *(".tif", ".tiff", ".vda", ".vst", ".webp", ".xbm", ".xpm"),
    }
)
"""Suffixes (lower case) of the formats :func:`decodable_formats` names, as Pillow registers
them. Folders are listed by content, not by these; they pick the files an uploaded zip
keeps and the types the upload widgets accept."""

UNDECODED_FORMATS = {
    "EPS": "PostScript/EPS: not decoded (Pillow would run Ghostscript on it)",
    "BUFR": "BUFR: no decoder installed",
    "GRIB": "GRIB: no decoder installed",
    "HDF5": "HDF5: no decoder installed",
    "MPEG": "MPEG video: not an image",
    "WMF": "WMF/EMF: vector image, not decoded",
    "IPTC": "IPTC/NAA: not an image",
    "ICO": "ICO icon container: not decoded (Pillow decodes it before its size can be checked)",
    "ICNS": "ICNS icon container: not decoded (Pillow decodes it before its size can be checked)",
}
"""Formats Pillow identifies but Replica never decodes, with the reason given for them."""

DEFAULT_MAX_PIXELS = 80_000_000
"""Refuse images with more pixels than this (width x height), about 9000 x 9000."""

DEFAULT_MAX_DECODE_BYTES = 512 * 1024**2
"""Refuse images whose decode and conversion to RGB would hold more than this many bytes
of memory at once, estimated from the header by :func:`decode_memory`. An 80 MP RGB JPEG
needs about 340 MB; a 62 MP 32-bit float TIFF 560 MB (refused); WebP and JPEG 2000 decoders
need 17 and 20 bytes per pixel, so their limit is about 30 MP and 25 MP."""

MAX_FILE_BYTES = 256 * 1024 * 1024
"""Refuse files larger than this many bytes before reading them."""

HEAD_BYTES = 1024
"""How much of a file :func:`unreadable_reason` looks at (an SVG's tag may follow comments)."""

HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
"""Single-channel modes of more than 8 bits, scaled to 8-bit grey by :func:`to_rgb`."""

_NATIVE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
"""Bytes per pixel Pillow stores for a mode; every other mode takes 4 (RGB too)."""

_DECODER_BYTES = {"WEBP": 13, "JPEG2000": 16, "AVIF": 6}
"""Bytes per pixel a format's decoder holds beside the image, measured on Pillow 13
(benchmarks/untrusted_inputs.py): libwebp's canvas and its copies, OpenJPEG's int32
planes, libavif's YUV planes."""

_BAND_PIXELS = 1 << 20
"""High-bit-depth images are scaled to 8 bits in bands of about this many pixels."""

_WHITE = (255, 255, 255)

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that turns the stored pixels upright."""

_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)


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


@functools.cache
def decodable_formats() -> tuple[str, ...]:
    """Pillow format names :func:`load_image` opens: every format this Pillow reads (with
    ``pillow-heif``'s HEIF opener when that package is installed), less
    :data:`UNDECODED_FORMATS`.

    Example:
        >>> "PNG" in decodable_formats()
        True
    """
    _register_optional_openers()
    Image.init()
    return tuple(sorted(f for f in Image.OPEN if f not in UNDECODED_FORMATS))


def _register_optional_openers() -> None:
    """Let Pillow read HEIC/HEIF when ``pillow-heif`` is installed (it is optional)."""
    try:
        import pillow_heif  # type: ignore[import-not-found]
    except ImportError:
        return
    pillow_heif.register_heif_opener()


def unreadable_reason(head: bytes) -> str:
    """Why a file whose first bytes are ``head`` (:data:`HEAD_BYTES` of them) is not decoded,
    for a file that no format in :func:`decodable_formats` recognises.

    Example:
        >>> unreadable_reason(b"\\0\\0\\0\\x18ftypheic")
        'HEIC/HEIF: no decoder installed (pip install pillow-heif)'
    """
    if not head:
        return "empty file (0 bytes)"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC/HEIF: no decoder installed (pip install pillow-heif)"
        if brand in (b"avif", b"avis"):
            return "AVIF: this Pillow was built without AVIF support (Pillow 11.3+ reads it)"
        if brand in (b"jxl ",):
            return "JPEG XL: no decoder installed"
        return "not an image (a video or other ISO media file)"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\0\0\0\x0cJXL "):
        return "JPEG XL: no decoder installed"
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return UNDECODED_FORMATS["EPS"]
    if head.startswith(b"%PDF"):
        return "PDF: not an image (export its pages as PNG to index them)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "SVG: vector image, not decoded (export it as PNG to index it)"
    return "not an image (unrecognised format)"


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
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    draft_short_side: int | None = None,
    name: str | None = None,
) -> LoadedImage:
    """Decode an image file or bytes into 8-bit RGB.

    Args:
        source: a path, or the raw bytes of an uploaded file.
        max_pixels: refuse images whose width x height exceeds this, judged from the
            header before any pixel is decoded. Pillow's own decompression-bomb limit
            (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP) still applies above it.
        max_decode_bytes: refuse images whose decode would hold more bytes of memory than
            this (:func:`decode_memory`), also judged from the header.
        draft_short_side: for JPEG, let the decoder reduce by a power of two
            (DCT scaling) while keeping the short side at least this many pixels;
            None or 0 decodes at full size.
        name: how to call the source in error messages (default: the path).

    Raises:
        ImageLoadError: with a reason such as "not an image", "truncated", "too large".
        ValueError: ``max_pixels`` or ``max_decode_bytes`` is not positive, or
            ``draft_short_side`` is negative.

    Example:
        >>> loaded = load_image("photo.jpg", draft_short_side=288)
        >>> loaded.image.mode, loaded.width, loaded.height
        ('RGB', 4032, 3024)
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if max_decode_bytes <= 0:
        raise ValueError(f"max_decode_bytes must be positive, got {max_decode_bytes}")
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
    try:
        image, width, height = _decode(data, max_pixels, max_decode_bytes, draft_short_side)
    except ImageLoadError as exc:
        raise ImageLoadError(exc.reason, label) from exc
    return LoadedImage(image=image, source=label, sha256=digest, width=width, height=height)


def _file_too_large(size: int) -> str:
    return f"file too large ({size / 1e6:.0f} MB > {MAX_FILE_BYTES / 1e6:.0f} MB)"


def _decode(
    data: bytes, max_pixels: int, max_decode_bytes: int, draft_short_side: int | None
) -> tuple[Image.Image, int, int]:
    # No warnings.catch_warnings() here: it swaps process-wide filters and is not
    # thread-safe, and load_image runs in a thread pool. Our own limits are checked on
    # the header; Pillow's DecompressionBombError covers the rest.
    img = _open_image(data)
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageLoadError("image has no pixels")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"too large: {width}x{height} = {width * height / 1e6:.1f} MP "
            f"(limit {max_pixels / 1e6:.1f} MP)"
        )
    if draft_short_side and img.format == "JPEG":
        img.draft("RGB", (draft_short_side, draft_short_side))
    _check_memory(img, decode_memory(img, stored_size=(width, height)), max_decode_bytes)
    _load_pixels(img)
    orientation = _orientation(img)  # after load: a PNG's EXIF may follow its pixels
    if orientation in _TRANSPOSE:
        _check_memory(img, decode_memory(img, rotated=True), max_decode_bytes)
    rgb = _to_rgb_releasing(img)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    return rgb, width, height


def _to_rgb_releasing(img: Image.Image) -> Image.Image:
    """:func:`to_rgb`, closing ``img`` (freeing its pixels) as soon as it is not needed:
    before a high-bit-depth image's grey is copied to RGB, and before any transpose."""
    if img.mode in HIGH_BIT_MODES:
        grey = _high_bit_depth_to_grey(img)
        img.close()
        return grey.convert("RGB")
    rgb = to_rgb(img)
    if rgb is not img:
        img.close()
    return rgb


def _check_memory(img: Image.Image, need: int, limit: int) -> None:
    if need > limit:
        raise ImageLoadError(
            f"too large to decode: {img.size[0]}x{img.size[1]} {img.format} in mode "
            f"{img.mode} needs about {need / 2**20:,.0f} MiB of memory "
            f"(limit {limit / 2**20:,.0f} MiB)"
        )


def _open_image(data: bytes) -> Image.Image:
    """Open (lazily: the header only) ``data`` as one of :func:`decodable_formats`.

    Raises:
        ImageLoadError: not an image, a format Replica does not decode, a corrupt header,
            or over Pillow's decompression-bomb limit.
    """
    # Decoders fed untrusted bytes raise more than OSError (struct.error, IndexError,
    # TypeError, EOFError, ...); any of them means the file cannot be decoded.
    try:
        return Image.open(io.BytesIO(data), formats=decodable_formats())
    except UnidentifiedImageError as exc:
        raise ImageLoadError(unreadable_reason(data[:HEAD_BYTES])) from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"too large: refused as a decompression bomb ({exc})") from exc
    except Exception as exc:
        raise ImageLoadError(f"corrupt image header ({exc})") from exc


def _load_pixels(img: Image.Image) -> None:
    try:
        img.seek(0)  # animated: first frame
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"too large: refused as a decompression bomb ({exc})") from exc
    except Exception as exc:
        raise ImageLoadError(f"truncated or corrupt image data ({exc})") from exc


def decode_memory(
    img: Image.Image, *, stored_size: tuple[int, int] | None = None, rotated: bool = False
) -> int:
    """Bytes that decoding ``img`` (opened, not yet loaded) and converting it to RGB hold
    at their peak, estimated from its header without decoding a pixel.

    The largest of three phases, each counted over width x height pixels:

    * decoding: the decoded image (1 byte per pixel for modes "1", "L" and "P", 2 for
      16-bit, 4 for every other mode, RGB included) and the decoder's buffers: a TIFF's
      strip or tile, a progressive JPEG's coefficients (2 bytes per sample of
      ``stored_size``, the size before a draft), and the planes WebP, AVIF and JPEG 2000
      decoders keep as long as the image (:data:`_DECODER_BYTES`);
    * converting: the decoded image and the 4-byte RGB result, with an RGBA copy between
      them for transparency; a high-bit-depth image is scaled to 1-byte grey, and freed
      before the grey becomes RGB;
    * when ``rotated`` by its EXIF orientation: the RGB result and its transposed copy.

    Each image also holds 8 bytes per row. Measured peaks stay within this estimate
    (``benchmarks/untrusted_inputs.py``).

    Example:
        >>> round(decode_memory(Image.open("scan_16bit.png")) / 2**20)  # 8000 x 9900, I;16
        378
    """
    width, height = img.size
    pixels = width * height
    native = pixels * _NATIVE_BYTES.get(img.mode, 4) + 8 * height
    held = pixels * _DECODER_BYTES.get(img.format or "", 0)
    rgb = pixels * 4 + 8 * height
    decoding = native + held + _decoder_buffer(img, stored_size or img.size)
    if img.mode in HIGH_BIT_MODES:
        grey = pixels + 8 * height
        bands = 24 * min(pixels, _BAND_PIXELS)  # one band's copies and temporaries
        converting = held + max(native + grey + bands, grey + rgb)
    elif img.mode == "RGB" and img.info.get("transparency") is None:
        converting = 0  # used as it is
    else:
        rgba = rgb if img.mode != "RGBA" and _needs_rgba(img) else 0
        converting = native + held + rgba + rgb
    rotating = 2 * rgb + held if rotated else 0
    return max(decoding, converting, rotating)


def _decoder_buffer(img: Image.Image, stored_size: tuple[int, int]) -> int:
    """Bytes a decoder allocates beside the image that do not scale with a fixed factor:
    libtiff's buffer of one strip or tile, libjpeg's coefficients of a progressive JPEG."""
    if img.format == "JPEG" and img.info.get("progressive"):
        return 2 * len(img.getbands()) * stored_size[0] * stored_size[1]
    if img.format != "TIFF":
        return 0
    tags = getattr(img, "tag_v2", {})
    bits = tags.get(258, 8)
    bits = sum(bits) if isinstance(bits, tuple) else int(bits)
    samples = 1 if isinstance(tags.get(258), tuple) else int(tags.get(277, 1))
    width, height = img.size
    if 322 in tags and 323 in tags:
        block_width, rows = int(tags[322]), int(tags[323])
    else:
        block_width, rows = width, min(int(tags.get(278, height)), height)
    return (block_width * bits * samples + 7) // 8 * rows


def _needs_rgba(img: Image.Image) -> bool:
    """Whether :func:`to_rgb` goes through an RGBA copy (transparency, palette alpha)."""
    if img.mode in ("PA", "LA", "La", "RGBa"):
        return True
    palette_alpha = img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA"
    has_transparency = img.info.get("transparency") is not None
    return palette_alpha or (has_transparency and img.mode in ("P", "RGB", "L", "1"))


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or unreadable.

    The swap of width and height is read from this tag, not guessed from the sizes: a
    JPEG draft can turn a 1000x999 image into a square one.
    """
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:
        log.debug("ignoring unreadable EXIF: %s", exc)
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white.

    An RGB image without transparency is returned as is; otherwise the result is a new
    image, and ``img`` is left unchanged.

    Raises:
        ImageLoadError: the mode cannot be converted to RGB.
    """
    mode = img.mode
    if mode == "RGB" and img.info.get("transparency") is None:
        return img
    try:
        if mode in HIGH_BIT_MODES:
            return _high_bit_depth_to_grey(img).convert("RGB")
        if _needs_rgba(img) or mode in ("RGBA", "RGBa"):
            rgba = img if mode == "RGBA" else img.convert("RGBA")  # transparent colour, palette
            out = Image.new("RGB", rgba.size, _WHITE)
            out.paste(rgba, mask=rgba)  # the alpha band as the mask: no copy of it
            return out
        return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"unsupported colour mode {mode} ({exc})") from exc


def _high_bit_depth_to_grey(img: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit single-channel image (:data:`HIGH_BIT_MODES`) as 8-bit grey "L".

    16-bit values are divided by 257; 32-bit ones are taken as they are when they lie in
    0..255 (0..1 for float), divided by 257 in 0..65535, else stretched from their finite
    minimum to maximum. NaN becomes 0. Works in float32 bands of about ``2**20`` pixels,
    so it holds the 1-byte result and one band beside the image, never a float copy of it.

    Raises:
        ImageLoadError: the pixels cannot be read as numbers.
    """
    try:
        offset, scale = _grey_mapping(img)
        return _scaled_grey(img, offset, scale)
    except (OSError, ValueError, TypeError) as exc:
        raise ImageLoadError(f"unsupported colour mode {img.mode} ({exc})") from exc


def _scaled_grey(img: Image.Image, offset: float, scale: float) -> Image.Image:
    """``(value - offset) * scale``, NaN as 0, clipped and rounded to 0..255, as "L"."""
    grey = Image.new("L", img.size)
    for top, band in _bands(img):
        scaled = (band.astype(np.float32) - np.float32(offset)) * np.float32(scale)
        if img.mode == "F":
            np.nan_to_num(scaled, copy=False)
        np.clip(scaled, 0, 255, out=scaled)
        grey.paste(Image.fromarray(np.rint(scaled).astype(np.uint8)), (0, top))
    return grey


def _grey_mapping(img: Image.Image) -> tuple[float, float]:
    """(offset, scale) such that ``(value - offset) * scale`` is the 8-bit grey level."""
    if img.mode.startswith("I;16"):
        return 0.0, 1 / 257
    lo, hi = _finite_range(img)
    if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        return 0.0, 255.0
    if lo >= 0.0 and hi <= 255.0:
        return 0.0, 1.0
    if lo >= 0.0 and hi <= 65535.0:
        return 0.0, 1 / 257
    return lo, 255.0 / max(hi - lo, 1e-12)


def _finite_range(img: Image.Image) -> tuple[float, float]:
    """Smallest and largest finite value of a 32-bit image; (0, 1) when there is none."""
    lo, hi = np.inf, -np.inf
    for _, band in _bands(img):
        finite = band[np.isfinite(band)] if img.mode == "F" else band
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 1.0)


def _bands(img: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(top row, (rows, width) array) for horizontal bands of ``img`` of about
    :data:`_BAND_PIXELS` pixels, each a copy of its rows only."""
    width, height = img.size
    rows = max(1, _BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        yield top, np.asarray(img.crop((0, top, width, min(top + rows, height))))


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
    """The image files under ``folder``, sorted, decided by content
    (:func:`lib.image_files.list_folder`, which also says why every other file is left out).

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file.
    """
    from lib.image_files import list_folder

    return list_folder(folder, recursive=recursive).images


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand a mix of files and folders into a list of files, keeping order.

    Folders contribute their image files (sorted, :func:`list_image_files`); files are kept
    as given, even when they are not images, so that the loader can say why.
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
