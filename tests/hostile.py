"""Crafted hostile inputs, built in a few MB of memory: images whose header promises far
more pixels than their file size suggests, zip bombs, a zip whose header lies, a child
process that reports its own peak memory. Shared by the tests and
``benchmarks/untrusted_inputs.py``."""

from __future__ import annotations

import bz2
import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

TALL_FLOAT_SIZE = (8, 7_733_256)
"""The reviewer's float TIFF: 61.9 MP (under the 80 MP limit), 247 MB decoded."""
WIDE_16_BIT_SIZE = (8000, 9900)
"""The reviewer's 16-bit PNG: 79.2 MP, 158 MB decoded, 154 KB on disk."""
MiB = 1024 * 1024


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zero_png16(width: int, height: int) -> bytes:
    """A valid all-black 16-bit greyscale PNG (mode "I;16"), compressed row by row."""
    row = b"\x00" * (1 + 2 * width)  # filter byte + samples
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def zero_float_tiff(width: int, height: int, rows_per_strip: int | None = None) -> bytes:
    """A valid all-zero 32-bit float TIFF (mode "F"), deflate-compressed strips of
    ``rows_per_strip`` rows (default: one strip, which libtiff decodes into one buffer)."""
    rps = min(rows_per_strip or height, height)
    row = b"\x00" * (4 * width)
    step = max(1, MiB // len(row))
    strips = []
    for top in range(0, height, rps):
        n = min(rps, height - top)
        packer = zlib.compressobj(9)
        parts = [packer.compress(row * min(step, n - y)) for y in range(0, n, step)]
        strips.append(b"".join(parts) + packer.flush())
    n_strips, n_entries = len(strips), 10
    offsets_at = 8 + 2 + 12 * n_entries + 4
    counts_at = offsets_at + 4 * n_strips
    data_at = counts_at + 4 * n_strips
    offsets = [data_at + sum(len(s) for s in strips[:i]) for i in range(n_strips)]

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    one = n_strips == 1
    ifd = struct.pack("<H", n_entries) + b"".join(
        [
            entry(256, 4, 1, width),
            entry(257, 4, 1, height),
            entry(258, 3, 1, 32),  # bits per sample
            entry(259, 3, 1, 8),  # deflate
            entry(262, 3, 1, 1),  # black is zero
            entry(273, 4, n_strips, offsets[0] if one else offsets_at),
            entry(277, 3, 1, 1),  # samples per pixel
            entry(278, 4, 1, rps),
            entry(279, 4, n_strips, len(strips[0]) if one else counts_at),
            entry(339, 3, 1, 3),  # sample format: IEEE float
        ]
    )
    return (
        b"II*\x00"
        + struct.pack("<I", 8)
        + ifd
        + b"\x00\x00\x00\x00"
        + struct.pack(f"<{n_strips}I", *offsets)
        + struct.pack(f"<{n_strips}I", *(len(s) for s in strips))
        + b"".join(strips)
    )


def padded_png_zip(n_entries: int, entry_bytes: int = MiB) -> bytes:
    """The reviewer's zip bomb: ``n_entries`` 1x1 PNGs zero-padded to ``entry_bytes`` each
    (exactly 1 MiB: not over the per-entry ratio check's 1 MiB), deflated."""
    buffer = io.BytesIO()
    tiny = zero_png16(1, 1)
    entry = tiny + bytes(entry_bytes - len(tiny))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(n_entries):
            archive.writestr(f"img_{i:04d}.png", entry)
    return buffer.getvalue()


def lying_bzip2_zip(real_bytes: int, declared_bytes: int = 1024) -> bytes:
    """A zip with one bzip2 entry of ``real_bytes`` zeros whose headers declare
    ``declared_bytes``: Python's zipfile decompresses a bzip2 read whole, before it
    truncates to the declared size."""
    packer = bz2.BZ2Compressor(9)
    chunk = bytes(MiB)
    stream = b"".join(packer.compress(chunk) for _ in range(real_bytes // MiB)) + packer.flush()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bomb.png")
        info.compress_type = zipfile.ZIP_STORED  # written raw, then marked as bzip2 below
        archive.writestr(info, stream)
    data = bytearray(buffer.getvalue())
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    for at in (local + 8, central + 10):  # compression method
        data[at : at + 2] = struct.pack("<H", zipfile.ZIP_BZIP2)
    for at in (local + 22, central + 24):  # uncompressed size
        data[at : at + 4] = struct.pack("<I", declared_bytes)
    return bytes(data)


PEAK_SCRIPT = """
import json, sys, time
sys.path.insert(0, {repo!r})

def peak_mb():
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

{setup}
before = peak_mb()
start = time.perf_counter()
outcome = {call}
print(json.dumps({{"outcome": outcome, "seconds": time.perf_counter() - start,
                   "base_mb": before, "peak_mb": peak_mb()}}))
"""


def measure_in_child(call: str, setup: str = "", timeout: float = 300) -> dict[str, object]:
    """Run ``call`` (an expression) in a fresh Python after ``setup`` (statements) and
    return {"outcome", "seconds", "base_mb", "peak_mb"}: the peak resident memory
    (VmHWM) of that process alone, which a fresh process measures truly: getrusage's
    ru_maxrss keeps the high-water mark of the process that forked it."""
    script = PEAK_SCRIPT.format(repo=str(REPO), setup=setup, call=call)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


LOAD_SETUP = """
from lib.images import ImageLoadError, load_image

def load(path, **kwargs):
    try:
        image = load_image(path, **kwargs).image
    except ImageLoadError as exc:
        return "refused: " + exc.reason
    return f"loaded {image.mode} {image.size[0]}x{image.size[1]}"
"""
"""Setup for :func:`measure_in_child`: ``load(path, **kwargs)`` returns "loaded MODE WxH"
or "refused: REASON"."""


def json_paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and list positions) into a JSON value, for fuzzers that mutate
    one place of a valid file (the manifest and report readers' tests)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += json_paths(v, (*prefix, i))
    return out
