"""Tests for lib.images: every mode converts to RGB, bad files are refused with a reason."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

import lib.images as images_module
from lib.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageLoadError,
    LoadedImage,
    SkippedFile,
    decodable_formats,
    decode_memory,
    expand_inputs,
    list_image_files,
    load_image,
    read_bytes,
    read_caption,
    to_rgb,
    unreadable_reason,
)
from tests.hostile import (
    LOAD_SETUP,
    TALL_FLOAT_SIZE,
    WIDE_16_BIT_SIZE,
    measure_in_child,
    zero_float_tiff,
    zero_png16,
)

WriteImage = Callable[..., Path]  # the write_image fixture in conftest.py

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _pixels(loaded: LoadedImage) -> np.ndarray:
    """(h, w, 3) uint8 view of a loaded image, after checking it is RGB."""
    assert loaded.image.mode == "RGB"
    return np.asarray(loaded.image)


def _close(actual: object, expected: tuple[int, ...], tol: int = 3) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, int) - np.asarray(expected, int)) <= tol))


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def _reason(source: object, **kwargs: object) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _blank_bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit greyscale PNG, built row by row without a Pillow image."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 1000) for _ in range(height // 1000))
    idat += packer.compress(row * (height % 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --- orientation and draft -------------------------------------------------------------


def _oriented_jpeg(path: Path, size: tuple[int, int], orientation: int) -> Path:
    """Blue JPEG with a red block in the stored top-left corner and an EXIF orientation."""
    img = Image.new("RGB", size, BLUE)
    img.paste(RED, (0, 0, size[0] // 3, size[1] // 2))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(img, path, quality=95, exif=exif)


def test_exif_orientation_6_rotates_pixels_and_swaps_size(tmp_path: Path) -> None:
    loaded = load_image(_oriented_jpeg(tmp_path / "o.jpg", (60, 40), 6))
    assert loaded.image.size == (40, 60)
    assert (loaded.width, loaded.height) == (40, 60)
    px = _pixels(loaded)
    # Orientation 6 = turn 90 degrees clockwise: the stored top-left goes top-right.
    assert _close(px[5, 35], RED, tol=30)
    assert _close(px[5, 5], BLUE, tol=30)
    assert _close(px[55, 35], BLUE, tol=30)


def test_exif_orientation_1_keeps_size(tmp_path: Path) -> None:
    loaded = load_image(_oriented_jpeg(tmp_path / "o.jpg", (60, 40), 1))
    assert loaded.image.size == (60, 40) == (loaded.width, loaded.height)
    assert _close(_pixels(loaded)[5, 5], RED, tol=30)


def test_orientation_swap_detected_when_draft_makes_image_square(tmp_path: Path) -> None:
    # 1000x999 drafts to 125x125: the swap must not be guessed from aspect ratios.
    path = _oriented_jpeg(tmp_path / "near_square.jpg", (1000, 999), 6)
    loaded = load_image(path, draft_short_side=100)
    assert loaded.image.size == (125, 125)
    assert (loaded.width, loaded.height) == (999, 1000)


def test_draft_short_side_decodes_smaller_but_reports_original_size(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (2000, 1500), GREEN), tmp_path / "big.jpg", quality=90)
    loaded = load_image(path, draft_short_side=300)
    w, h = loaded.image.size
    assert w < 2000 and h < 1500
    assert min(w, h) >= 300
    assert (loaded.width, loaded.height) == (2000, 1500)
    assert _close(_pixels(loaded)[h // 2, w // 2], GREEN, tol=10)
    full = load_image(path)
    assert full.image.size == (2000, 1500)


def test_draft_ignored_for_png(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (400, 300), GREEN), tmp_path / "big.png")
    assert load_image(path, draft_short_side=50).image.size == (400, 300)


# --- colour modes ----------------------------------------------------------------------


def _palette_image() -> Image.Image:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([*RED, *GREEN])
    img.putpixel((1, 1), 1)
    return img


def test_palette_png_without_transparency(tmp_path: Path) -> None:
    px = _pixels(load_image(_save(_palette_image(), tmp_path / "p.png")))
    assert tuple(px[0, 0]) == RED
    assert tuple(px[1, 1]) == GREEN


def test_palette_png_transparent_index_becomes_white(tmp_path: Path) -> None:
    path = _save(_palette_image(), tmp_path / "pt.png", transparency=0)
    assert Image.open(path).mode == "P"
    px = _pixels(load_image(path))
    assert tuple(px[0, 0]) == WHITE
    assert tuple(px[1, 1]) == GREEN


def test_rgba_half_transparent_red_on_white_is_pink(write_image: WriteImage) -> None:
    path = write_image("rgba.png", mode="RGBA", colour=(255, 0, 0, 128))
    assert _close(_pixels(load_image(path))[0, 0], (255, 128, 128), tol=2)


def test_rgb_png_with_transparent_colour_becomes_white(tmp_path: Path) -> None:
    img = Image.new("RGB", (2, 1), BLUE)
    img.putpixel((1, 0), GREEN)
    px = _pixels(load_image(_save(img, tmp_path / "trns.png", transparency=BLUE)))
    assert tuple(px[0, 0]) == WHITE
    assert tuple(px[0, 1]) == GREEN


def test_greyscale_png_with_transparent_value_becomes_white(tmp_path: Path) -> None:
    img = Image.new("L", (2, 1), 0)
    img.putpixel((1, 0), 60)
    px = _pixels(load_image(_save(img, tmp_path / "ltrns.png", transparency=0)))
    assert tuple(px[0, 0]) == WHITE
    assert tuple(px[0, 1]) == (60, 60, 60)


def test_la_alpha_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("LA", (2, 1), (0, 0))  # black, fully transparent
    img.putpixel((1, 0), (0, 255))  # black, opaque
    px = _pixels(load_image(_save(img, tmp_path / "la.png")))
    assert tuple(px[0, 0]) == WHITE
    assert tuple(px[0, 1]) == (0, 0, 0)


def test_cmyk_jpeg(write_image: WriteImage) -> None:
    path = write_image("cmyk.jpg", mode="CMYK", size=(16, 16), colour=(0, 255, 255, 0))
    assert Image.open(path).mode == "CMYK"
    assert _close(_pixels(load_image(path))[8, 8], RED, tol=8)


def test_16_bit_greyscale_png_scaled_to_8_bit(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[65535, 32768, 0]], dtype=np.uint16))
    path = _save(img, tmp_path / "g16.png")
    assert Image.open(path).mode == "I;16"
    assert _pixels(load_image(path))[0, :, 0].tolist() == [255, 128, 0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 100, 255]], dtype=np.int32), [0, 100, 255]),  # already 8-bit range
        (np.array([[0, 32768, 65535]], dtype=np.int32), [0, 128, 255]),  # 16-bit range
        (np.array([[-100, 0, 100]], dtype=np.int32), [0, 128, 255]),  # min-max stretched
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),  # unit float
        (np.array([[np.nan, 0.0, 1.0]], dtype=np.float32), [0, 0, 255]),  # NaN -> 0
    ],
)
def test_32_bit_int_and_float_tiff(tmp_path: Path, values: np.ndarray, expected: list[int]) -> None:
    img = Image.fromarray(values)
    path = _save(img, tmp_path / "hi.tiff")
    assert Image.open(path).mode == ("F" if values.dtype.kind == "f" else "I")
    px = _pixels(load_image(path))
    assert np.abs(px[0, :, 0].astype(int) - expected).max() <= 1  # rounding of x.5
    assert np.array_equal(px[..., 0], px[..., 2])  # grey


def test_bilevel_png(tmp_path: Path) -> None:
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    px = _pixels(load_image(_save(img, tmp_path / "bw.png")))
    assert px[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_greyscale_l(write_image: WriteImage) -> None:
    path = write_image("l.png", mode="L", colour=77)
    assert tuple(_pixels(load_image(path))[3, 3]) == (77, 77, 77)


def test_animated_gif_returns_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    loaded = load_image(path)
    assert tuple(_pixels(loaded)[4, 4]) == RED
    assert loaded.image.size == (8, 8)


def test_webp_lossless_and_with_alpha(write_image: WriteImage) -> None:
    opaque = write_image("a.webp", colour=GREEN, lossless=True)
    assert tuple(_pixels(load_image(opaque))[2, 2]) == GREEN
    alpha = write_image("b.webp", mode="RGBA", colour=(255, 0, 0, 128), lossless=True)
    assert _close(_pixels(load_image(alpha))[2, 2], (255, 128, 128), tol=3)


def test_rgb_image_returned_unchanged(write_image: WriteImage) -> None:
    loaded = load_image(write_image("rgb.png", colour=BLUE))
    assert tuple(_pixels(loaded)[0, 0]) == BLUE


def test_to_rgb_on_in_memory_images() -> None:
    assert to_rgb(Image.new("RGBA", (1, 1), (0, 0, 255, 0))).getpixel((0, 0)) == WHITE
    assert to_rgb(Image.new("PA", (1, 1), (0, 0))).getpixel((0, 0)) == WHITE
    assert to_rgb(Image.new("YCbCr", (1, 1), (76, 85, 255))).mode == "RGB"
    rgb = Image.new("RGB", (1, 1), RED)
    assert to_rgb(rgb) is rgb


# --- broken and unsupported inputs -----------------------------------------------------


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _save(_noise((128, 128)), tmp_path / "full.jpg", quality=95).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _reason(path)


def test_truncated_png(tmp_path: Path) -> None:
    data = _save(_noise((128, 128)), tmp_path / "full.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _reason(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    assert "empty" in _reason(path)


def test_text_file_renamed_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    assert "not an image" in _reason(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "not an image" in _reason(path)


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _reason(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="not found"):
        read_bytes(tmp_path / "nope.png")


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert "regular file" in _reason(folder)


def test_error_message_names_the_source(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)


def test_upload_bytes_good(write_image: WriteImage) -> None:
    data = write_image("up.png", colour=GREEN).read_bytes()
    loaded = load_image(data)
    assert loaded.source == "<upload>"
    assert tuple(_pixels(loaded)[0, 0]) == GREEN
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert load_image(bytearray(data), name="mine.png").source == "mine.png"


def test_upload_bytes_bad() -> None:
    assert "not an image" in _reason(b"GIF89a but not really")
    assert "empty" in _reason(b"")
    with pytest.raises(ImageLoadError) as info:
        load_image(b"junk", name="photo.jpg")
    assert info.value.source == "photo.jpg"


def test_invalid_arguments(write_image: WriteImage) -> None:
    path = write_image("ok.png")
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(path, max_pixels=0)
    with pytest.raises(ValueError, match="draft_short_side"):
        load_image(path, draft_short_side=-1)
    assert load_image(path, draft_short_side=0).image.size == (8, 8)


# --- pixel limits ----------------------------------------------------------------------


@pytest.fixture
def load_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every ImageFile.load() (a full decode) made while the test runs."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        calls.append(str(self.format))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def test_huge_header_refused_without_decoding(tmp_path: Path, load_calls: list[str]) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_blank_bilevel_png(20_000, 20_000))  # 400 MP, about 50 kB on disk
    assert path.stat().st_size < 1_000_000
    assert "too large" in _reason(path, max_pixels=10_000_000)
    assert "too large" in _reason(path)  # Pillow's own bomb limit, default max_pixels
    assert load_calls == []


def test_over_default_limit_refused_without_decoding(tmp_path: Path, load_calls: list[str]) -> None:
    path = tmp_path / "wide.png"
    path.write_bytes(_blank_bilevel_png(9_000, 9_000))  # 81 MP: over 80 MP, under Pillow's
    assert DEFAULT_MAX_PIXELS < 9_000 * 9_000
    reason = _reason(path)
    assert "too large" in reason and "9000x9000" in reason
    assert "too large" in _reason(path.read_bytes(), max_pixels=1_000_000)
    assert load_calls == []


def test_small_max_pixels_refuses_normal_image(write_image: WriteImage) -> None:
    path = write_image("n.png", size=(64, 64))
    assert "too large" in _reason(path, max_pixels=1000)
    assert load_image(path, max_pixels=64 * 64).image.size == (64, 64)


def test_max_pixels_governs_not_pillow_warning_threshold(
    write_image: WriteImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warned = write_image("warned.png", size=(40, 40))  # 1600 px: Pillow only warns
    with pytest.warns(Image.DecompressionBombWarning):
        assert load_image(warned).image.size == (40, 40)
    bomb = write_image("bomb.png", size=(50, 50))  # 2500 px > 2 x limit: Pillow refuses
    assert "too large" in _reason(bomb)


# --- hashing, listing, captions --------------------------------------------------------


def test_sha256_matches_file_bytes(write_image: WriteImage) -> None:
    path = write_image("h.jpg", colour=BLUE)
    loaded = load_image(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.source == str(path)


@pytest.fixture
def image_tree(write_image: WriteImage, tmp_path: Path) -> Path:
    """A folder of real images mixed with hidden files, other suffixes and sub-folders."""
    for name in (
        "b.png",
        "a.jpeg",
        "sub/c.JPG",
        "sub/deeper/d.webp",
        ".hidden.png",
        ".cache/e.png",
        "sub/.git/f.png",
    ):
        write_image(f"tree/{name}")
    (tmp_path / "tree" / "notes.txt").write_text("not an image")
    (tmp_path / "tree" / "sub" / "model.ckpt").write_bytes(b"\0")
    (tmp_path / "tree" / "dir.png").mkdir()  # a folder with an image suffix
    return tmp_path / "tree"


def test_list_image_files_sorted_recursive_and_filtered(image_tree: Path) -> None:
    found = list_image_files(image_tree)
    assert [p.relative_to(image_tree).as_posix() for p in found] == [
        "a.jpeg",
        "b.png",
        "sub/c.JPG",
        "sub/deeper/d.webp",
    ]
    assert found == sorted(found)
    assert all(p.suffix.lower() in IMAGE_SUFFIXES for p in found)


def test_list_image_files_not_recursive(image_tree: Path) -> None:
    found = list_image_files(image_tree, recursive=False)
    assert [p.name for p in found] == ["a.jpeg", "b.png"]


def test_list_image_files_hidden_root_is_allowed(write_image: WriteImage, tmp_path: Path) -> None:
    write_image(".dataset/x.png")
    assert [p.name for p in list_image_files(tmp_path / ".dataset")] == ["x.png"]


def test_list_image_files_errors_and_empty(tmp_path: Path, write_image: WriteImage) -> None:
    with pytest.raises(FileNotFoundError):
        list_image_files(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        list_image_files(write_image("file.png"))
    (tmp_path / "empty").mkdir()
    assert list_image_files(tmp_path / "empty") == []


def test_expand_inputs_mixes_files_and_folders(image_tree: Path, tmp_path: Path) -> None:
    notes = image_tree / "notes.txt"
    missing = tmp_path / "missing.png"
    out = expand_inputs([notes, str(image_tree / "sub"), missing])
    assert out == [
        notes,
        image_tree / "sub" / "c.JPG",
        image_tree / "sub" / "deeper" / "d.webp",
        missing,
    ]
    assert "not an image" in _reason(out[0])
    assert "not found" in _reason(out[-1])


def test_read_caption_first_non_empty_line(write_image: WriteImage) -> None:
    image = write_image("cap/cat.png")
    assert read_caption(image) == ""
    image.with_suffix(".txt").write_text("\n   \n  a cat on a mat  \nsecond line\n")
    assert read_caption(image) == "a cat on a mat"
    image.with_suffix(".txt").write_text("\n\n")
    assert read_caption(image) == ""


def test_read_caption_strips_byte_order_mark(write_image: WriteImage) -> None:
    image = write_image("cap/dog.jpg")
    image.with_suffix(".txt").write_bytes("\ufeffa dog\n".encode())
    assert read_caption(image) == "a dog"


def test_skipped_file_to_dict() -> None:
    assert SkippedFile("x.png", "empty").to_dict() == {"path": "x.png", "reason": "empty"}


def test_unexpected_decoder_exception_becomes_image_load_error(
    write_image: WriteImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_image("odd.png")

    def broken_load(self: ImageFile.ImageFile) -> None:
        raise IndexError("decoder bug")

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    assert "corrupt" in _reason(path)


# --- memory bounds on hostile headers ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "make", "kwargs"),
    [
        ("wide16.png", lambda: zero_png16(*WIDE_16_BIT_SIZE), {}),
        ("tall_float.tif", lambda: zero_float_tiff(*TALL_FLOAT_SIZE), {}),
        ("tall_float_strips.tif", lambda: zero_float_tiff(*TALL_FLOAT_SIZE, 8192), {}),
        # allowed past the estimate, the conversion itself still stays bounded
        (
            "tall_float_strips.tif",
            lambda: zero_float_tiff(*TALL_FLOAT_SIZE, 8192),
            {"max_decode_bytes": 2**30},
        ),
    ],
)
def test_tiny_files_with_huge_headers_load_in_bounded_memory(
    tmp_path: Path, name: str, make: Callable[[], bytes], kwargs: dict[str, int]
) -> None:
    path = tmp_path / name
    path.write_bytes(make())
    assert path.stat().st_size < 300_000  # a few hundred KB promising 160 to 250 MB of pixels
    width, height = Image.open(path).size
    assert width * height <= DEFAULT_MAX_PIXELS  # under the pixel limit: only memory stops it
    result = measure_in_child(f"load({str(path)!r}, **{kwargs!r})", LOAD_SETUP)
    outcome = str(result["outcome"])
    assert outcome == f"loaded RGB {width}x{height}" or outcome.startswith(
        "refused: too large to decode"
    ), outcome
    assert float(result["peak_mb"]) < 600, result  # the float64 copies took 2.6 to 2.8 GB


def test_decode_memory_is_judged_from_the_header(tmp_path: Path, load_calls: list[str]) -> None:
    path = tmp_path / "wide16.png"
    path.write_bytes(zero_png16(2000, 1000))  # 2 MP of 16-bit grey
    need = decode_memory(Image.open(path))
    assert 2e6 * (2 + 1) < need < 2e6 * (2 + 1) + 30e6  # pixels, grey and one band's work
    reason = _reason(path, max_decode_bytes=need - 1)
    assert reason.startswith("too large to decode: 2000x1000 PNG in mode I;16 needs about")
    assert f"(limit {(need - 1) / 2**20:,.0f} MiB)" in reason
    assert load_calls == []  # refused before any pixel was decoded
    with pytest.raises(ValueError, match="max_decode_bytes"):
        load_image(path, max_decode_bytes=0)


def test_decode_memory_counts_decoder_buffers_and_conversions(tmp_path: Path) -> None:
    size = (100, 50)
    rgb = Image.open(_save(Image.new("RGB", size), tmp_path / "rgb.png"))
    rgba = Image.open(_save(Image.new("RGBA", size), tmp_path / "rgba.png"))
    la = Image.open(_save(Image.new("LA", size), tmp_path / "la.png"))
    webp = Image.open(_save(Image.new("RGB", size), tmp_path / "x.webp"))
    rows = 8 * 50
    assert decode_memory(rgb) == 4 * 5000 + rows  # used as it is
    assert decode_memory(rgb, rotated=True) == 2 * (4 * 5000 + rows)
    assert decode_memory(rgba) == 2 * (4 * 5000 + rows)  # RGBA, then RGB
    assert decode_memory(la) == 3 * (4 * 5000 + rows)  # LA, an RGBA copy, then RGB
    assert decode_memory(webp) == 4 * 5000 + rows + 13 * 5000  # libwebp's own buffers
    width, height = 8, 2_000_000  # libtiff decodes a strip into a buffer of its own
    one_strip = Image.open(io.BytesIO(zero_float_tiff(width, height)))
    strips = Image.open(io.BytesIO(zero_float_tiff(width, height, rows_per_strip=8192)))
    float_image = 4 * width * height + 8 * height
    assert decode_memory(one_strip) == float_image + 4 * width * height
    assert decode_memory(strips) < decode_memory(one_strip)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    mode=st.sampled_from(["I;16", "I", "F"]),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1.0, 255.0, 65535.0, 1e6]),
    nans=st.booleans(),
)
def test_banded_high_bit_depth_conversion_matches_float64_reference(
    mode: str, shape: tuple[int, int], seed: int, scale: float, nans: bool
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.uniform(-0.2 if mode != "I;16" else 0, 1, shape) * scale
    if mode == "I;16":
        array = np.clip(values, 0, 65535).astype(np.uint16)
    elif mode == "I":
        array = values.astype(np.int32)
    else:
        array = values.astype(np.float32)
        if nans:
            array.flat[rng.integers(0, array.size)] = np.nan
    img = Image.fromarray(array)
    assert img.mode == mode
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images_module, "_BAND_PIXELS", 7)  # many bands, some of one row
        grey = np.asarray(to_rgb(img))[..., 0].astype(int)
    expected = _float64_reference(array, mode).astype(int)
    assert np.abs(grey - expected).max() <= 1  # float32 against float64 at x.5 only
    assert (grey == expected).mean() > 0.9


def _float64_reference(arr: np.ndarray, mode: str) -> np.ndarray:
    """The earlier whole-image float64 conversion, kept as the reference."""
    x = arr.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = x / 257.0
    else:
        finite = x[np.isfinite(x)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = x * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = x
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = x / 257.0
        else:
            scaled = (x - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


# --- formats: what is decoded, and why the rest is not -----------------------------------


def test_every_suffix_pillow_registers_for_a_decodable_format_is_an_image_suffix() -> None:
    formats = set(decodable_formats())
    assert {"PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"} <= formats
    assert "EPS" not in formats
    registered = {s for s, f in Image.registered_extensions().items() if f in formats}
    assert registered <= IMAGE_SUFFIXES, registered - IMAGE_SUFFIXES
    assert {".jpe", ".avif", ".jfif"} <= IMAGE_SUFFIXES


def test_postscript_is_never_handed_to_ghostscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import EpsImagePlugin

    calls: list[object] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    path = tmp_path / "drawing.eps"
    path.write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
        b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
    )
    assert "Ghostscript" in _reason(path)
    assert calls == []


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC/HEIF: no decoder installed"),
        (b"\0\0\0\x1cftypmif1\0\0\0\0mif1miaf", "HEIC/HEIF: no decoder installed"),
        (b"\0\0\0\x18ftypisom\0\0\0\0isomiso2", "not an image (a video"),
        (b'<?xml version="1.0"?>\n<!-- made by hand -->\n<svg width="1"/>', "SVG: vector"),
        (b"%PDF-1.7\n", "PDF: not an image"),
        (b"\xff\x0a\xfa\x7f", "JPEG XL"),
    ],
)
def test_unreadable_files_say_what_they_are(head: bytes, expected: str) -> None:
    assert unreadable_reason(head).startswith(expected)
    assert _reason(head + b"\0" * 64).startswith(expected)
